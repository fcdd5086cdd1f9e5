"""From a genotype, zoo name or run directory to a discrete network and what it expects.

`resolve_model` is the one entry the train/eval/profile/export commands share: a trained
run brings its own sizes, weights and input normalization; a genotype gets the standard
sizes of its space and network (CIFAR: 20 cells C=36 32x32; ImageNet mobile: 14 cells
C=48 224x224; NB201: C=16, 5 cells per stage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffnas.errors import CheckpointError, ConfigError
from diffnas.run import RunDir
from diffnas.spaces import Genotype, get_space, load_genotype

# (input size, classes) of a genotype profiled or exported without a dataset
NETWORK_INPUT = {"cifar": (32, 10), "imagenet": (224, 1000)}


def build_model(
    genotype: Genotype,
    *,
    num_classes: int,
    in_channels: int = 3,
    network: str = "cifar",
    channels: int | None = None,
    layers: int | None = None,
    auxiliary: bool = False,
    drop_path: float = 0.0,
) -> nn.Module:
    """The discrete network of `genotype` (its space's builder; sizes None = its defaults)."""
    return get_space(genotype.space).build_network(
        genotype,
        num_classes=num_classes,
        in_channels=in_channels,
        channels=channels,
        layers=layers,
        auxiliary=auxiliary,
        drop_path=drop_path,
        network=network,
    )


def set_drop_path(model: nn.Module, prob: float) -> None:
    """Set the drop-path probability of networks that have it (darts); others ignore it."""
    if hasattr(model, "drop_path_prob"):
        setattr(model, "drop_path_prob", prob)  # noqa: B010 (mypy: not a declared attribute)


def has_auxiliary(model: nn.Module) -> bool:
    return getattr(model, "auxiliary", None) is not None


def main_logits(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@dataclass
class ModelSpec:
    """Everything needed to rebuild a network: genotype, sizes, and trained state if any."""

    genotype: Genotype
    network: str
    channels: int | None
    layers: int | None
    num_classes: int
    in_channels: int
    input_size: int
    auxiliary: bool = False
    drop_path: float = 0.0
    # a trained run: its directory, final weights and data description (mean/std, classes)
    run: RunDir | None = None
    state: dict[str, Any] | None = field(default=None, repr=False)
    data_info: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        if self.run is not None:
            return str(self.run.path)
        return self.genotype.name or f"{self.genotype.space} genotype"

    @property
    def trained(self) -> bool:
        return self.state is not None

    def build(self, load_weights: bool = True) -> nn.Module:
        model = build_model(
            self.genotype,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            network=self.network,
            channels=self.channels,
            layers=self.layers,
            auxiliary=self.auxiliary,
            drop_path=self.drop_path,
        )
        if load_weights and self.state is not None:
            try:
                model.load_state_dict(self.state)
            except RuntimeError as exc:
                raise CheckpointError(
                    f"the checkpoint of '{self.name}' does not match its network: {exc}"
                ) from None
        return model

    def describe(self, model: nn.Module) -> str:
        """One line: source, space, network skeleton, sizes (read off the built `model`)."""
        sizes = ""
        cells: Any = getattr(model, "cells", None)
        if self.genotype.space == "darts" and cells is not None:
            sizes = f"{len(cells)} cells, C={cells[0].preprocess1[1].out_channels}, "
        elif self.genotype.space == "nb201":
            stem: Any = getattr(model, "stem")[0]  # noqa: B009
            per_stage = (len(cells) - 2) // 3 if cells is not None else "?"
            sizes = f"{per_stage} cells per stage, C={stem.out_channels}, "
        return (
            f"{self.name}: {self.genotype.space} space, {self.network} network, {sizes}"
            f"{self.in_channels}x{self.input_size}x{self.input_size} input, "
            f"{self.num_classes} classes"
        )


def is_train_run(source: str | Path) -> bool:
    path = Path(source)
    return path.is_dir() and (path / RunDir.CONFIG).exists() and RunDir(path).kind == "train"


def resolve_model(
    source: str | Path | Genotype,
    *,
    network: str | None = None,
    channels: int | None = None,
    layers: int | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> ModelSpec:
    """A ModelSpec from a training run directory, or a genotype / zoo name / search run dir.

    For a training run the architecture (network, channels, layers) is the run's own;
    `input_size` may still be changed (profiling at another resolution).
    """
    if not isinstance(source, Genotype) and is_train_run(source):
        fixed = {"network": network, "channels": channels, "layers": layers}
        given = [k for k, v in fixed.items() if v is not None]
        if num_classes is not None or in_channels is not None:
            given.append("num_classes/in_channels")
        if given:
            raise ConfigError(
                f"'{source}' is a trained run: its network is fixed by its config; "
                f"{', '.join(given)} can only be chosen for a genotype or zoo name"
            )
        spec = load_trained(source)
        if input_size is not None:
            spec.input_size = input_size
        return spec
    genotype = source if isinstance(source, Genotype) else load_genotype(source)
    net = network or "cifar"
    get_space(genotype.space).check_network(
        net, ("cifar", "imagenet") if genotype.space == "darts" else ("cifar",)
    )
    size, classes = NETWORK_INPUT[net]
    return ModelSpec(
        genotype,
        net,
        channels,
        layers,
        num_classes or classes,
        in_channels or 3,
        input_size or size,
    )


def load_trained(run_dir: str | Path, map_location: str | torch.device = "cpu") -> ModelSpec:
    """The final weights and description of a training run (written by `diffnas train`)."""
    from diffnas.retrain.config import TrainConfig, validate_train

    run = RunDir.open(run_dir)
    if run.kind != "train":
        raise CheckpointError(
            f"'{run_dir}' is a search run, not a training run; train its genotype with "
            f"`diffnas train {run_dir}` first"
        )
    config = run.load_config(TrainConfig)
    validate_train(config)
    state = run.load_checkpoint()
    if state.get("kind") != "train":
        raise CheckpointError(f"the checkpoint in '{run_dir}' is not a training checkpoint")
    genotype = Genotype.from_json(state["genotype"], f"{run_dir} checkpoint")
    info = state["data_info"]
    m = config.model
    return ModelSpec(
        genotype,
        m.network,
        m.channels,
        m.layers,
        int(info["num_classes"]),
        int(info["in_channels"]),
        int(info["input_size"]),
        auxiliary=m.auxiliary_weight > 0,
        drop_path=m.drop_path,
        run=run,
        state=state["model"],
        data_info=info | {"epoch": state["epoch"], "epochs": config.train.epochs},
    )
