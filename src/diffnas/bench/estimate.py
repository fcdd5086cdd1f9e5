"""Before a search: expected peak memory and time per epoch, measured by a short probe.

Two probes, the first never building what it warns about:

1. The scaled probe (`scaled_estimate`) builds the supernet at a few small channel counts
   (at most three multiples of 4·partial_channels) on a few images at a resolution of at
   most 32, takes one search step at two tiny batch sizes for each, and extrapolates
   analytically: parameters are a quadratic in the channel count C (every conv weight is
   C_in·C_out), the tensors kept for backward are linear in C, in the batch size and in the
   pixel count, and the dataset's bytes grow with the pixel count. It needs memory of the
   order of the smallest supernet, whatever the configured size.
2. When the scaled estimate fits, the full probe builds the run (data, supernet, optimizers)
   and takes a few search steps (an architecture step and a weight step each) on slices of
   one batch at two small batch sizes. Per step it records the time and the bytes of every
   tensor autograd keeps for the backward pass (the activations, which dominate a
   supernet's memory). Both grow linearly with the batch size, so two probe sizes give the
   line, extrapolated to the configured batch.

Expected peak resident memory = what the process holds with the run built + weight
gradients and optimizer state + the activations times `BACKWARD_FACTOR` (the backward pass
holds activation gradients next to the activations; calibrated against the peaks
`diffnas bench speed` measured). `search()` runs the scaled probe before a run that is
larger than the built-in digits search (`needs_preflight`) and refuses one that would not fit.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from diffnas.config import Config, validate
from diffnas.errors import ConfigError, ResourceError
from diffnas.loop import StepTimer
from diffnas.utils import rss_mb, set_threads

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
    # from the scaled probe (small channel counts, extrapolated): no time measured
    scaled: bool = False

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
        timing = (
            "time per step not measured: the scaled probe (small channel counts, "
            "extrapolated) found that the run would not fit, so it was not built"
            if self.scaled
            else f"expected time per step {self.step_s:.2f} s, per epoch {_duration(self.epoch_s)}"
        )
        lines = [
            f"batch size {self.batch_size}, {self.steps_per_epoch} steps per epoch "
            f"(an architecture step with every weight step), device {self.device}",
            timing,
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


class _SavedBytes:
    """Bytes of the distinct storages autograd saves for backward while active, less the
    search's parameters (weights and α), whether saved as themselves or as views (the
    hand-written kernels save views of weights: see supernet.kernels._leaf_edge)."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.storages: dict[int, int] = {}
        self.weights = {p.untyped_storage().data_ptr() for p in params}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in self.weights:
            self.storages[s.data_ptr()] = s.nbytes()
        return t

    @property
    def mb(self) -> float:
        return sum(self.storages.values()) / 2**20


def _probe_step(s: Any, batch: tuple[torch.Tensor, torch.Tensor], val: Any) -> tuple[float, float]:
    """(seconds, MB kept for backward) of one search step on `batch`."""
    saved = _SavedBytes([*s.model.parameters(), *s.arch_parameters()])
    peak = 0.0
    timer = StepTimer(s.device, sync=True)
    for step in ("arch", "weight"):
        saved.storages.clear()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            if step == "arch":
                s.arch_step(batch, val)
            else:
                s.weight_step(batch)
        peak = max(peak, saved.mb)
    return timer.lap(), peak


# the built-in digits search (C=16, 8 cells, batch 64, 8x8 images) needs under 1 GB: runs
# up to this size skip the preflight probe (C x cells x batch x pixels)
PREFLIGHT_SIZE = 16 * 8 * 64 * 8 * 8
NATIVE_SIZE = {"digits": 8, "cifar10": 32, "cifar100": 32, "synthetic": 32}
PROBE_RESOLUTION = 32  # the scaled probe's largest image side
PROBE_BATCH = 2  # >= 2: BatchNorm needs two values per channel in training


def _cells(config: Config) -> int:
    from diffnas.spaces import get_space

    space = get_space(config.space)
    if config.space.name == "nb201":
        return 3 * space.layers + 2
    return len(config.space.cells) if config.space.cells else space.layers


def needs_preflight(config: Config) -> bool:
    """Whether the run is larger than the built-in digits search (which fits anywhere)."""
    side = config.data.resolution or NATIVE_SIZE.get(config.data.dataset)
    if side is None:  # e.g. an ImageFolder: its image size is unknown before loading it
        return True
    size = config.space.channels * _cells(config) * config.data.batch_size * side * side
    return size > PREFLIGHT_SIZE


def probe_channels(config: Config) -> list[int]:
    """The scaled probe's channel counts: the run's own when it is that small already."""
    c, k = config.space.channels, config.supernet.partial_channels
    unit = math.lcm(k, 4)
    return [c] if c <= 2 * unit else [unit, 2 * unit]


def parameter_mb(config: Config, in_channels: int, num_classes: int, input_size: int) -> float:
    """MB of the configured supernet's weights and α, counted on the meta device (no
    memory is allocated, whatever the size)."""
    from diffnas.spaces import get_space

    space = get_space(config.space)
    with torch.device("meta"):
        model = space.build_supernet(config.supernet, in_channels, num_classes, input_size)
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(4 * math.prod(spec.shape) for spec in model.arch_specs.values())
    return n / 2**20


