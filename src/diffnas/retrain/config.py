"""The training-run configuration: a strict dataclass loaded with config.py's machinery.

Defaults are the DARTS CIFAR evaluation recipe (Liu et al., 2019); presets under
configs/train/ set it per dataset. `load_train_config` is `load_config(..., cls=TrainConfig)`
plus the checks that need the registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from diffnas.config import (
    AugmentConfig,
    CheckpointConfig,
    DataConfig,
    at_least,
    check_device,
    load_config,
)
from diffnas.errors import ConfigError

NETWORKS = ("cifar", "imagenet")


@dataclass
class ModelConfig:
    """The discrete network built from the genotype."""

    # skeleton around the cells: cifar (every space) or imagenet (darts: DARTS' mobile
    # network, stride-8 stem, for 224x224 inputs)
    network: str = "cifar"
    # darts: initial channels C (None: 36 cifar, 48 imagenet); nb201: first stage's C (16)
    channels: int | None = None
    # darts: number of cells (None: 20 cifar, 14 imagenet); nb201: cells per stage (5)
    layers: int | None = None
    # weight of the auxiliary head's loss (head at 2/3 depth, darts only); 0 = no head
    auxiliary_weight: float = 0.4
    # drop-path probability, increased linearly from 0 at the first epoch (darts only)
    drop_path: float = 0.2
    # a genotype with a `network` section (from `diffnas netsearch`) brings its own stages and
    # channels, which then replace `channels` and `layers`; false: use `channels`/`layers`
    genotype_network: bool = True


@dataclass
class TrainLoopConfig:
    """Optimization: SGD with momentum, cosine learning rate set once per epoch (DARTS)."""

    epochs: int = 600
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
    # validation accuracy (on the held-out split, train.holdout > 0) every N epochs and after
    # the last; 0 = only after the last. The test split is never looked at during training.
    eval_every: int = 1
    # the training losses are read on the host (checked finite) every this many steps, at
    # each epoch's end and before each checkpoint; null: 1 on cpu (free there), 50 on cuda
    # (a read drains the device's queue), as search.finite_check_every
    finite_check_every: int | None = None
    # fraction of the (subset of the) training split held out as a validation split: the
    # network trains on the rest and is evaluated on it (val_acc) every eval_every epochs,
    # e.g. for the proxy training of the network-level search. 0 = off (the DARTS recipe
    # trains on the whole training split).
    holdout: float = 0.0
    # test accuracy once, after the last epoch (false: never, e.g. netsearch's proxy runs,
    # which select on val_acc and must not spend time on the test split)
    final_test: bool = True
    # seed of the data.subset and holdout selection (null: the run's seed); fixing it gives
    # runs with different seeds the same split
    split_seed: int | None = None


@dataclass
class TrainLogConfig:
    progress: bool = True
    # Experiment loggers writing into the run directory: csv, tensorboard, wandb, mlflow.
    loggers: list[str] = field(default_factory=list)
    # Loggers get the training loss and accuracy every this many steps (0: per epoch only).
    every_steps: int = 20


def _train_data() -> DataConfig:
    return DataConfig(dataset="cifar10", batch_size=96, augment=AugmentConfig(cutout=16))


@dataclass
class TrainConfig:
    """A training run of one genotype's discrete network."""

    # genotype file, zoo name, search run directory or NB201 string; the resolved genotype
    # is stored in the run's genotype.json, which is what a resumed run uses
    genotype: str | None = None
    # plugins (module names or .py paths) that register the genotype's space and ops
    imports: list[str] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    out: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=_train_data)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: TrainLogConfig = field(default_factory=TrainLogConfig)


def train_preset(dataset: str | None) -> str:
    """The preset of a dataset (configs/train/<dataset>.yaml), else the CIFAR-10 recipe."""
    name = dataset or "digits"
    if (resources.files("diffnas") / "configs" / "train" / f"{name}.yaml").is_file():
        return f"train/{name}"
    return "train/cifar10"


def load_train_config(
    sources: list[str] | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """Merge presets/files, apply `key=value` overrides, validate strictly."""
    config = load_config(sources, overrides, cls=TrainConfig)
    validate_train(config)
    return config


def validate_train(config: TrainConfig) -> None:
    from diffnas import registry
    from diffnas.config import validate_log

    registry.DATASETS.get(config.data.dataset)
    validate_log(config.log.loggers, config.log.every_steps)
    m, t, d = config.model, config.train, config.data
    if m.network not in NETWORKS:
        raise ConfigError(f"model.network must be one of {', '.join(NETWORKS)}, got '{m.network}'")
    for key, value in (("model.channels", m.channels), ("model.layers", m.layers)):
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be at least 1 (or null for the default), got {value}")
    if m.auxiliary_weight < 0:
        raise ConfigError(f"model.auxiliary_weight must be >= 0, got {m.auxiliary_weight}")
    if not 0.0 <= m.drop_path < 1.0:
        raise ConfigError(f"model.drop_path must be in [0, 1), got {m.drop_path}")
    if t.epochs < 1:
        raise ConfigError(f"train.epochs must be at least 1, got {t.epochs}")
    at_least(t.finite_check_every, 1, "train.finite_check_every", " (null: 1 on cpu, 50 on cuda)")
    if t.eval_every < 0:
        raise ConfigError(
            f"train.eval_every must be >= 0 (0 = only at the end), got {t.eval_every}"
        )
    if not 0.0 <= t.holdout < 1.0:
        raise ConfigError(
            f"train.holdout must be in [0, 1) (the held-out share of the training split), "
            f"got {t.holdout}"
        )
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    if d.batch_size < 1:
        raise ConfigError(f"data.batch_size must be at least 1, got {d.batch_size}")
    if d.train_portion is not None:
        raise ConfigError(
            "data.train_portion is a search setting (the weight/architecture split); training "
            "uses the whole training split. Remove it, or use data.subset to train on a part"
        )
    if not 0.0 < d.subset <= 1.0:
        raise ConfigError(f"data.subset must be in (0, 1], got {d.subset}")
    check_device(config.device)
