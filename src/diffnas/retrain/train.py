"""Training a genotype's discrete network with the DARTS evaluation recipe, resumably.

Auxiliary head (weight 0.4), drop-path rising linearly from 0, cutout, cosine learning rate,
SGD with gradient clipping; a run directory like a search's (config.yaml, metrics.jsonl,
genotype.json, atomic checkpoint.pt with every RNG state and the data position).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffnas.callbacks.base import Callback
from diffnas.config import from_dict, merge, parse_override, to_dict
from diffnas.data import BatchStream, Dataset
from diffnas.data.loader import augment_for, prepare_dataset
from diffnas.errors import CheckpointError, ConfigError
from diffnas.loop import (
    Loop,
    load_module,
    resume_run,
    standard_callbacks,
    start_run,
)
from diffnas.retrain.accuracy import EvalResult, eval_stream, evaluate, pytorch_predict
from diffnas.retrain.config import TrainConfig, load_train_config, validate_train
from diffnas.retrain.network import build_model, has_auxiliary, set_drop_path
from diffnas.run import RESUME_MAY_CHANGE_TRAIN, RunDir
from diffnas.spaces import Genotype, load_genotype, space_for
from diffnas.utils import cosine_lr, derived_seed

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainResult:
    genotype: Genotype
    history: list[dict[str, Any]]
    run_dir: Path | None
    test_acc: float | None
    config: TrainConfig = field(repr=False)
    # accuracy on the held-out validation split (train.holdout > 0)
    val_acc: float | None = None

    def __str__(self) -> str:
        last = self.history[-1] if self.history else {}
        acc = "-" if self.test_acc is None else f"{self.test_acc:.2f} %"
        held = "" if self.val_acc is None else f", validation (held out) {self.val_acc:.2f} %"
        lines = [
            f"trained {self.genotype.name or self.genotype.space + ' genotype'} for "
            f"{len(self.history)} epoch(s): train {last.get('train_acc', math.nan):.2f} %, "
            f"test {acc}{held}"
        ]
        if self.run_dir is not None:
            lines.append(f"run directory: {self.run_dir}")
        return "\n".join(lines)


class Trainer(Loop):
    """Data, network, optimizer and loop state of one training run (the epochs, callbacks,
    checkpoints and resume are `diffnas.loop.Loop`'s)."""

    kind = "train"

    def __init__(
        self,
        config: TrainConfig,
        genotype: Genotype,
        run: RunDir | None = None,
        callbacks: list[Callback] | None = None,
        dataset: Dataset | None = None,
    ) -> None:
        validate_train(config)
        config = with_genotype_network(config, genotype)
        self.config = config
        super().__init__(
            run,
            callbacks,
            config.threads,
            config.device,
            config.seed,
            config.train.epochs,
            config.train.finite_check_every,
        )
        self.space = space_for(genotype)
        self.genotype = self.current_genotype = genotype
        ds = dataset or prepare_dataset(config.data)
        self.dataset = ds
        d = config.data
        n = len(ds.train)
        split_seed = config.seed if config.train.split_seed is None else config.train.split_seed
        perm = torch.randperm(
            n, generator=torch.Generator().manual_seed(derived_seed(split_seed, 99))
        )
        idx = perm[: max(1, int(round(d.subset * n)))].sort().values
        held: torch.Tensor | None = None
        if config.train.holdout > 0:
            n_held = int(round(config.train.holdout * len(idx)))
            if not 0 < n_held < len(idx):
                raise ConfigError(
                    f"train.holdout={config.train.holdout} of {len(idx)} training images leaves "
                    f"{n_held} for validation and {len(idx) - n_held} for training; both need "
                    f"at least one (raise data.subset or change train.holdout)"
                )
            shuffled = idx[
                torch.randperm(
                    len(idx), generator=torch.Generator().manual_seed(derived_seed(split_seed, 98))
                )
            ]
            held, idx = shuffled[:n_held].sort().values, shuffled[n_held:].sort().values
        self.mean, self.std = ds.mean_std()
        self.train_stream = BatchStream(
            ds.train,
            idx,
            d.batch_size,
            self.mean,
            self.std,
            augment_for(d, ds),
            d.augment.cutout,
            derived_seed(config.seed, 1),
            device=self.device,
        )
        self.test_stream = eval_stream(ds, self.mean, self.std, d.batch_size, self.device)
        self.val_stream: BatchStream | None = None
        if held is not None:
            self.val_stream = BatchStream(
                ds.train,
                held,
                d.batch_size,
                self.mean,
                self.std,
                None,
                shuffle=False,
                drop_last=False,
                device=self.device,
            )
        m = config.model
        self.model = build_model(
            genotype,
            num_classes=ds.num_classes,
            in_channels=ds.in_channels,
            network=m.network,
            channels=m.channels,
            layers=m.layers,
            auxiliary=m.auxiliary_weight > 0,
            drop_path=m.drop_path,
        ).to(self.device)
        # nb201 networks have neither: the recipe's head and drop-path then do nothing
        self.has_auxiliary = has_auxiliary(self.model)
        self.has_drop_path = hasattr(self.model, "drop_path_prob")
        t = config.train
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )

    # ------------------------------------------------------------------ facts
    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_stream)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def lr_at(self, epoch: int) -> float:
        t = self.config.train
        return cosine_lr(t.lr, t.lr_min, epoch, self.epochs)

    def drop_path_at(self, epoch: int) -> float:
        """DARTS: drop_path * epoch / epochs, i.e. 0 in the first epoch."""
        return self.config.model.drop_path * epoch / self.epochs

    def data_info(self) -> dict[str, Any]:
        ds = self.dataset
        return {
            "label": ds.label,
            "dataset": ds.name,
            "num_classes": ds.num_classes,
            "in_channels": ds.in_channels,
            "input_size": ds.input_size,
            "classes": list(ds.classes),
            "mean": [float(v) for v in self.mean.flatten()],
            "std": [float(v) for v in self.std.flatten()],
        }

    def nonfinite_advice(self) -> tuple[str, str, str]:
        t = self.config.train
        return (
            f"lr {self.lr:.3g}",
            "Lower train.lr and keep train.grad_clip > 0",
            f"train.lr={t.lr / 2:g}`",
        )

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: Batch) -> None:
        x, y = batch
        t = self.config.train
        out = self.model(x)
        logits, aux = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
        loss = F.cross_entropy(logits, y, label_smoothing=t.label_smoothing)
        if aux is not None:
            aux_loss = F.cross_entropy(aux, y, label_smoothing=t.label_smoothing)
            loss = loss + self.config.model.auxiliary_weight * aux_loss
        self.watch_loss(loss, "training")  # read on the host every finite.every steps
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = t.grad_clip
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        self.optimizer.step()
        self.meters.add("train", loss, logits, y)

    def test(self) -> EvalResult:
        return self._evaluate(self.test_stream)

    def validate(self) -> EvalResult:
        """Loss and accuracy on the held-out split (train.holdout > 0)."""
        if self.val_stream is None:
            raise ConfigError("validate() needs a held-out split: set train.holdout > 0")
        return self._evaluate(self.val_stream)

    def _evaluate(self, stream: BatchStream) -> EvalResult:
        self.model.eval()
        try:
            return evaluate(pytorch_predict(self.model), stream)
        finally:
            self.model.train()

    # ------------------------------------------------------------------ the loop
    def run_training(self) -> TrainResult:
        self.fit()
        if self.run is not None:
            self.genotype.save(self.run.genotype_path)
        tested = [h["test_acc"] for h in self.history if h.get("test_acc") is not None]
        validated = [h["val_acc"] for h in self.history if h.get("val_acc") is not None]
        return TrainResult(
            self.genotype,
            self.history,
            self.run.path if self.run else None,
            tested[-1] if tested else None,
            self.config,
            validated[-1] if validated else None,
        )

    def begin_epoch(self, epoch: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(epoch)
        set_drop_path(self.model, self.drop_path_at(epoch))
        self.model.train()

    def batches(self, epoch: int, start: int) -> Iterable[Batch]:
        return self.train_stream.epoch(epoch, start=start)

    def training_step(self, batch: Batch) -> None:
        self.train_step(batch)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        metrics = self._epoch_metrics(epoch)
        every = self.config.train.eval_every
        last = epoch + 1 == self.epochs
        # validation (held-out part of the training split) during training; the test split
        # once, at the end: per-epoch test accuracy would invite selecting on the test set
        if self.val_stream is not None and (last or (every and (epoch + 1) % every == 0)):
            result = self.validate()
            metrics["val_loss"], metrics["val_acc"] = result.loss, result.accuracy
        if last and self.config.train.final_test:
            result = self.test()
            metrics["test_loss"], metrics["test_acc"] = result.loss, result.accuracy
        return metrics

    def _epoch_metrics(self, epoch: int) -> dict[str, Any]:
        m = self.meters.summary()
        return {
            "epoch": epoch,
            "train_loss": m["train_loss"],
            "train_acc": m["train_acc"],
            "test_loss": None,
            "test_acc": None,
            "lr": self.lr,
            "drop_path": self.drop_path_at(epoch) if self.has_drop_path else None,
            "time_s": round(self.elapsed_s, 3),
        }

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {
            "kind": "train",
            "genotype": self.genotype.to_json(),
            "data_info": self.data_info(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "train":
            raise CheckpointError(
                "this checkpoint is not a training checkpoint (a search run's?); continue a "
                "search with `diffnas search --resume RUN_DIR`"
            )
        super().load_state_dict(state)

    def load_extra_state(self, state: dict[str, Any]) -> None:
        load_module(
            self.model,
            state["model"],
            lambda how: (
                f"checkpoint does not match this run's network ({how}); restore the run's "
                f"config.yaml, or start a new run"
            ),
        )
        self.optimizer.load_state_dict(state["optimizer"])
        for g in self.optimizer.param_groups:  # this config's lr (resume may lower it)
            g["lr"] = self.lr_at(state["epoch"])


# =========================================================================== entry points
def with_genotype_network(config: TrainConfig, genotype: Genotype) -> TrainConfig:
    """The config with model.channels/layers cleared when the genotype's network section rules."""
    m = config.model
    if genotype.network is None or not m.genotype_network:
        return config
    if m.network != "cifar":
        raise ConfigError(
            f"the genotype's network section describes a cifar network; set model.network: "
            f"cifar, or model.genotype_network: false to build the {m.network} network"
        )
    if m.channels is None and m.layers is None:
        return config
    return replace(config, model=replace(m, channels=None, layers=None))


def default_callbacks(config: TrainConfig, progress: bool | None = None) -> list[Callback]:
    show = config.log.progress if progress is None else progress
    c = config.checkpoint
    return standard_callbacks(
        config.log.loggers, config.log.every_steps, c.every_s, c.every_steps, show
    )


def _as_train_config(
    config: TrainConfig | dict[str, Any] | str | list[str] | None,
    overrides: list[str] | None,
    dataset: Dataset | None,
) -> TrainConfig:
    from diffnas.retrain.config import train_preset

    if isinstance(config, TrainConfig):
        if not overrides:
            return config
        data = to_dict(config)
        for text in overrides:
            data = merge(data, parse_override(text))
        out = from_dict(TrainConfig, data)
        validate_train(out)
        return out
    if isinstance(config, dict):
        return _as_train_config(from_dict(TrainConfig, config), overrides, dataset)
    if config is None:
        name = dataset.name if dataset is not None else None
        for text in overrides or []:
            if text.startswith("data.dataset="):
                name = text.split("=", 1)[1].strip()
        config = [train_preset(name)]
    return load_train_config([config] if isinstance(config, str) else config, overrides)


def default_run_path(config: TrainConfig, genotype: Genotype, root: str = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = genotype.name or genotype.space
    return Path(root) / f"train-{name}-{config.data.dataset}-{stamp}"


def train(
    genotype: Genotype | str | Path | None = None,
    config: TrainConfig | dict[str, Any] | str | list[str] | None = None,
    *,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Train the discrete network of `genotype` (a Genotype, file, zoo name or search run;
    None = the config's `genotype`).

    `config`: a TrainConfig, a mapping, or preset/file name(s); None = the preset of the
    dataset (configs/train/<dataset>.yaml, digits by default). Writes a run directory
    (out, config.out, or runs/train-<name>-<dataset>-<time>).
    """
    cfg = _as_train_config(config, overrides, dataset)
    if genotype is None:
        if cfg.genotype is None:
            raise ConfigError(
                "no genotype to train: pass a genotype file, zoo name (e.g. DARTS_V2) or "
                "search run directory, or set `genotype:` in the config"
            )
        genotype = cfg.genotype
    if isinstance(genotype, Genotype):
        space_for(genotype)  # validated like a loaded one
        g = genotype
        cfg = replace(cfg, genotype=cfg.genotype or g.name or "<Genotype object>")
    else:
        g = load_genotype(genotype)
        cfg = replace(cfg, genotype=str(genotype))
    from diffnas.choices import ModelSpace
    from diffnas.spaces.base import get_space

    if isinstance(get_space(g.space), ModelSpace):
        raise ConfigError(
            f"'{g.space}' is a user model: train it with your own loop on your own data, "
            f"after fixing its choices (diffnas.choices.fix(model, choices); see "
            f"docs/user_models.md); `diffnas export` exports it"
        )
    cfg = with_genotype_network(cfg, g)
    path = out if out is not None else cfg.out
    run = RunDir.create(cfg, path, default=default_run_path(cfg, g))

    def go() -> TrainResult:
        g.save(run.genotype_path)
        cbs = default_callbacks(cfg, progress) + list(callbacks or [])
        return Trainer(cfg, g, run, cbs, dataset).run_training()

    return start_run(run, go)


def _train_run(run_dir: str | Path, lock: bool = False) -> RunDir:
    run = RunDir.open(run_dir)
    if run.kind != "train":
        raise CheckpointError(
            f"'{run_dir}' is a search run, not a training run; continue it with "
            f"`diffnas search --resume {run_dir}`"
        )
    return RunDir.open(run_dir, lock=True) if lock else run


def resume_training_config(run_dir: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """The config `resume_training(run_dir, overrides=...)` would continue under."""
    run = _train_run(run_dir)
    state = run.load_checkpoint()
    return run.resume_config(
        state, TrainConfig, overrides, RESUME_MAY_CHANGE_TRAIN, validate_train, write=False
    )


def resume_training(
    run_dir: str | Path,
    *,
    overrides: list[str] | None = None,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Continue a training run from its checkpoint; ends as an uninterrupted run would.

    `overrides` may change only the keys of `RESUME_MAY_CHANGE_TRAIN` (threads, epochs,
    lr, ...); metrics.jsonl is rebuilt from the checkpoint's history.
    """
    run = _train_run(run_dir, lock=True)

    def read() -> tuple[dict[str, Any], TrainConfig]:
        state = run.load_checkpoint()
        return state, run.resume_config(
            state, TrainConfig, overrides, RESUME_MAY_CHANGE_TRAIN, validate_train
        )

    def build(state: dict[str, Any], cfg: TrainConfig) -> Trainer:
        genotype = Genotype.from_json(state.get("genotype"), f"{run_dir} checkpoint")
        cbs = default_callbacks(cfg, progress) + list(callbacks or [])
        return Trainer(cfg, genotype, run, cbs, dataset)

    return resume_run(run, read, build, Trainer.run_training)
