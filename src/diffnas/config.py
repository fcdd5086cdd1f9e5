"""The run configuration: strict dataclasses loaded from YAML presets and `--set` overrides.

Unknown or mistyped keys fail at load time with the key's path and the accepted keys;
part parameters (e.g. `relaxation: {name: gumbel, tau_max: 10}`) are checked against the
part's own `Params` dataclass.
"""

from __future__ import annotations

import dataclasses
import math
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
    # DARTS-: an auxiliary skip connection on every edge, outside the mixed op and so never
    # derived: edge output = mixed op + β · skip(x), skip = the space's skip_connect at the
    # edge's stride (identity; a factorized reduction with its own weights on a stride-2
    # edge). β = aux_skip_beta at epoch 0, decayed once per epoch (aux_skip_decay: linear,
    # cosine, slow_cosine or none) to 0 at epoch aux_skip_epochs (null: search.epochs).
    aux_skip: bool = False
    aux_skip_beta: float = 1.0
    aux_skip_decay: str = "linear"
    aux_skip_epochs: int | None = None


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


PRECISIONS = ("fp32", "bf16", "bf16_weights", "auto")
COMPILES = ("off", "cell")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class SearchConfig:
    """The bilevel optimization: epochs, optimizers and the method's parts."""

    epochs: int = 50
    # weights: SGD with momentum, cosine schedule from w_lr to w_lr_min over the search
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    # Nesterov momentum for the weights' SGD (XAutoDL's NB201 configs use it)
    w_nesterov: bool = False
    grad_clip: float = 5.0
    # the weight step's clipping norm also counts α's gradients (the weight-step loss's plus
    # the last architecture step's, still held), as XAutoDL's NB201 scripts, which clip
    # network.parameters() with α inside; α's own steps are unaffected
    grad_clip_alpha: bool = False
    # arithmetic of the search steps' forward passes: fp32 (default), bf16 (autocast of
    # convolutions and matmuls to bfloat16; weights, α, BN statistics and losses stay fp32)
    # bf16_weights (bf16 for the weight step only, the architecture gradient in fp32: the
    # bf16 alpha-gradient's cosine to fp32's is ~0.99) or auto (bf16_weights only where the
    # device computes bf16 natively, else fp32; the run says which it chose). Speed only
    # where the hardware has native bf16: docs/engine.md
    precision: str = "fp32"
    # torch.compile of the supernet: off (default) or cell (each search cell compiled once
    # per shape; the first steps include compiling, cached under data.cache_dir/inductor).
    # compile_backend: a torch.compile backend (inductor; aot_eager/eager to check the path)
    compile: str = "off"
    compile_backend: str = "inductor"
    # torch.compile's mode for the cells: default, reduce-overhead (CUDA graphs on a GPU: the
    # step's shapes are fixed), max-autotune, max-autotune-no-cudagraphs; inductor only
    compile_mode: str = "default"
    # the share (0-1] of a compiled cell's activations its backward may keep; the rest is
    # recomputed in the backward (AOTAutograd's activation_memory_budget; 1: keep all it
    # chooses to, PyTorch's default). null: 1 under search.precision=bf16 (its activations
    # are half the bytes), 0.5 otherwise, so that compiling does not raise the step's peak
    # memory above the eager engine's: docs/engine.md#compiled-cells-searchcompile
    compile_memory_budget: float | None = None
    # the steps' losses are checked for NaN/inf on the host after every this many steps, at
    # each epoch's end and before each checkpoint; a non-finite one stops the run naming the
    # exact step that made it. null: 1 on cpu (a host read costs nothing there), 50 on cuda
    # (each read waits for the GPU's queued work; fewer reads let the host run ahead).
    # Results do not depend on it: docs/engine.md#the-gpu-path-device-cuda
    finite_check_every: int | None = None
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
    # Experiment loggers writing into the run directory: csv, tensorboard, wandb, mlflow.
    loggers: list[str] = field(default_factory=list)
    # Loggers get train/val loss and accuracy every this many steps (0: per epoch only).
    every_steps: int = 20


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
    # plugins (module names or .py paths) that register this run's ops/spaces/parts
    imports: list[str] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"
    # PyTorch threads; null: the usable cores less those other processes keep busy, checked
    # at the start and every epoch (diffnas.utils.auto_threads)
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


