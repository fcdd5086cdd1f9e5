"""The run configuration: strict dataclasses loaded from YAML presets and `--set` overrides.

Unknown or mistyped keys fail at load time with the key's path and the accepted keys;
part parameters (e.g. `relaxation: {name: gumbel, tau_max: 10}`) are checked against the
part's own `Params` dataclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from diffnas.errors import ConfigError, did_you_mean

T = TypeVar("T")


# --------------------------------------------------------------------------- parts
@dataclass
class PartSpec:
    """A registered part chosen by name, with its parameters.

    In YAML either a bare name (`relaxation: softmax`) or a mapping with `name` plus the
    part's parameters (`relaxation: {name: gumbel, tau_max: 10}`).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_yaml(self) -> Any:
        return {"name": self.name, **self.params} if self.params else self.name


def part(name: str, **params: Any) -> Any:
    """A dataclass field default of one part."""
    return field(default_factory=lambda: PartSpec(name, dict(params)))


def build_params(params_cls: type[T] | None, values: dict[str, Any], where: str) -> T | None:
    """Instantiate a part's `Params` dataclass from a mapping, strictly."""
    if params_cls is None:
        if values:
            raise ConfigError(f"{where} takes no parameters, got: {', '.join(sorted(values))}")
        return None
    return from_dict(params_cls, values, where)


# --------------------------------------------------------------------------- sections
@dataclass
class SpaceConfig:
    """The search space and the size of the supernet built from it."""

    name: str = "darts"
    channels: int = 16
    # darts: number of cells of the supernet (8); nb201: cells per stage (5). None = space default.
    layers: int | None = None
    # darts: intermediate nodes per cell.
    nodes: int = 4
    # darts only: per-cell architecture weights, one letter per searched cell, e.g. "NRNRN".
    # None: the classic two shared cells (normal, reduce) stacked over `layers`.
    cells: str | None = None
    exclude_ops: list[str] = field(default_factory=list)
    stem_multiplier: int = 3


@dataclass
class SupernetConfig:
    """How the mixed operations of the supernet are computed."""

    # PC-DARTS: only 1/K of the channels go through the mixed op (1 = all channels).
    partial_channels: int = 1
    # PC-DARTS edge normalization: per-node softmax weights over incoming edges.
    edge_norm: bool = False
    # DARTS-PRIME: BatchNorm (no affine) after each intermediate node's sum.
    node_bn: bool = False


@dataclass
class AugmentConfig:
    """Batched tensor augmentation; None = the dataset's default."""

    crop_padding: int | None = None
    flip: bool | None = None
    cutout: int = 0


@dataclass
class DataConfig:
    """Which dataset, how it is split for the bilevel search, and how batches are made."""

    dataset: str = "digits"
    root: str | None = None
    # Fraction of the training split used for weights; the rest is the architecture
    # (validation) split. None: the schedule's choice (0.5 for DARTS).
    train_portion: float | None = None
    # Use only this fraction of the training split for the search (1.0 = all).
    subset: float = 1.0
    batch_size: int = 64
    # Resize images to this side length before the search (None = native).
    resolution: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Where decoded ImageFolder datasets are cached as uint8 arrays (None: ~/.cache/diffnas).
    cache_dir: str | None = None


@dataclass
class SearchConfig:
    """The bilevel optimization: epochs, optimizers and the method's parts."""

    epochs: int = 50
    # weights: SGD with momentum, cosine schedule from w_lr to w_lr_min over the search
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # architecture: Adam
    arch_lr: float = 3e-4
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    # epochs of weight-only training before architecture steps start
    warmup_epochs: int = 0
    # epoch e trains at the cosine schedule's value for epoch e + w_lr_epoch_offset; 1 is the
    # schedule of code that calls scheduler.step() at each epoch's start on PyTorch >= 1.1
    # (DARTS-PRIME): its first epoch already runs at the second epoch's rate, its last at w_lr_min
    w_lr_epoch_offset: int = 0
    relaxation: PartSpec = part("softmax")
    updater: PartSpec = part("first_order")
    schedule: PartSpec = part("alternate")
    regularizers: list[PartSpec] = field(default_factory=list)
    derive: PartSpec = part("default")


