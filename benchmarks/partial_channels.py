"""PC-DARTS: search-step time and mixed-op FLOPs with 1/K of the channels through the mixed op.

Times full search steps (architecture + weight step) of the same supernet with
supernet.partial_channels = 1 (DARTS) and K (PC-DARTS), in turns, and counts the FLOPs of
one supernet forward pass with torch's FlopCounterMode; reports ratios from this run.

    PYTHONPATH=src python benchmarks/partial_channels.py --space nb201 --k 4 --threads 1
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from _search_steps import time_steps
from diffnas.config import load_config
from diffnas.search import Searcher


def forward_flops(overrides: list[str]) -> int:
    s = Searcher(load_config(["darts"], overrides))
    x, _ = next(s.data.train.epoch(0))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        s.model(x, s.relaxation.mix(s.arch))
    return int(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nb201", choices=["nb201", "darts"])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, help="nb201: cells per stage; darts: cells")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    base = [
        f"space.name={a.space}",
        f"space.channels={a.channels}",
        "data.dataset=synthetic",
        f"data.batch_size={a.batch_size}",
        f"threads={a.threads}",
        f"device={a.device}",
        "log.progress=false",
    ]
    if a.layers is not None:
        base.append(f"space.layers={a.layers}")
    variants = {
        "K=1 (DARTS)": ["supernet.partial_channels=1"],
        f"K={a.k} (PC-DARTS)": [f"supernet.partial_channels={a.k}"],
    }
    flops = {name: forward_flops(base + extra) for name, extra in variants.items()}
    t = time_steps(variants, base, a.steps, a.rounds)
    full, part = list(variants)
    print(
        f"{a.space} supernet C={a.channels}, batch {a.batch_size}, {a.threads} thread(s), {a.device}"
    )
    for name in variants:
        print(
            f"  {name:16s} {t[name]:7.3f} s per search step, {flops[name] / 1e9:7.3f} GFLOP per forward"
        )
    print(
        f"  PC-DARTS step time = {t[part] / t[full]:.2f} x DARTS; whole-supernet forward FLOPs = "
        f"{flops[part] / flops[full]:.2f} x (the mixed ops' convolutions cost 1/K² = {1 / a.k**2:.3f})"
    )


if __name__ == "__main__":
    main()