def read_text_file(path: Path, what: str, error: type[Exception]) -> str:
    """A UTF-8 text file's content, or `error` naming the file and why it cannot be read."""
    if path.is_dir():
        raise error(f"{what} '{path}' is a directory; give the file inside it")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} '{path}' is not a UTF-8 text file (binary data?)") from None
    except OSError as exc:
        raise error(f"cannot read {what} '{path}': {exc.strerror or exc}") from None


def _read_yaml(source: str) -> dict[str, Any]:
    """Read a YAML file, or a packaged preset by name (e.g. 'darts' or 'protocols/cpu1h')."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file '{source}' does not exist")
        text = read_text_file(path, "config file", ConfigError)
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
        # one line: YAML's message spans several, with a drawing of the bad spot
        detail = " ".join(str(exc).split())
        raise ConfigError(f"config '{source}' is not valid YAML: {detail}") from None
    except RecursionError:
        raise ConfigError(f"config '{source}' is nested too deeply to be a config") from None
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
        scalar_old = old is not None and not isinstance(old, dict)
        if scalar_old and isinstance(value, dict) and "name" not in value:
            # e.g. `space: [..]` in a file and `--set space.channels=8`: replacing the list
            # would silently drop it, merging into it is impossible
            first = next(iter(value), "")
            example = (
                f", e.g. {where}: {{name: {old}, {first}: ...}}" if isinstance(old, str) else ""
            )
            raise ConfigError(
                f"'{where}' is {old!r} (a {type(old).__name__}) in an earlier config layer, so "
                f"'{where}.{first}' cannot be merged into it; write '{where}' as a mapping{example}"
            )
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
        detail = " ".join(str(exc).split())
        raise ConfigError(f"override '{text}': value is not valid YAML: {detail}") from None
    except RecursionError:
        raise ConfigError(f"override '{text}': value is nested too deeply") from None
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


def check_device(name: str) -> str:
    """`name` if it is a device diffnas can be asked for (auto, cpu, cuda, cuda:N, mps)."""
    if name in ("auto", "cpu", "cuda", "mps") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got '{name}'")


# upper bounds that no real search comes near; beyond them a typo (an extra 0, `10^23`)
MAX_EPOCHS = 10_000
MAX_ARCH_LR = 1.0  # Adam moves each α by about arch_lr per step: above 1, α runs off
MAX_CHANNELS = 65_536
MAX_LAYERS = 500
MAX_NODES = 64
MAX_EDGES = 2_000  # mixed edges of the whole supernet: 18x DARTS's
MAX_INT = 2**53  # larger integers are not exact as floats and overflow torch's int64 seeds


def _check_types(config: Any) -> None:
    """Re-read a config dataclass through the strict loader: a `Config` built in Python (or
    changed after loading) gets the same type checks as one read from YAML."""
    from_dict(type(config), to_dict(config))


def _check_numbers(obj: Any, where: str = "") -> None:
    """No NaN/inf floats and no integer beyond MAX_INT anywhere in the config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _check_numbers(getattr(obj, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(obj, PartSpec):
        _check_numbers(obj.params, where)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{where} must be a finite number, got {obj}")
    elif isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) > MAX_INT:
        raise ConfigError(f"{where} = {obj} is out of range (at most {MAX_INT:.0e} in size)")


def at_least(value: float | None, low: float, where: str, hint: str = "") -> None:
    """ConfigError naming `where` when `value` is set and below `low` (None: unset, fine)."""
    if value is not None and value < low:
        raise ConfigError(f"{where} must be at least {low}{hint}, got {value}")


def supernet_edges(sp: SpaceConfig) -> int:
    """Mixed edges of the supernet (cells x edges per cell) of the built-in spaces; 0 else."""
    if sp.name == "darts":
        cells = len(sp.cells) if sp.cells else (sp.layers or 8)
        return cells * sp.nodes * (sp.nodes + 3) // 2
    if sp.name == "nb201":
        return 3 * (sp.layers or 5) * 6
    return 0


def check_values(config: Config) -> None:
    """Range checks of a search config that need no registry (each names key, value, fix)."""
    sp, net, d, s = config.space, config.supernet, config.data, config.search
    at_least(sp.channels, 1, "space.channels", " (initial channels C)")
    at_least(sp.layers, 1, "space.layers", " (cells; null = the space's default)")
    at_least(sp.nodes, 1, "space.nodes", " (intermediate nodes per cell)")
    at_least(sp.stem_multiplier, 1, "space.stem_multiplier")
    # even the supernet's Python objects (modules per cell, edge and op) would exhaust memory
    # beyond these; the memory check (dry-run, preflight) covers sizes within them
    for key, value, most, note in (
        ("channels", sp.channels, MAX_CHANNELS, "DARTS searches with 16"),
        ("layers", sp.layers, MAX_LAYERS, "DARTS searches with 8 cells"),
        ("nodes", sp.nodes, MAX_NODES, "DARTS cells have 4"),
        ("stem_multiplier", sp.stem_multiplier, 64, "DARTS uses 3"),
    ):
        if value is not None and value > most:
            raise ConfigError(f"space.{key} must be at most {most} ({note}), got {value}")
    edges = supernet_edges(sp)
    if edges > MAX_EDGES:
        raise ConfigError(
            f"space.layers={sp.layers} with space.nodes={sp.nodes} gives the {sp.name} supernet "
            f"{edges:,} mixed edges, more than {MAX_EDGES:,} (DARTS: 8 cells x 14 = 112); "
            f"lower space.layers or space.nodes"
        )
    if config.threads is not None:
        at_least(config.threads, 1, "threads", " (null = the cores other processes leave free)")
    if not 0 <= config.seed < 2**63:
        raise ConfigError(f"seed must be in [0, 2^63), got {config.seed}")
    at_least(net.partial_channels, 1, "supernet.partial_channels", " (1 = off)")
    k = net.partial_channels
    if k > 1 and (k > sp.channels or sp.channels % k):
        raise ConfigError(
            f"supernet.partial_channels={k} must divide space.channels={sp.channels} (the "
            f"mixed op sees C/K channels); e.g. --set supernet.partial_channels="
            f"{max(v for v in range(1, min(k, sp.channels) + 1) if sp.channels % v == 0)}"
        )
    if net.aux_skip:
        check_aux_skip(net)
    at_least(d.batch_size, 1, "data.batch_size")
    at_least(d.resolution, 4, "data.resolution", " (null = native)")
    at_least(d.augment.crop_padding, 0, "data.augment.crop_padding")
    at_least(d.augment.cutout, 0, "data.augment.cutout")
    if d.train_portion is not None and not 0.0 < d.train_portion < 1.0:
        raise ConfigError(
            f"data.train_portion must be between 0 and 1 (exclusive), got {d.train_portion}"
        )
    if not 0.0 < d.subset <= 1.0:
        raise ConfigError(f"data.subset must be in (0, 1], got {d.subset}")
    if not 1 <= s.epochs <= MAX_EPOCHS:
        raise ConfigError(f"search.epochs must be in 1..{MAX_EPOCHS}, got {s.epochs}")
    if s.w_lr <= 0:
        raise ConfigError(f"search.w_lr must be > 0 (the weights' SGD step), got {s.w_lr}")
    at_least(s.w_lr_min, 0.0, "search.w_lr_min")
    if not 0.0 <= s.w_momentum < 1.0:
        raise ConfigError(f"search.w_momentum must be in [0, 1), got {s.w_momentum}")
    at_least(s.w_weight_decay, 0.0, "search.w_weight_decay")
    at_least(s.arch_weight_decay, 0.0, "search.arch_weight_decay")
    at_least(s.grad_clip, 0.0, "search.grad_clip", " (0 = no clipping)")
    if not 0.0 <= s.arch_lr <= MAX_ARCH_LR:
        raise ConfigError(
            f"search.arch_lr must be in [0, {MAX_ARCH_LR:g}] (Adam moves each α by about "
            f"arch_lr per step; DARTS uses 3e-4), got {s.arch_lr}"
        )
    if len(s.arch_betas) != 2 or not all(0.0 <= b < 1.0 for b in s.arch_betas):
        raise ConfigError(
            f"search.arch_betas must be two numbers in [0, 1) (Adam's beta1, beta2), e.g. "
            f"[0.5, 0.999], got {s.arch_betas}"
        )
    if s.precision not in PRECISIONS:
        raise ConfigError(
            f"search.precision must be one of {', '.join(PRECISIONS)} (fp32: the default; bf16: "
            f"bfloat16 autocast of the search steps; bf16_weights: of the weight step only, the "
            f"architecture gradient in float32; auto: bf16_weights where native), got "
            f"{s.precision!r}"
        )
    if s.compile not in COMPILES:
        raise ConfigError(
            f"search.compile must be one of {', '.join(COMPILES)} (off: the default; cell: "
            f"torch.compile each search cell), got {s.compile!r}"
        )
    if s.compile_mode not in COMPILE_MODES:
        raise ConfigError(
            f"search.compile_mode must be one of {', '.join(COMPILE_MODES)} (torch.compile's "
            f"mode; reduce-overhead: CUDA graphs on a GPU), got {s.compile_mode!r}"
        )
    if s.compile_memory_budget is not None and not 0 < s.compile_memory_budget <= 1:
        raise ConfigError(
            f"search.compile_memory_budget must be in (0, 1] (the share of a compiled cell's "
            f"activations kept for backward; 1: PyTorch's default; null: 1 under bf16, else 0.5), "
            f"got {s.compile_memory_budget}"
        )
    at_least(s.finite_check_every, 1, "search.finite_check_every", " (null: 1 on cpu, 50 on cuda)")
    at_least(s.warmup_epochs, 0, "search.warmup_epochs")
    if s.warmup_epochs and s.warmup_epochs >= s.epochs:
        raise ConfigError(
            f"search.warmup_epochs={s.warmup_epochs} leaves no epoch of the "
            f"{s.epochs} (search.epochs) for architecture steps; set search.warmup_epochs "
            f"below {s.epochs}"
        )
    at_least(config.checkpoint.every_s, 0.0, "checkpoint.every_s")
    at_least(config.checkpoint.every_steps, 0, "checkpoint.every_steps", " (0 = off)")
    check_device(config.device)


AUX_SKIP_DECAYS = ("linear", "cosine", "slow_cosine", "none")


def check_aux_skip(net: SupernetConfig) -> None:
    if net.aux_skip_decay not in AUX_SKIP_DECAYS:
        raise ConfigError(
            f"supernet.aux_skip_decay must be one of {', '.join(AUX_SKIP_DECAYS)} (DARTS-: "
            f"linear), got {net.aux_skip_decay!r}"
        )
    at_least(net.aux_skip_beta, 0.0, "supernet.aux_skip_beta", " (DARTS-: 1)")
    at_least(net.aux_skip_epochs, 1, "supernet.aux_skip_epochs", " (null = search.epochs)")


def validate(config: Config) -> None:
    """Every check of a search config: types, numbers, ranges, part names and parameters.

    `load_config` runs it, and so does every run entry point (a `Config` built or changed in
    Python gets the same checks).
    """
    from diffnas import plugins, registry

    if not isinstance(config, Config):
        raise ConfigError(f"expected a diffnas Config, got {type(config).__name__}")
    _check_types(config)
    _check_numbers(config)
    # a plugin may register the space or parts named below; a config never imports code itself
    plugins.require(config.imports, "the config (its `imports`)")
    check_values(config)
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
    from diffnas.parts import build_part

    for reg, spec, where in checks:
        # the part itself, not only its Params: checks in a part's __init__ (which must be
        # cheap and draw no random numbers) fire when the config loads, not when a run starts
        build_part(reg, spec, where)
    if config.search.w_nesterov and not config.search.w_momentum > 0:
        raise ConfigError(
            f"search.w_nesterov needs search.w_momentum > 0, got {config.search.w_momentum}; "
            f"set a momentum or w_nesterov: false"
        )
    if config.search.w_lr_epoch_offset < 0:
        raise ConfigError(
            f"search.w_lr_epoch_offset must be >= 0 (0: DARTS's schedule, 1: DARTS-PRIME's), "
            f"got {config.search.w_lr_epoch_offset}"
        )
    validate_netsearch(config.netsearch)
    validate_log(config.log.loggers, config.log.every_steps)


def validate_log(loggers: list[str], every_steps: int) -> None:
    from diffnas.callbacks.loggers import check_loggers

    check_loggers(loggers)
    if every_steps < 0:
        raise ConfigError(f"log.every_steps must be >= 0 (0 = per epoch only), got {every_steps}")


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
