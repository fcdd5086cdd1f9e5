"""Compute saved by CRB pruning: time of a supernet weight step with pruned ops vs none pruned.

Prunes a random share of the (edge, op) pairs through the `crb` relaxation's mask (as
`after_arch_step` does when α reaches 0) and times forward + backward of the supernet,
interleaving the configurations in each round (the machine is noisy); reports ratios
against the unpruned supernet measured in the same run, next to the share of the
supernet's op multiply-adds that pruning removes.

    PYTHONPATH=src python benchmarks/crb_pruning.py --space nb201 --channels 16 --layers 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from diffnas.config import SpaceConfig, SupernetConfig
from diffnas.relaxations.crb import ClampedReLU
from diffnas.spaces import get_space
from diffnas.supernet.base import Architecture


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="nb201", choices=["nb201", "darts"])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--fractions", default="0.25,0.5,0.75", help="shares of (edge, op) pruned")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    space = get_space(
        SpaceConfig(
            name=args.space, channels=args.channels, layers=args.layers, exclude_ops=["none"]
        )
    )
    model = space.build_supernet(SupernetConfig(node_bn=True), 3, 10, args.size)
    crb = ClampedReLU()
    arch = Architecture(model.arch_specs, crb.init_alpha)
    macs = model.cost_tables("macs")
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))

    fractions = [0.0] + [float(f) for f in args.fractions.split(",")]
    masks = {}
    for frac in fractions:  # exactly round(frac · n) pairs of each α pruned, seeded
        masks[frac] = {}
        for k, a in arch.alpha.items():
            order = torch.randperm(a.numel(), generator=torch.Generator().manual_seed(1))
            alive = torch.ones(a.numel(), dtype=torch.bool)
            alive[order[: round(frac * a.numel())]] = False
            masks[frac][k] = alive.view(a.shape)

    def step(frac: float) -> float:
        crb.alive = {k: m.clone() for k, m in masks[frac].items()}
        crb.prune(arch)
        mix = crb.mix(arch)
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = F.cross_entropy(model(x, mix), y)
        loss.backward()
        return time.perf_counter() - start

    with torch.no_grad():
        base_alpha = {k: a.clone() for k, a in arch.alpha.items()}
    times: dict[float, list[float]] = {f: [] for f in fractions}
    for f in fractions:  # warm-up
        step(f)
    for _ in range(args.rounds):
        for f in fractions:
            with torch.no_grad():
                for k, a in arch.alpha.items():
                    a.copy_(base_alpha[k])
            times[f].append(step(f))

    base = statistics.median(times[0.0])
    print(
        f"{args.space} supernet C={args.channels} layers={args.layers}, batch {args.batch}, "
        f"{args.size}x{args.size}, {args.threads} thread(s), median of {args.rounds} rounds"
    )
    print("pruned (edge,op)  pruned op MACs  step time / unpruned")
    total_macs = sum(float(t.sum()) for t in macs.values())
    for f in fractions:
        pruned = sum(int((~m).sum()) for m in masks[f].values())
        n = sum(m.numel() for m in masks[f].values())
        cut = sum(float(macs[k][~m].sum()) for k, m in masks[f].items()) / total_macs
        ratio = statistics.median(times[f]) / base
        print(f"{pruned:4d}/{n:<4d} ({pruned / n:4.0%})   {cut:6.1%}          {ratio:.3f}")


if __name__ == "__main__":
    main()
