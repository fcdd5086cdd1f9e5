"""Shared helper of the step-time benchmarks: time full search steps of several configs.

A search step = one architecture step (on a validation batch) + one weight step, as the
`alternate` schedule takes them. Variants are timed in turns (round robin), so a change in
the machine's load hits them all alike; ratios are the point, not absolute times.
"""

from __future__ import annotations

import statistics
import time

import torch

from diffnas.config import load_config
from diffnas.search import Searcher


def time_steps(
    variants: dict[str, list[str]],
    base: list[str],
    steps: int,
    rounds: int,
    presets: list[str] | None = None,
) -> dict[str, float]:
    """Median seconds per search step of each variant (config overrides on top of `base`)."""
    searchers = {
        name: Searcher(load_config(presets or ["darts"], base + extra))
        for name, extra in variants.items()
    }
    batches = {}
    for name, s in searchers.items():
        it = s.data.train.epoch(0)
        batches[name] = [(next(it), s.val_stream.next()) for _ in range(steps)]
        s.arch_step(*batches[name][0])  # warm-up (allocations, first-call overheads)
        s.weight_step(batches[name][0][0])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, s in searchers.items():
            start = time.perf_counter()
            for train, val in batches[name]:
                s.arch_step(train, val)
                s.weight_step(train)
            if s.device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}