@dataclass
class CheckpointConfig:
    """When the run's checkpoint is written (atomically; always at each epoch's end)."""

    every_s: float = 300.0
    every_steps: int = 0


@dataclass
class LogConfig:
    progress: bool = True
    # Look up the derived cell's accuracy in the NAS-Bench-201 table every epoch (nb201).
    lookup: bool = True
    # Store the architecture weights (probabilities) in metrics.jsonl every epoch.
    alpha: bool = True


@dataclass
class NetsearchConfig:
    """The network-level search (`diffnas netsearch`): NSGA-II over networks of searched blocks.

    Read by `diffnas netsearch` only; a block search (`diffnas search`) ignores it.
    """

    # parameter budget: candidates above it are infeasible (and not trained)
    budget: int = 1_000_000
    generations: int = 10
    population: int = 12
    # stages of the network (separated by one reduction cell each)
    stages: int = 3
    # [min, max] normal cells per stage
    blocks: list[int] = field(default_factory=lambda: [1, 4])
    # choices of initial channels C
    channels: list[int] = field(default_factory=lambda: [8, 12, 16, 20, 24, 32, 36])
    # use the best `top_k` blocks of the block search (null: every block it saved)
    top_k: int | None = None
    # the proxy training of each candidate (validation error objective)
    proxy_epochs: int = 2
    # fraction of the training split used by the proxy (held-out part included)
    proxy_subset: float = 1.0
    # share of that data held out to measure the validation error
    holdout: float = 0.2
    proxy_lr: float = 0.05
    # null: data.batch_size
    proxy_batch_size: int | None = None
    # where candidates train: auto (ray if installed, else process), ray, process, serial
    executor: str = "auto"
    # parallel candidates (process pool / ray tasks); 0 = the CPU count
    workers: int = 0
    # torch threads per candidate
    threads_per_worker: int = 1
    # ray: address of a running cluster (null: ray.init() starts a local one)
    ray_address: str | None = None
    # the chosen network: best (lowest error under the budget) or knee (of the front)
    choose: str = "best"


