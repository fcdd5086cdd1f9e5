"""bf16 guard: how far `search.precision=bf16` (or bf16_weights) moves the search from float32.

Two measurements on a short real search (digits by default, nb201 supernet):

1. α-gradient cosine: along the float32 search's own trajectory, before each architecture
   step, the α-gradient is computed on the same weights and batches in float32 and in the
   precision under test (`Searcher.arch_grads`, the path a search takes); their cosine is
   recorded, then the float32 step is taken (so the two never diverge).
2. derived cells: whole searches in fp32 and in that precision for each seed; the derived
   cells are compared.

    PYTHONPATH=src python benchmarks/bf16_guard.py --steps 20 --seeds 0 1 2 --epochs 2
    # under a quality protocol (its data, space and epochs; the flags above are ignored):
    PYTHONPATH=src python benchmarks/bf16_guard.py --precision bf16_weights \
        --protocol protocols/nb201_cpu --set data.root=DIR/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffnas.config import load_config
from diffnas.precision import Precision
from diffnas.search import Searcher


def configs(args: argparse.Namespace) -> list[str]:
    return [args.method, *([args.protocol] if args.protocol else [])]


def config(args: argparse.Namespace, seed: int, precision: str) -> list[str]:
    common = [
        f"search.precision={precision}",
        f"seed={seed}",
        "log.progress=false",
        "log.lookup=false",
        f"threads={args.threads}",
    ]
    if args.protocol:
        return [*common, *args.set]
    return [
        f"space.name={args.space}",
        f"space.channels={args.channels}",
        f"space.layers={args.layers}",
        f"data.dataset={args.dataset}",
        f"data.subset={args.subset}",
        f"data.batch_size={args.batch_size}",
        f"search.epochs={args.epochs}",
        f"search.updater={args.updater}",
        f"search.precision={precision}",
        f"seed={seed}",
        "log.progress=false",
        "log.lookup=false",
        f"threads={args.threads}",
        *args.set,
    ]


def alpha_cosines(args: argparse.Namespace) -> list[float]:
    s = Searcher(load_config(configs(args), config(args, 0, "fp32")))
    batches = (b for epoch in range(10**6) for b in s.data.train.epoch(epoch))
    out: list[float] = []
    for _, train in zip(range(args.steps), batches):
        val = s.val_stream.next()
        grads = {}
        for name in (args.precision, "fp32"):  # fp32 last: its gradient is the step's
            s.precision = Precision(name, "guard")
            s.a_opt.zero_grad(set_to_none=True)
            s.arch_grads(train, val)
            grads[name] = torch.cat([p.grad.flatten() for p in s.arch_parameters()])
        out.append(float(torch.nn.functional.cosine_similarity(*grads.values(), dim=0)))
        s.a_opt.step()
        s.relaxation.after_arch_step(s.arch)
        s.weight_step(train)  # fp32
    return out


def derived(args: argparse.Namespace, seed: int, precision: str) -> tuple[list[str], list[float]]:
    """The derived cell's ops (edge by edge, nb201) and each edge's top-2 probability gap."""
    s = Searcher(load_config(configs(args), config(args, seed, precision)))
    cells = s.run_search().genotype.cells
    ops = [e.op for c in cells for e in c.edges]
    gaps = []
    for w in s.relaxation.derivation_weights(s.arch).values():
        top = w.float().topk(2, dim=-1).values
        gaps += (top[:, 0] - top[:, 1]).tolist()
    return ops, gaps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="darts")
    p.add_argument("--space", default="nb201")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--subset", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--updater", default="first_order")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="extra config override")
    p.add_argument("--precision", default="bf16", choices=["bf16", "bf16_weights"])
    p.add_argument("--protocol", help="a quality protocol config, e.g. protocols/nb201_cpu")
    args = p.parse_args()
    cos = alpha_cosines(args)
    print(
        f"α-gradient cosine {args.precision} vs fp32 over {len(cos)} steps: mean {statistics.mean(cos):.5f}, "
        f"min {min(cos):.5f}, max {max(cos):.5f}"
    )
    for seed in args.seeds:
        t0 = time.perf_counter()
        a, gaps = derived(args, seed, "fp32")
        t1 = time.perf_counter()
        b, _ = derived(args, seed, args.precision)
        t2 = time.perf_counter()
        print(f"seed {seed}: search fp32 {t1 - t0:.0f} s, {args.precision} {t2 - t1:.0f} s")
        print(f"seed {seed}: derived cells {'equal' if a == b else 'DIFFER'}")
        for i, (x, y) in enumerate(zip(a, b)):
            gap = f", fp32 top-2 probability gap {gaps[i]:.4f}" if len(gaps) == len(a) else ""
            if x != y:
                print(f"  edge {i}: fp32 {x}, {args.precision} {y}{gap}")
        if len(gaps) == len(a):
            same = [g for g, x, y in zip(gaps, a, b) if x == y]
            print(f"  gaps on the edges that agree: min {min(same, default=float('nan')):.4f}")


if __name__ == "__main__":
    main()