def scaled_estimate(config: Config) -> Estimate:
    """Expected peak memory of the configured search from supernets of small channel counts
    on a few small images, extrapolated (see the module docstring). Allocates nothing of the
    configured size and loads the dataset at its own resolution only."""
    from diffnas.data.datasets import Dataset, ImageSet, load_dataset
    from diffnas.data.transforms import resize
    from diffnas.search import Searcher

    validate(config)
    d = config.data
    raw = load_dataset(d.dataset, d.root, d.cache_dir)
    if not isinstance(raw, Dataset):
        raise NotImageData(
            f"the memory estimate probes image datasets; '{d.dataset}' is a user dataset "
            f"({type(raw).__name__}), so there is no estimate for it: run the search directly"
        )
    native = raw.input_size
    side = d.resolution or native
    res = min(side, PROBE_RESOLUTION)
    pixels = (side / res) ** 2  # kept tensors grow with the pixel count

    def few(images: ImageSet, n: int) -> ImageSet:
        return ImageSet(resize(images.images[:n], res), images.labels[:n])

    probe_data = Dataset(
        raw.name, raw.label, few(raw.train, 16), few(raw.test, 4), raw.classes,
        crop_padding=min(raw.crop_padding, res // 8), flip=raw.flip,
    )  # fmt: skip
    # the run holds the dataset at its resolution, and copies of the search split
    scale = (side / native) ** 2
    data_bytes = raw.train.images.numel() + raw.test.images.numel()
    data_mb = (data_bytes * (scale - 1) + raw.train.images.numel() * d.subset * scale) / 2**20
    n_train = len(raw.train)
    param_mb = parameter_mb(config, raw.in_channels, raw.num_classes, side)
    process_mb = rss_mb()  # with the dataset at its native resolution
    del raw

    # kept tensors per sample (the batch-independent part included: an upper bound), which
    # are linear in the channel count: measured at one or two small counts
    channels = probe_channels(config)
    per_sample: list[float] = []
    device = torch.device("cpu")
    portion = 0.5
    for c in channels:
        cfg = copy.deepcopy(config)
        cfg.space.channels = c
        cfg.data.subset, cfg.data.resolution, cfg.data.train_portion = 1.0, None, 0.5
        cfg.data.batch_size = PROBE_BATCH
        cfg.data.augment.crop_padding = None
        s = Searcher(cfg, dataset=probe_data)
        device = s.device
        portion = config.data.train_portion or s.schedule.train_portion
        train = next(iter(s.data.train.epoch(0)))
        torch.manual_seed(config.seed)
        _, kept = _probe_step(s, train, s.val_stream.next())
        per_sample.append(kept / PROBE_BATCH)
        del s
    c, b = config.space.channels, d.batch_size
    if len(channels) == 1:
        sample_mb = per_sample[0]
    else:
        (c0, c1), (y0, y1) = channels, per_sample
        sample_mb = y0 + max((y1 - y0) / (c1 - c0), 0.0) * (c - c0)
    sample_mb *= pixels
    activation = sample_mb * b
    if device.type == "cuda":
        base = 3 * param_mb  # weights, their gradients and momentum buffers
    else:  # + the process with its data
        base = process_mb + max(data_mb, 0.0) + 3 * param_mb
    perm = max(2, round(d.subset * n_train))
    steps = round(portion * perm) // b
    return Estimate(
        batch_size=b,
        steps_per_epoch=steps,
        step_s=math.nan,
        epoch_s=math.nan,
        base_mb=base,
        activation_mb=activation,
        per_sample_mb=sample_mb,
        peak_mb=base + BACKWARD_FACTOR * activation,
        available_mb=available_mb(device),
        device=device.type,
        scaled=True,
    )


class NotImageData(ConfigError):
    """The dataset is a user's (diffnas.data.user), not images the probe can scale."""


def preflight(config: Config) -> None:
    """Refuse a run whose expected peak memory exceeds what is available (scaled probe).
    A user dataset (any tensors, registered by a plugin) is not probed: its shapes are
    the user's, and so is the size of the run."""
    if needs_preflight(config):
        try:
            est = scaled_estimate(config)
        except NotImageData:
            return
        est.check()


def estimate(config: Config, probe_sizes: tuple[int, int] = (8, 16), repeats: int = 2) -> Estimate:
    """Probe the configured search (no run directory is written) and extrapolate.

    The scaled probe comes first: a run that would not fit is never built; one that fits is
    built and probed for its time per step and a measured memory estimate.
    """
    from diffnas.search import Searcher

    validate(config)
    scaled = scaled_estimate(config)
    if not scaled.fits:
        return scaled
    s = Searcher(config)
    built = rss_mb()  # before the probe: what it allocates and frees is not the run's
    param_mb = sum(p.numel() * p.element_size() for p in s.model.parameters()) / 2**20
    batch_size = config.data.batch_size
    train = next(iter(s.data.train.epoch(0)))
    val = s.val_stream.next()
    sizes = sorted({min(b, batch_size, len(train[1])) for b in probe_sizes})
    # threads: null on the CPU: the run keeps 1 thread where its steps are faster so
    # (loop.ThreadProbe), so both counts are timed and the faster taken
    counts = [s.threads]
    if s.auto_threads and s.device.type == "cpu" and s.threads > 1:
        counts.append(1)
    times: dict[int, dict[int, float]] = {n: {} for n in counts}
    acts: dict[int, float] = {}
    for n in counts:
        set_threads(n)
        for b in sizes:
            tb = (train[0][:b], train[1][:b])
            vb = (val[0][:b], val[1][:b])
            _probe_step(s, tb, vb)  # warm-up, allocates gradients and optimizer state
            runs = [_probe_step(s, tb, vb) for _ in range(repeats)]
            times[n][b] = min(t for t, _ in runs)
            acts[b] = max(acts.get(b, 0.0), *(a for _, a in runs))
    set_threads(s.threads)
    t_at = min(_line(t, batch_size) for t in times.values())
    act_at = _line(acts, batch_size)
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
