"""The search: builds a run's parts from its config and runs the bilevel loop.

The loop knows no method: the schedule says when to take an architecture step, the
updater computes ∇α, the relaxation and regularizers shape the objective, callbacks log
and checkpoint. Resuming restores every part's state and all RNG streams.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from diffnas.callbacks.base import Callback, Checkpointer, MetricsLogger
from diffnas.config import Config, from_dict, load_config, to_dict
from diffnas.data import CyclingStream, SearchData, search_data
from diffnas.data.datasets import Dataset
from diffnas.errors import CheckpointError, NumericalError
from diffnas.parts import Derivation, Regularizer, Relaxation, Schedule, Updater, build_part
from diffnas.registry import DERIVATIONS, REGULARIZERS, RELAXATIONS, SCHEDULES, UPDATERS
from diffnas.run import RunDir
from diffnas.spaces import get_space
from diffnas.spaces.genotype import Genotype
from diffnas.supernet.base import Architecture
from diffnas.supernet.mixed import MixWeights
from diffnas.utils import (
    cosine_lr,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
)

Batch = tuple[torch.Tensor, torch.Tensor]
CHECKPOINT_VERSION = 1


class Meters:
    """Running sums of one epoch's losses and accuracies (kept on the device: no syncs)."""

    KEYS = ("train_loss", "train_correct", "train_n", "val_loss", "val_correct", "val_n")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float | torch.Tensor] = dict.fromkeys(self.KEYS, 0.0)

    def add(
        self, prefix: str, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        n = labels.shape[0]
        self.sums[f"{prefix}_loss"] = self.sums[f"{prefix}_loss"] + loss.detach() * n
        self.sums[f"{prefix}_correct"] = (
            self.sums[f"{prefix}_correct"] + (logits.argmax(1) == labels).sum()
        )
        self.sums[f"{prefix}_n"] = self.sums[f"{prefix}_n"] + n

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for p in ("train", "val"):
            n = float(self.sums[f"{p}_n"])
            out[f"{p}_loss"] = float(self.sums[f"{p}_loss"]) / n if n else None
            out[f"{p}_acc"] = 100.0 * float(self.sums[f"{p}_correct"]) / n if n else None
        if out["train_loss"] is None:
            out["train_loss"], out["train_acc"] = math.nan, math.nan
        return out

    def state_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.sums.items()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.sums = dict(state)


@dataclass
class SearchResult:
    genotype: Genotype
    history: list[dict[str, Any]]
    run_dir: Path | None
    config: Config = field(repr=False)

    def __str__(self) -> str:
        from diffnas.spaces.render import render_genotype

        where = f"\nrun directory: {self.run_dir}" if self.run_dir else ""
        return render_genotype(self.genotype) + where


class Searcher:
    """Everything a search run holds: data, supernet, α, optimizers, parts, callbacks."""

    def __init__(
        self,
        config: Config,
        run: RunDir | None = None,
        callbacks: list[Callback] | None = None,
        dataset: Dataset | None = None,
    ) -> None:
        self.config = config
        self.run = run
        set_threads(config.threads)
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        s = config.search
        self.space = get_space(config.space)
        self.relaxation: Relaxation = build_part(RELAXATIONS, s.relaxation, "search.relaxation")
        self.schedule: Schedule = build_part(SCHEDULES, s.schedule, "search.schedule")
        self.updater: Updater = build_part(UPDATERS, s.updater, "search.updater")
        self.regularizers: list[Regularizer] = [
            build_part(REGULARIZERS, r, f"search.regularizers[{i}]")
            for i, r in enumerate(s.regularizers)
        ]
        self.derivation: Derivation = build_part(DERIVATIONS, s.derive, "search.derive")

        train_portion = config.data.train_portion or self.schedule.train_portion
        self.data: SearchData = search_data(
            config.data, config.seed, train_portion, self.device, dataset
        )
        ds = self.data.dataset
        self.model = self.space.build_supernet(
            config.supernet, ds.in_channels, ds.num_classes, ds.input_size
        ).to(self.device)
        self.arch = Architecture(
            self.model.arch_specs, self.relaxation.init_alpha, config.supernet.edge_norm
        ).to(self.device)
        self.w_opt = torch.optim.SGD(
            self.model.parameters(), lr=s.w_lr, momentum=s.w_momentum, weight_decay=s.w_weight_decay
        )
        self.a_opt = torch.optim.Adam(
            self.arch.parameters(),
            lr=s.arch_lr,
            betas=(s.arch_betas[0], s.arch_betas[1]),
            weight_decay=s.arch_weight_decay,
        )
        self.val_stream = CyclingStream(self.data.val)
        self.epochs = s.epochs
        self.epoch = 0  # the epoch in progress (or the next one, between epochs)
        self.step = 0  # weight steps done in the current epoch
        self.global_step = 0
        self.arch_steps = 0
        self.epoch_arch_steps = 0
        self.progress = 0.0
        self.elapsed_s = 0.0
        self.meters = Meters()
        self.history: list[dict[str, Any]] = []
        self.current_genotype: Genotype = self.derivation.derive(self)
        self.callbacks: list[Callback] = list(callbacks or [])
        for p in self.parts():
            p.setup(self)

    # ------------------------------------------------------------------ helpers for parts
    def parts(self) -> list[Any]:
        return [self.relaxation, self.schedule, self.updater, *self.regularizers, self.derivation]

    def arch_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.arch.parameters())

    @property
    def w_lr(self) -> float:
        return float(self.w_opt.param_groups[0]["lr"])

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data.train)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def forward(
        self, x: torch.Tensor, mix: MixWeights, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Supernet logits; with `params`, evaluated at those weights instead of the module's."""
        if params is None:
            return self.model(x, mix)
        return functional_call(self.model, params, (x, mix))

    def reg_loss(self, mix: MixWeights, ce: torch.Tensor) -> torch.Tensor:
        from diffnas.parts import RegContext

        total = torch.zeros((), device=self.device)
        if self.regularizers:
            ctx = RegContext(self.arch, mix, ce.detach(), self.progress, self)
            for r in self.regularizers:
                total = total + r.loss(ctx)
        return total

    def val_objective(
        self, mix: MixWeights, batch: Batch, params: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(validation loss = CE + regularizers, CE, logits)."""
        logits = self.forward(batch[0], mix, params)
        ce = F.cross_entropy(logits, batch[1])
        return ce + self.reg_loss(mix, ce), ce, logits

    def check_finite(self, loss: torch.Tensor, phase: str) -> None:
        if not bool(torch.isfinite(loss)):
            where = f" The last checkpoint in '{self.run.path}' is intact." if self.run else ""
            raise NumericalError(
                f"the {phase} loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step + 1} "
                f"(weight lr {self.w_lr:.3g}, arch lr {self.config.search.arch_lr:.3g}).{where} Lower "
                f"search.w_lr or search.arch_lr, keep search.grad_clip > 0, then resume "
                f"(--resume) or start again."
            )

    # ------------------------------------------------------------------ the two steps
    def arch_step(self, train_batch: Batch, val_batch: Batch) -> None:
        self.a_opt.zero_grad(set_to_none=True)
        result = self.updater.arch_grads(self, train_batch, val_batch)
        self.a_opt.step()
        self.relaxation.after_arch_step(self.arch)
        for r in self.regularizers:
            r.after_arch_step(self.arch)
        self.arch_steps += 1
        self.epoch_arch_steps += 1
        self.meters.add("val", result.ce, result.logits, result.labels)

    def weight_step(self, batch: Batch) -> None:
        x, y = batch
        with torch.no_grad():
            mix = self.relaxation.mix(self.arch)
        logits = self.model(x, mix)
        loss = F.cross_entropy(logits, y)
        self.check_finite(loss, "training")
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.search.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip > 0 else math.inf
        )
        self.w_opt.step()
        self.schedule.after_weight_step(
            float(norm) ** 2 if self.schedule.needs_grad_energy else None
        )
        self.meters.add("train", loss, logits, y)

    def lr_at(self, epoch: int) -> float:
        """Cosine from w_lr to w_lr_min over the epochs (DARTS: set once per epoch)."""
        s = self.config.search
        return cosine_lr(s.w_lr, s.w_lr_min, epoch + s.w_lr_epoch_offset, self.epochs)

    # ------------------------------------------------------------------ the loop
    def run_search(self) -> SearchResult:
        for cb in self.callbacks:
            cb.on_search_start(self)
        try:
            while self.epoch < self.epochs:
                self._run_epoch()
        finally:
            for cb in self.callbacks:
                cb.on_search_end(self)
        self.current_genotype = self.derivation.derive(self, final=True)
        genotype = self._stamp(self.current_genotype)
        if self.run is not None:
            genotype.save(self.run.genotype_path)
        return SearchResult(
            genotype, self.history, self.run.path if self.run else None, self.config
        )

    def _run_epoch(self) -> None:
        epoch = self.epoch
        for g in self.w_opt.param_groups:
            g["lr"] = self.lr_at(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(self)
        start = time.monotonic()
        steps = self.steps_per_epoch
        warm = epoch < self.config.search.warmup_epochs
        for batch in self.data.train.epoch(epoch, start=self.step):
            self.progress = (epoch + self.step / steps) / self.epochs
            self.relaxation.set_progress(self.progress)
            if not warm and self.schedule.arch_step_due():
                self.arch_step(batch, self.val_stream.next())
            self.weight_step(batch)
            self.step += 1
            self.global_step += 1
            self.elapsed_s += time.monotonic() - start
            start = time.monotonic()
            for cb in self.callbacks:
                cb.on_step_end(self)
        self.current_genotype = self.derivation.derive(self)
        metrics = self._epoch_metrics(epoch)
        # the epoch is complete: a checkpoint written now resumes at the next one
        self.epoch, self.step = epoch + 1, 0
        self.epoch_arch_steps = 0
        self.meters.reset()
        for cb in self.callbacks:
            cb.collect(self, metrics)
        self.history.append(metrics)
        for cb in self.callbacks:
            cb.on_epoch_end(self, metrics)

    def _epoch_metrics(self, epoch: int) -> dict[str, Any]:
        m: dict[str, Any] = {"epoch": epoch, **self.meters.summary()}
        m["lr"] = self.w_lr
        m["arch_steps"] = self.epoch_arch_steps
        m["time_s"] = round(self.elapsed_s, 3)
        m["param_free_share"] = self.space.param_free_share(self.current_genotype)
        m["genotype"] = self.current_genotype.to_json()
        for p in self.parts():
            m.update(p.metrics())
        if self.config.log.alpha:
            weights = self.relaxation.derivation_weights(self.arch)
            m["alpha"] = {
                k: [[round(float(v), 5) for v in row] for row in w.cpu()]
                for k, w in weights.items()
            }
        return m

    def _stamp(self, genotype: Genotype) -> Genotype:
        info = dict(genotype.info)
        info.update(
            {
                "method": self.config.method,
                "dataset": self.data.dataset.label,
                "epochs": self.epochs,
                "seed": self.config.seed,
            }
        )
        return Genotype(genotype.space, genotype.cells, genotype.name, info)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": to_dict(self.config),
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "arch_steps": self.arch_steps,
            "epoch_arch_steps": self.epoch_arch_steps,
            "elapsed_s": self.elapsed_s,
            "model": self.model.state_dict(),
            "arch": self.arch.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "parts": [p.state_dict() for p in self.parts()],
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks},
            "val_stream": self.val_stream.state_dict(),
            "meters": self.meters.state_dict(),
            "history": self.history,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"checkpoint version {state.get('version')} is not supported by this diffnas "
                f"(expects {CHECKPOINT_VERSION})"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.arch.load_state_dict(state["arch"])
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint does not match this run's supernet: {exc}") from None
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        for part, ps in zip(self.parts(), state["parts"]):
            part.load_state_dict(ps)
        for cb in self.callbacks:
            if cb.name in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][cb.name])
        self.val_stream.load_state_dict(state["val_stream"])
        self.meters.load_state_dict(state["meters"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.global_step, self.arch_steps = state["global_step"], state["arch_steps"]
        self.epoch_arch_steps, self.elapsed_s = state["epoch_arch_steps"], state["elapsed_s"]
        self.history = list(state["history"])
        self.current_genotype = self.derivation.derive(self)
        set_rng_state(state["rng"])


# =========================================================================== entry points
def default_callbacks(config: Config, progress: bool | None = None) -> list[Callback]:
    from diffnas.benchmarks import nb201
    from diffnas.callbacks.lookup import Nb201Lookup
    from diffnas.callbacks.progress import ProgressBar

    cbs: list[Callback] = []
    if config.space.name == "nb201" and config.log.lookup and nb201.available():
        cbs.append(Nb201Lookup())
    cbs.append(MetricsLogger())
    cbs.append(Checkpointer(config.checkpoint.every_s, config.checkpoint.every_steps))
    if config.log.progress if progress is None else progress:
        cbs.append(ProgressBar())
    return cbs


def _as_config(config: Config | dict[str, Any] | str | None, overrides: list[str] | None) -> Config:
    if isinstance(config, Config):
        return _override(config, overrides) if overrides else config
    if isinstance(config, dict):
        base = from_dict(Config, config)
        return _override(base, overrides or [])
    return load_config([config] if config else [], overrides)


def _override(config: Config, overrides: list[str]) -> Config:
    from diffnas.config import merge, parse_override, validate

    data = to_dict(config)
    for text in overrides:
        data = merge(data, parse_override(text))
    out = from_dict(Config, data)
    validate(out)
    return out


def search(
    config: Config | dict[str, Any] | str | None = None,
    *,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
    dataset: Dataset | None = None,
) -> SearchResult:
    """Run a search from a Config, a mapping, or a config file / preset name.

    Writes a run directory (out, config.out, or runs/<method>-<space>-<dataset>-<time>) and
    returns the derived genotype, the per-epoch history and the directory.
    """
    cfg = _as_config(config, overrides)
    run = RunDir.create(cfg, out if out is not None else cfg.out)
    cbs = default_callbacks(cfg, progress) + list(callbacks or [])
    return Searcher(cfg, run, cbs, dataset).run_search()


def resume(
    run_dir: str | Path,
    *,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
    dataset: Dataset | None = None,
) -> SearchResult:
    """Continue a run from its checkpoint; ends exactly where an uninterrupted run would."""
    run = RunDir.open(run_dir)
    if run.kind == "train":
        raise CheckpointError(
            f"'{run_dir}' is a training run, not a search; continue it with "
            f"`diffnas train --resume {run_dir}`"
        )
    cfg = run.load_config()
    state = run.load_checkpoint()
    cbs = default_callbacks(cfg, progress) + list(callbacks or [])
    searcher = Searcher(cfg, run, cbs, dataset)
    searcher.load_state_dict(state)
    run.keep_metrics(searcher.epoch)
    return searcher.run_search()
