"""Before a search: expected peak memory and time per epoch, measured by a short probe.

The probe builds the run (data, supernet, optimizers) and takes a few search steps (an
architecture step and a weight step each) on slices of one batch at two small batch
sizes. Per step it records the time and the bytes of every tensor autograd keeps for
the backward pass (the activations, which dominate a supernet's memory). Both grow
linearly with the batch size, so two probe sizes give the line, extrapolated to the
configured batch. Expected peak resident memory = what the process holds with the run
built + weight gradients and optimizer state + the activations times
`BACKWARD_FACTOR` (the backward pass holds activation gradients next to the
activations; calibrated against the peaks `diffnas bench speed` measured).
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass
from typing import Any

import torch

from diffnas.config import Config
from diffnas.errors import ResourceError

# peak - (process with the run built) = 1.60 x activations for nb201 and 1.25 x for darts
# (C=16, batch 64, measured by `diffnas bench speed`; the backward's transient gradient
# buffers and recomputed outputs come on top of what is kept): the larger, rounded up
BACKWARD_FACTOR = 1.7
HEADROOM = 0.9  # use at most this share of the available memory


@dataclass
class Estimate:
    batch_size: int
    steps_per_epoch: int
    step_s: float
    epoch_s: float
    base_mb: float  # process with the run built, weight gradients and optimizer state
    activation_mb: float  # kept for backward at the configured batch size
    per_sample_mb: float
    peak_mb: float
    available_mb: float
    device: str

    @property
    def fits(self) -> bool:
        return self.peak_mb <= HEADROOM * self.available_mb

    def largest_batch(self) -> int:
        """The largest batch size whose expected peak fits (0: none does)."""
        room = HEADROOM * self.available_mb - self.base_mb
        per = BACKWARD_FACTOR * self.per_sample_mb
        return max(0, math.floor(room / per)) if per > 0 else self.batch_size

    def suggested_batch(self) -> int:
        """A batch size that fits, rounded down to a multiple of 8 when that is possible."""
        b = min(self.largest_batch(), self.batch_size)
        return b - b % 8 if b >= 8 else b

    def report(self) -> str:
        where = "GPU memory" if self.device == "cuda" else "memory"
        lines = [
            f"batch size {self.batch_size}, {self.steps_per_epoch} steps per epoch "
            f"(an architecture step with every weight step), device {self.device}",
            f"expected time per step {self.step_s:.2f} s, per epoch {_duration(self.epoch_s)}",
            f"expected peak {where} {self.peak_mb:,.0f} MB = run, weights, gradients and "
            f"optimizer state {self.base_mb:,.0f} MB + activations "
            f"{self.activation_mb:,.0f} MB x {BACKWARD_FACTOR} (backward)",
            f"available {where}: {self.available_mb:,.0f} MB; "
            + (
                "fits"
                if self.fits
                else f"does NOT fit: the largest batch size that would is {self.largest_batch()}"
            ),
        ]
        return "\n".join(lines)

    def check(self) -> None:
        if self.fits:
            return
        b = self.suggested_batch()
        fix = (
            f"set data.batch_size={b} (--set data.batch_size={b}; expected peak "
            f"{self.base_mb + BACKWARD_FACTOR * self.per_sample_mb * b:,.0f} MB)"
            if b >= 1
            else "even batch size 1 does not fit: lower space.channels or space.layers, or "
            "use supernet.partial_channels"
        )
        raise ResourceError(
            f"the search needs about {self.peak_mb:,.0f} MB at batch size {self.batch_size} "
            f"but {self.available_mb:,.0f} MB are available; {fix}"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def available_mb(device: torch.device) -> float:
    """Memory this process may still use: MemAvailable, capped by a cgroup limit."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    avail = math.inf
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) / 1024
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
            if text.isdigit() and int(text) < 2**60:
                with open(path.replace("max", "current").replace("limit_in", "usage_in")) as f:
                    used = int(f.read().strip())
                avail = min(avail, (int(text) - used) / 2**20 + rss_mb())
        except (OSError, ValueError):
            continue
    if math.isinf(avail):
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    return avail


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _SavedBytes:
    """Bytes of the distinct storages autograd saves for backward while active."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            s = t.untyped_storage()
            self.storages[s.data_ptr()] = s.nbytes()
        return t

    @property
    def mb(self) -> float:
        return sum(self.storages.values()) / 2**20


def _probe_step(s: Any, batch: tuple[torch.Tensor, torch.Tensor], val: Any) -> tuple[float, float]:
    """(seconds, MB kept for backward) of one search step on `batch`."""
    saved = _SavedBytes()
    peak = 0.0
    start = time.perf_counter()
    for step in ("arch", "weight"):
        saved.storages.clear()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            if step == "arch":
                s.arch_step(batch, val)
            else:
                s.weight_step(batch)
        peak = max(peak, saved.mb)
    if s.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, peak


def estimate(config: Config, probe_sizes: tuple[int, int] = (8, 16), repeats: int = 2) -> Estimate:
    """Probe the configured search (no run directory is written) and extrapolate."""
    from diffnas.search import Searcher

    s = Searcher(config)
    built = rss_mb()  # before the probe: what it allocates and frees is not the run's
    param_mb = sum(p.numel() * p.element_size() for p in s.model.parameters()) / 2**20
    batch_size = config.data.batch_size
    train = next(iter(s.data.train.epoch(0)))
    val = s.val_stream.next()
    sizes = sorted({min(b, batch_size, len(train[1])) for b in probe_sizes})
    times: dict[int, float] = {}
    acts: dict[int, float] = {}
    for b in sizes:
        tb = (train[0][:b], train[1][:b])
        vb = (val[0][:b], val[1][:b])
        _probe_step(s, tb, vb)  # warm-up, allocates gradients and optimizer state
        runs = [_probe_step(s, tb, vb) for _ in range(repeats)]
        times[b] = min(t for t, _ in runs)
        acts[b] = max(a for _, a in runs)
    t_at, act_at = _line(times, batch_size), _line(acts, batch_size)
    # + weight gradients and momentum buffers
    base = (built if s.device.type == "cpu" else _device_base_mb(s)) + 2 * param_mb
    per_sample = max(act_at - _line(acts, 0), 0.0) / batch_size if batch_size else 0.0
    activation = max(act_at, 0.0)
    steps = s.steps_per_epoch
    return Estimate(
        batch_size=batch_size,
        steps_per_epoch=steps,
        step_s=t_at,
        epoch_s=t_at * steps,
        base_mb=base + BACKWARD_FACTOR * (activation - per_sample * batch_size),
        activation_mb=activation,
        per_sample_mb=per_sample,
        peak_mb=base + BACKWARD_FACTOR * activation,
        available_mb=available_mb(s.device) + (base if s.device.type == "cuda" else 0.0),
        device=s.device.type,
    )


def _device_base_mb(s: Any) -> float:
    return float(torch.cuda.memory_allocated(s.device)) / 2**20


def _line(points: dict[int, float], at: int) -> float:
    """The straight line through the (batch size, value) points, evaluated at `at`."""
    xs = sorted(points)
    if len(xs) == 1:
        return points[xs[0]] * at / xs[0]
    (x0, x1), (y0, y1) = (xs[0], xs[-1]), (points[xs[0]], points[xs[-1]])
    slope = max((y1 - y0) / (x1 - x0), 0.0)
    return y0 + slope * (at - x0)