@dataclass
class Config:
    """A search run."""

    method: str = "darts"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    out: str | None = None
    space: SpaceConfig = field(default_factory=SpaceConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    netsearch: NetsearchConfig = field(default_factory=NetsearchConfig)


# --------------------------------------------------------------------------- conversion
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: bad value {value!r}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp is PartSpec:
            return _part_spec(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def _part_spec(value: Any, where: str) -> PartSpec:
    if isinstance(value, PartSpec):
        return value
    if isinstance(value, str):
        return PartSpec(value, {})
    if isinstance(value, dict):
        if "name" not in value:
            raise ConfigError(f"{where}: a part needs a 'name' key, got keys {sorted(value)}")
        params = {k: v for k, v in value.items() if k != "name"}
        return PartSpec(str(value["name"]), params)
    raise ConfigError(f"{where}: expected a part name or a mapping with 'name', got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and bad types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(
                f"unknown key '{path}'{did_you_mean(str(key), fields)}; "
                f"accepted keys{' in ' + repr(where) if where else ''}: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass config -> plain YAML-able data."""
    if isinstance(obj, PartSpec):
        return obj.to_yaml()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- files
def preset_names() -> list[str]:
    root = resources.files("diffnas") / "configs"
    names = []
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            names.append(entry.name[: -len(".yaml")])
    return sorted(names)


def _read_yaml(source: str) -> dict[str, Any]:
    """Read a YAML file, or a packaged preset by name (e.g. 'darts' or 'protocols/cpu1h')."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file '{source}' does not exist")
        text = path.read_text()
    else:
        preset = resources.files("diffnas") / "configs" / f"{source}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"'{source}' is neither a config file nor a preset"
                f"{did_you_mean(source, preset_names())}; presets: {', '.join(preset_names())}"
            )
        text = preset.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config '{source}' is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config '{source}' must be a mapping of sections, got {type(data).__name__}"
        )
    return data


# `space` keys whose meaning depends on the space (darts: cells of the supernet; nb201: cells
# per stage, ...): switching `space.name` resets them to the new space's defaults.
SPACE_SPECIFIC_KEYS = ("layers", "cells", "nodes")


def _rescale_warmup(old: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Keep a method's weight-only warm-up the same share of the search when a later layer
    (a protocol, `--epochs`) changes `search.epochs` without naming `warmup_epochs`.

    PC-DARTS warms up 15 of its 50 epochs; a 10-epoch protocol keeps 3 (at least 1, and at
    least one epoch with architecture steps), not 15 (no architecture step at all).
    """
    warmup, new = old.get("warmup_epochs"), over.get("epochs")
    epochs = old.get("epochs", SearchConfig.epochs)
    if "warmup_epochs" in over or not isinstance(new, int) or isinstance(new, bool):
        return old
    if not isinstance(warmup, int) or not isinstance(epochs, int) or warmup <= 0 or epochs <= 0:
        return old
    if new == epochs:
        return old
    scaled = min(max(1, round(warmup * new / epochs)), max(new - 1, 0))
    return {**old, "warmup_epochs": scaled}


def _scale_epochs(old: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Turn a layer's `search.epochs_scale` into `search.epochs` of the layers before it.

    A protocol compresses every method's own schedule by the same factor: GDAS's 240 epochs
    and DARTS's 50 keep their 4.8:1 ratio (0.16 -> 38 and 8), and the warm-up follows
    (_rescale_warmup). The scale is applied here, once, so it never reaches the resolved
    config (a run's config.yaml holds the epochs it ran); later layers that name
    `search.epochs` set it exactly.
    """
    if "epochs_scale" not in over:
        return over
    scale = over["epochs_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(
            f"search.epochs_scale must be a positive number (a share of the method's own "
            f"search.epochs, e.g. 0.16), got {scale!r}"
        )
    if "epochs" in over:
        raise ConfigError(
            "give search.epochs (exact) or search.epochs_scale (a share of the method's "
            "epochs) in one layer, not both"
        )
    epochs = old.get("epochs", SearchConfig.epochs)
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise ConfigError(f"search.epochs must be an integer, got {epochs!r}")
    rest = {k: v for k, v in over.items() if k != "epochs_scale"}
    return {**rest, "epochs": max(1, round(epochs * scale))}


def merge(base: dict[str, Any], over: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge `over` into a copy of `base` (mappings merge, everything else replaces).

    A mapping with a `name` (a part) replaces the old one whole, so one part's parameters never
    leak into another; the `space` section merges, but a new `space.name` drops the sizes of
    the old space (SPACE_SPECIFIC_KEYS) and keeps the rest (channels, exclude_ops, ...); a new
    `search.epochs` rescales an inherited `search.warmup_epochs` (see _rescale_warmup), and
    `search.epochs_scale` scales the inherited `search.epochs` (see _scale_epochs).
    """
    out = dict(base)
    for key, value in over.items():
        where = f"{path}.{key}" if path else str(key)
        old = out.get(key)
        if where == "search" and isinstance(value, dict):
            old = old if isinstance(old, dict) else {}
            value = _scale_epochs(old, value)
            old = _rescale_warmup(old, value)
        if where == "space" and isinstance(value, dict) and isinstance(old, dict):
            if "name" in value and value["name"] != old.get("name", SpaceConfig.name):
                old = {k: v for k, v in old.items() if k not in SPACE_SPECIFIC_KEYS}
            out[key] = merge(old, value, where)
        elif isinstance(value, dict) and isinstance(old, dict) and "name" not in value:
            out[key] = merge(old, value, where)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """'search.epochs=3' -> {'search': {'epochs': 3}} (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(
            f"override '{text}' must look like section.key=value, e.g. search.epochs=3"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': bad key '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML: {exc}") from None
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part_name in parts[:-1]:
        node = node.setdefault(part_name, {})
    node[parts[-1]] = value
    return out


def load_config(
    sources: list[str] | None = None,
    overrides: list[str] | None = None,
    cls: type[T] = Config,  # type: ignore[assignment]
) -> T:
    """Merge config files/presets in order, apply `key=value` overrides, validate strictly."""
    data: dict[str, Any] = {}
    for source in sources or []:
        data = merge(data, _read_yaml(source))
    for text in overrides or []:
        data = merge(data, parse_override(text))
    config = from_dict(cls, data)
    if isinstance(config, Config):
        validate(config)
    return config


def validate(config: Config) -> None:
    """Checks that need the registries: part names and part parameters."""
    from diffnas import registry

    # building the space checks its own keys (op names, darts `cells` against `layers`)
    registry.SPACES.get(config.space.name)(config.space)
    registry.DATASETS.get(config.data.dataset)
    s = config.search
    checks: list[tuple[Any, PartSpec, str]] = [
        (registry.RELAXATIONS, s.relaxation, "search.relaxation"),
        (registry.UPDATERS, s.updater, "search.updater"),
        (registry.SCHEDULES, s.schedule, "search.schedule"),
        (registry.DERIVATIONS, s.derive, "search.derive"),
    ]
    checks += [
        (registry.REGULARIZERS, r, f"search.regularizers[{i}]")
        for i, r in enumerate(s.regularizers)
    ]
    for reg, spec, where in checks:
        part_cls = reg.get(spec.name)
        build_params(getattr(part_cls, "Params", None), spec.params, f"{where} ({spec.name})")
    if config.search.epochs < 1:
        raise ConfigError(f"search.epochs must be at least 1, got {config.search.epochs}")
    if config.data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be at least 1, got {config.data.batch_size}")
    tp = config.data.train_portion
    if tp is not None and not 0.0 < tp < 1.0:
        raise ConfigError(f"data.train_portion must be between 0 and 1 (exclusive), got {tp}")
    if not 0.0 < config.data.subset <= 1.0:
        raise ConfigError(f"data.subset must be in (0, 1], got {config.data.subset}")
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{config.device}'")
    validate_netsearch(config.netsearch)
    if config.supernet.partial_channels < 1:
        raise ConfigError(
            f"supernet.partial_channels must be >= 1 (1 = off), got {config.supernet.partial_channels}"
        )
    if config.search.w_lr_epoch_offset < 0:
        raise ConfigError(
            f"search.w_lr_epoch_offset must be >= 0 (0: DARTS's schedule, 1: DARTS-PRIME's), "
            f"got {config.search.w_lr_epoch_offset}"
        )


EXECUTORS = ("auto", "ray", "process", "serial")
CHOICES = ("best", "knee")


def validate_netsearch(n: NetsearchConfig) -> None:
    w = "netsearch"
    if n.budget < 1:
        raise ConfigError(f"{w}.budget must be a parameter count >= 1, got {n.budget}")
    for key in ("generations", "population", "proxy_epochs", "threads_per_worker"):
        if getattr(n, key) < 1:
            raise ConfigError(f"{w}.{key} must be at least 1, got {getattr(n, key)}")
    if len(n.blocks) != 2:
        raise ConfigError(f"{w}.blocks must be [min, max] normal cells per stage, got {n.blocks}")
    if n.top_k is not None and n.top_k < 1:
        raise ConfigError(f"{w}.top_k must be >= 1 or null (every block), got {n.top_k}")
    if not 0.0 < n.proxy_subset <= 1.0:
        raise ConfigError(f"{w}.proxy_subset must be in (0, 1], got {n.proxy_subset}")
    if not 0.0 < n.holdout < 1.0:
        raise ConfigError(f"{w}.holdout must be in (0, 1), got {n.holdout}")
    if n.executor not in EXECUTORS:
        raise ConfigError(
            f"{w}.executor must be one of {', '.join(EXECUTORS)}{did_you_mean(n.executor, EXECUTORS)}"
        )
    if n.choose not in CHOICES:
        raise ConfigError(f"{w}.choose must be best or knee, got '{n.choose}'")
    if n.workers < 0:
        raise ConfigError(f"{w}.workers must be >= 0 (0 = the CPU count), got {n.workers}")


def dump_config(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
