"""Latency prediction: time random architectures of a space, fit a small MLP on them.

`collect` measures the discrete networks of random genotypes on this machine (median of
repeated runs); `fit` trains an MLP from the architecture encoding (per-edge op weights,
one-hot for a sampled architecture) to latency and reports its error on held-out
architectures; the `latency` regularizer evaluates the saved predictor on the relaxed
architecture during a search.
"""

from __future__ import annotations

import itertools
import json
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffnas.config import to_dict
from diffnas.errors import ConfigError, DatasetError, GenotypeError
from diffnas.loop import StepTimer
from diffnas.spaces.base import Space
from diffnas.spaces.genotype import Genotype
from diffnas.supernet.base import ArchSpec
from diffnas.utils import atomic_torch_save, atomic_write_json

DATASET_FORMAT = "diffnas-latency-dataset"
PREDICTOR_FORMAT = "diffnas-latency-predictor"
VERSION = 1
STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}

# key -> {"edges": [[src, dst], ...], "ops": [op, ...]}: what the encoding's entries mean
Layout = dict[str, dict[str, list[Any]]]


# --------------------------------------------------------------------------- encoding
def layout_of(specs: dict[str, ArchSpec]) -> Layout:
    """The architecture layout (α keys, their edges and ops) in encoding order."""
    return {k: {"edges": [list(e) for e in s.edges], "ops": list(s.ops)} for k, s in specs.items()}


def encoding_size(layout: Layout) -> int:
    return sum(len(v["edges"]) * len(v["ops"]) for v in layout.values())


def check_layout(expected: Layout, found: Layout, what: str) -> None:
    """Raise ConfigError when an encoding made for `expected` cannot describe `found`."""
    if list(expected) != list(found):
        raise ConfigError(
            f"{what} was made for architecture keys {list(expected)}, this search has "
            f"{list(found)}; collect and fit a predictor with the search's space settings "
            f"(diffnas latency collect --space ... --set space.cells=...)"
        )
    for key, exp in expected.items():
        got = found[key]
        if exp["ops"] != got["ops"] or exp["edges"] != got["edges"]:
            raise ConfigError(
                f"{what} was made for ops {exp['ops']} on {len(exp['edges'])} edges of '{key}', "
                f"this search has ops {got['ops']} on {len(got['edges'])} edges; collect and fit "
                f"a predictor with the same space settings (e.g. --set space.exclude_ops=[...])"
            )


def flatten(weights: dict[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    """Per-key [E, O] op weights -> one encoding vector, keys in layout order."""
    return torch.cat([weights[k].reshape(-1) for k in keys])


def encode_genotype(space: Space, genotype: Genotype) -> dict[str, torch.Tensor]:
    """One-hot per-edge op weights of a genotype, per α key of `space`.

    An edge the genotype leaves out (darts: all but 2 inputs per node) is encoded as the
    `none` op when the space has one, else as a row of zeros.
    """
    specs = space.arch_specs()
    space.validate(genotype)
    if len(genotype.cells) != len(specs):
        raise GenotypeError(
            f"genotype has {len(genotype.cells)} cells, the {space.name} space as configured "
            f"searches {len(specs)} ({', '.join(specs)})"
        )
    out = {}
    for (key, spec), cell in zip(specs.items(), genotype.cells):
        if cell.type != spec.cell_type or cell.stage != spec.stage:
            raise GenotypeError(
                f"genotype cell ({cell.type}, stage {cell.stage}) does not match the space's "
                f"'{key}' ({spec.cell_type}, stage {spec.stage})"
            )
        enc = torch.zeros(spec.shape)
        rows = {e: i for i, e in enumerate(spec.edges)}
        for e in cell.edges:
            if (e.src, e.dst) not in rows or e.op not in spec.ops:
                raise GenotypeError(
                    f"genotype edge {e.op} {e.src}->{e.dst} is not in the searched space "
                    f"(ops {', '.join(spec.ops)})"
                )
            enc[rows[(e.src, e.dst)], spec.ops.index(e.op)] = 1.0
        if "none" in spec.ops:
            empty = enc.sum(dim=1) == 0
            enc[empty, spec.ops.index("none")] = 1.0
        out[key] = enc
    return out


def random_genotype(space: Space, generator: torch.Generator) -> Genotype:
    """A random architecture: uniform random op weights through the space's own derivation.

    nb201: a uniform op per edge; darts: 2 random inputs per node, random non-`none` ops.
    """
    weights = {k: torch.rand(s.shape, generator=generator) for k, s in space.arch_specs().items()}
    return space.derive(weights)


# --------------------------------------------------------------------------- measuring
def time_forward(net: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> list[float]:
    """Wall-clock milliseconds of `repeats` forward passes after `warmup` untimed ones."""
    times = []
    timer = StepTimer(x.device, sync=True)
    with torch.inference_mode():
        for i in range(warmup + repeats):
            timer.restart()
            net(x)
            seconds = timer.lap()
            if i >= warmup:
                times.append(1000.0 * seconds)
    return times


@dataclass
class LatencyRecord:
    genotype: dict[str, Any]
    encoding: list[float]
    latency_ms: float  # the dataset's statistic (median by default) of runs_ms
    runs_ms: list[float]


@dataclass
class LatencyDataset:
    """Measured architectures of one space on one machine, with how they were measured."""

    meta: dict[str, Any]
    records: list[LatencyRecord] = field(default_factory=list)

    @property
    def layout(self) -> Layout:
        return self.meta["layout"]

    def save(self, path: str | Path) -> None:
        data = {
            "format": DATASET_FORMAT,
            "version": VERSION,
            "meta": self.meta,
            "records": [asdict(r) for r in self.records],
        }
        atomic_write_json(Path(path), data)

    @classmethod
    def load(cls, path: str | Path) -> LatencyDataset:
        path = Path(path)
        if not path.exists():
            raise DatasetError(
                f"latency dataset '{path}' does not exist; make one with `diffnas latency collect`"
            )
        try:
            data = json.loads(path.read_text())
            if data.get("format") != DATASET_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {DATASET_FORMAT!r}")
            records = [LatencyRecord(**r) for r in data["records"]]
            meta = dict(data["meta"])
            size = encoding_size(meta["layout"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DatasetError(
                f"'{path}' is not a latency dataset written by `diffnas latency collect` ({exc})"
            ) from None
        for i, r in enumerate(records):
            if len(r.encoding) != size or not r.latency_ms > 0:
                raise DatasetError(
                    f"latency dataset '{path}': record {i} has an encoding of {len(r.encoding)} "
                    f"values (expected {size}) or a latency of {r.latency_ms} ms"
                )
        return cls(meta, records)


def collect(
    space: Space,
    n: int,
    *,
    channels: int | None = None,
    layers: int | None = None,
    resolution: int = 32,
    batch_size: int = 1,
    in_channels: int = 3,
    num_classes: int = 10,
    repeats: int = 10,
    warmup: int = 3,
    seed: int = 0,
    statistic: str = "median",
    device: torch.device | str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
) -> LatencyDataset:
    """Measure the latency of `n` distinct random architectures of `space`.

    Each is built as the space's discrete network (`build_network`, eval mode) and timed
    on a fixed random batch: the median (or `statistic` min, steadier on a machine shared
    with other jobs) of `repeats` forward passes after `warmup` untimed ones.
    """
    if statistic not in STATISTICS:
        raise ConfigError(
            f"latency collect: statistic must be one of {', '.join(STATISTICS)}, got '{statistic}'"
        )
    if n < 1 or repeats < 1 or warmup < 0 or batch_size < 1 or resolution < 1:
        raise ConfigError(
            f"latency collect: need n >= 1, repeats >= 1, warmup >= 0, batch size >= 1 and "
            f"resolution >= 1; got n={n}, repeats={repeats}, warmup={warmup}, "
            f"batch size={batch_size}, resolution={resolution}"
        )
    device = torch.device(device)
    specs = space.arch_specs()
    layout = layout_of(specs)
    gen = torch.Generator().manual_seed(seed)
    genotypes: dict[str, Genotype] = {}
    attempts = 0
    while len(genotypes) < n and attempts < 100 * n:
        g = random_genotype(space, gen)
        genotypes.setdefault(json.dumps(g.to_json(), sort_keys=True), g)
        attempts += 1
    x = torch.randn(batch_size, in_channels, resolution, resolution, generator=gen).to(device)
    records = []
    for i, g in enumerate(genotypes.values()):
        net = space.build_network(
            g, num_classes=num_classes, in_channels=in_channels, channels=channels, layers=layers
        )
        net = net.to(device).eval()
        runs = time_forward(net, x, repeats, warmup)
        enc = flatten(encode_genotype(space, g), list(specs))
        records.append(
            LatencyRecord(
                g.to_json(), enc.tolist(), STATISTICS[statistic](runs), [round(t, 4) for t in runs]
            )
        )
        if on_progress is not None:
            on_progress(i + 1, len(genotypes))
    meta = {
        "space": to_dict(space.cfg),
        "layout": layout,
        "network": {"channels": channels, "layers": layers, "num_classes": num_classes},
        "input": [batch_size, in_channels, resolution, resolution],
        "repeats": repeats,
        "statistic": statistic,
        "warmup": warmup,
        "seed": seed,
        "device": _describe(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    return LatencyDataset(meta, records)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}"


# --------------------------------------------------------------------------- predictor
class LatencyPredictor(nn.Module):
    """MLP: architecture encoding -> latency in milliseconds (differentiable in the input)."""

    y_scale: torch.Tensor

    def __init__(
        self,
        layout: Layout,
        hidden: Sequence[int] = (64, 64),
        y_scale: float = 1.0,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.hidden = list(hidden)
        self.info = dict(info or {})
        dims = [encoding_size(layout), *self.hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], 1))
        self.mlp = nn.Sequential(*layers)
        # latency = y_scale · exp(mlp output): positive, and the MLP fits log-latency
        # (squared error in log space ~ relative error) on targets of order 1
        self.register_buffer("y_scale", torch.tensor(float(y_scale)))

    def forward(self, encoding: torch.Tensor) -> torch.Tensor:
        """[..., D] encodings -> [...] predicted milliseconds."""
        return torch.exp(self.mlp(encoding).squeeze(-1)) * self.y_scale

    def predict(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predicted latency (ms) of per-key [E, O] op weights, e.g. a relaxation's."""
        return self(flatten(weights, list(self.layout)))

    def save(self, path: str | Path) -> None:
        atomic_torch_save(
            {
                "format": PREDICTOR_FORMAT,
                "version": VERSION,
                "layout": self.layout,
                "hidden": self.hidden,
                "info": self.info,
                "state_dict": self.state_dict(),
            },
            Path(path),
        )

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        path = Path(path)
        if not path.exists():
            raise ConfigError(
                f"latency predictor '{path}' does not exist; make one with `diffnas latency "
                f"collect` then `diffnas latency fit`"
            )
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data.get("format") != PREDICTOR_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {PREDICTOR_FORMAT!r}")
            model = cls(data["layout"], data["hidden"], 1.0, data.get("info"))
            model.load_state_dict(data["state_dict"])
        except Exception as exc:  # torch raises several types for truncated/corrupt files
            raise ConfigError(
                f"'{path}' is not a latency predictor written by `diffnas latency fit` "
                f"({type(exc).__name__}: {exc})"
            ) from None
        return model


@dataclass
class FitReport:
    n_train: int
    n_test: int
    mlp_rel_error: float  # mean |pred − y| / y on the held-out architectures
    mean_rel_error: float  # the same for predicting the training mean
    mlp_train_rel_error: float

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def fit(
    dataset: LatencyDataset,
    *,
    holdout: float = 0.2,
    hidden: Sequence[int] = (64, 64),
    steps: int = 1000,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> tuple[LatencyPredictor, FitReport]:
    """Train the MLP on a random (1 − holdout) share; report relative errors on the rest."""
    n = len(dataset.records)
    n_test = max(1, round(holdout * n))
    if not 0.0 < holdout < 1.0 or n - n_test < 2:
        raise ConfigError(
            f"latency fit: need 0 < holdout < 1 and at least 2 training architectures, got "
            f"holdout={holdout} with {n} measured architectures; collect more (-n)"
        )
    x = torch.tensor([r.encoding for r in dataset.records], dtype=torch.float32)
    y = torch.tensor([r.latency_ms for r in dataset.records], dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        perm = torch.randperm(n)
        test, train = perm[:n_test], perm[n_test:]
        y_scale = float(y[train].log().mean().exp())  # geometric mean
        model = LatencyPredictor(dataset.layout, hidden, y_scale)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        target = (y[train] / y_scale).log()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = ((model.mlp(x[train]).squeeze(-1) - target) ** 2).mean()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        rel = lambda p, t: float(((p - t).abs() / t).mean())  # noqa: E731
        report = FitReport(
            n_train=len(train),
            n_test=n_test,
            mlp_rel_error=rel(model(x[test]), y[test]),
            mean_rel_error=rel(torch.full_like(y[test], float(y[train].mean())), y[test]),
            mlp_train_rel_error=rel(model(x[train]), y[train]),
        )
    model.info = {"report": report.to_json(), "dataset": dataset.meta}
    return model, report
