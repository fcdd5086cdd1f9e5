"""The search: builds a run's parts from its config and runs the bilevel loop.

The loop knows no method: the schedule says when to take an architecture step, the
updater computes ∇α, the relaxation and regularizers shape the objective, callbacks log
and checkpoint. Resuming restores every part's state and all RNG streams.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch.func import functional_call

from diffnas import distributed
from diffnas.callbacks.base import Callback
from diffnas.config import Config, from_dict, load_config, to_dict, validate
from diffnas.data import CyclingStream, SearchData, search_data
from diffnas.data.datasets import Dataset
from diffnas.errors import CheckpointError
from diffnas.loop import (
    CHECKPOINT_VERSION,
    Loop,
    Meters,
    load_module,
    resume_run,
    standard_callbacks,
    start_run,
)
from diffnas.parts import (
    ArchStepResult,
    Derivation,
    Regularizer,
    Relaxation,
    Schedule,
    Updater,
    build_part,
)
from diffnas.precision import Precision, resolve_precision
from diffnas.registry import DERIVATIONS, REGULARIZERS, RELAXATIONS, SCHEDULES, UPDATERS
from diffnas.run import RESUME_MAY_CHANGE_SEARCH, RunDir
from diffnas.spaces import Space, get_space
from diffnas.spaces.genotype import Genotype
from diffnas.supernet.aux_skip import AuxSkip
from diffnas.supernet.base import Architecture
from diffnas.supernet.mixed import MixWeights
from diffnas.utils import cosine_lr

Batch = tuple[torch.Tensor, torch.Tensor]
__all__ = ["CHECKPOINT_VERSION", "Meters", "SearchResult", "Searcher", "resume", "search"]


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


class Searcher(Loop):
    """Everything a search run holds: data, supernet, α, optimizers, parts, callbacks.

    The epochs, callbacks, checkpoints and resume are `diffnas.loop.Loop`'s; a step here is
    a weight step and, when the schedule says so, an architecture step. Parts see this
    object as their `diffnas.parts.PartContext` (what they may read)."""

    def __init__(
        self,
        config: Config,
        run: RunDir | None = None,
        callbacks: list[Callback] | None = None,
        dataset: Dataset | None = None,
        *,
        space: Space | None = None,
        data: SearchData | None = None,
        loss: Callable[[Any, Any], torch.Tensor] | None = None,
    ) -> None:
        """`space`, `data`, `loss`: a user model's space, user data streams, a user loss
        (diffnas.choices, diffnas.data.user); None: from the config, cross-entropy."""
        if space is None:  # a user model's config names no registered space (diffnas.choices)
            validate(config)  # a Config built or changed in Python gets the loader's checks
        self.config = config
        s = config.search
        distributed.init()  # under torchrun: join its group (and take this rank's GPU)
        super().__init__(
            run,
            callbacks,
            config.threads,
            config.device,
            config.seed,
            s.epochs,
            s.finite_check_every,
        )
        # the arithmetic of the steps' forward passes (diffnas.precision); `auto` decided here
        self.precision: Precision = resolve_precision(config.search.precision, self.device)
        self.space = space if space is not None else get_space(config.space)
        check_config = getattr(self.space, "check_config", None)  # a user model's
        if check_config is not None:
            check_config(config)
        self.loss_fn = loss if loss is not None else F.cross_entropy
        self.relaxation: Relaxation = build_part(RELAXATIONS, s.relaxation, "search.relaxation")
        self.schedule: Schedule = build_part(SCHEDULES, s.schedule, "search.schedule")
        self.updater: Updater = build_part(UPDATERS, s.updater, "search.updater")
        self.regularizers: list[Regularizer] = [
            build_part(REGULARIZERS, r, f"search.regularizers[{i}]")
            for i, r in enumerate(s.regularizers)
        ]
        self.derivation: Derivation = build_part(DERIVATIONS, s.derive, "search.derive")

        train_portion = config.data.train_portion or self.schedule.train_portion
        self.data: SearchData = data or search_data(
            config.data, config.seed, train_portion, self.device, dataset
        )
        ds = self.data.dataset
        self.model = self.space.build_supernet(
            config.supernet, ds.in_channels, ds.num_classes, ds.input_size
        ).to(self.device)
        self.aux_skip = AuxSkip(self.model, config.supernet, s.epochs)  # DARTS-'s β
        # search.compile: the cells compiled (supernet/compiled.py); timed at the first step
        self.compile_note: str | None = None
        if s.compile != "off":
            from diffnas.supernet.compiled import compile_cells

            cache = config.data.cache_dir or (run.path / "cache" if run is not None else None)
            budget = s.compile_memory_budget
            if budget is None:  # bf16 activations are half the bytes: keep them all
                budget = 1.0 if self.precision.name == "bf16" else 0.5
            n = compile_cells(self.model, s.compile_backend, cache, s.compile_mode, budget)
            mode = "" if s.compile_mode == "default" else f", mode {s.compile_mode}"
            self.compile_note = (
                f"compile: {n} search cells with {s.compile_backend}{mode}, "
                f"activation memory budget {budget:g}"
            )
        self.arch = Architecture(
            self.model.arch_specs, self.relaxation.init_alpha, config.supernet.edge_norm
        ).to(self.device)
        self.w_opt = torch.optim.SGD(
            self.model.parameters(),
            lr=s.w_lr,
            momentum=s.w_momentum,
            weight_decay=s.w_weight_decay,
            nesterov=s.w_nesterov,
        )
        self.a_opt = torch.optim.Adam(
            self.arch.parameters(),
            lr=s.arch_lr,
            betas=(s.arch_betas[0], s.arch_betas[1]),
            weight_decay=s.arch_weight_decay,
        )
        self.val_stream = CyclingStream(self.data.val)
        self._params: list[torch.nn.Parameter] | None = None  # `_weight_params`
        self.arch_steps = 0
        self.epoch_arch_steps = 0
        self.progress = 0.0
        self.current_genotype: Genotype = self.derivation.derive(self)
        for p in self.parts():
            p.setup(self)
        distributed.attach(self)  # under torchrun: shard the batches, sum the meters

    # ------------------------------------------------------------------ helpers for parts
    def parts(self) -> list[Any]:
        return [self.relaxation, self.schedule, self.updater, *self.regularizers, self.derivation]

    def named_parts(self) -> list[tuple[str, Any]]:
        """(name, part) in `parts()` order; the name (the part's registered name; a
        regularizer named twice gets `#i`, its index in search.regularizers) prefixes the
        part's metrics: `informed/threshold`."""
        s = self.config.search
        regs = [r.name for r in s.regularizers]
        names = [s.relaxation.name, s.schedule.name, s.updater.name]
        names += [f"{n}#{i}" if regs.count(n) > 1 else n for i, n in enumerate(regs)]
        names.append(s.derive.name)
        return list(zip(names, self.parts()))

    def arch_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.arch.parameters())

    @property
    def w_lr(self) -> float:
        return float(self.w_opt.param_groups[0]["lr"])

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data.train)

    def forward(
        self, x: torch.Tensor, mix: MixWeights, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Supernet logits; with `params`, evaluated at those weights instead of the module's.

        Under bf16 (search.precision) the pass runs in bfloat16 autocast and the logits come
        back as float32, so that every loss is computed in float32."""
        with self.autocast():
            if params is None:
                out = self.model(x, mix)
            else:
                out = functional_call(self.model, params, (x, mix))
        if self.precision.bf16 and isinstance(out, torch.Tensor) and out.is_floating_point():
            out = out.float()
        return out

    def autocast(self) -> Any:
        """The precision's autocast (a no-op under fp32). The backward passes are called
        inside it too, though only a CPU backward runs on this thread (a CUDA backward runs
        on the device's own thread, outside it): the engine's autograd Functions recompute
        convolutions in their backward under the autocast their forward saw, on any device
        (kernels._amp_backward, torch.amp.custom_bwd's rule)."""
        return self.precision.autocast(self.device)

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[None]:
        """float32 inside, whatever search.precision says (a finite difference needs it)."""
        saved = self.precision
        self.precision = Precision("fp32", saved.reason)
        try:
            yield
        finally:
            self.precision = saved

    def reg_loss(self, mix: MixWeights, ce: torch.Tensor) -> torch.Tensor:
        from diffnas.parts import RegContext

        total = torch.zeros((), device=self.device)
        if self.regularizers:
            ctx = RegContext(self.arch, mix, distributed.mean(ce.detach()), self.progress, self)
            for r in self.regularizers:
                total = total + r.loss(ctx)
        return total

    def val_objective(
        self, mix: MixWeights, batch: Batch, params: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(validation loss = CE + regularizers, CE, logits)."""
        logits = self.forward(batch[0], mix, params)
        ce = self.loss_fn(logits, batch[1])
        return ce + self.reg_loss(mix, ce), ce, logits

    def check_finite(self, loss: torch.Tensor, phase: str) -> None:
        """Hand a loss of this step to the finiteness check: read on the host after every
        `search.finite_check_every`-th step, at each epoch's end and before each checkpoint
        (diffnas.finite); a non-finite one then raises NumericalError naming this step."""
        self.watch_loss(loss, phase)

    def nonfinite_advice(self) -> tuple[str, str, str]:
        s = self.config.search
        return (
            f"weight lr {self.w_lr:.3g}, arch lr {s.arch_lr:.3g}",
            "Lower search.w_lr or search.arch_lr and keep search.grad_clip > 0",
            f"search.w_lr={s.w_lr / 2:g}` (or --set search.arch_lr=...)",
        )

    # ------------------------------------------------------------------ the two steps
    def arch_grads(self, train_batch: Batch, val_batch: Batch) -> ArchStepResult:
        """The updater's architecture gradients (left in α's .grad), in float32 under
        search.precision=bf16_weights and in the run's precision otherwise."""
        fp32 = self.full_precision() if self.precision.arch_fp32 else contextlib.nullcontext()
        with fp32:
            return self.updater.arch_grads(self, train_batch, val_batch)

    def arch_step(self, train_batch: Batch, val_batch: Batch) -> None:
        self.a_opt.zero_grad(set_to_none=True)
        result = self.arch_grads(train_batch, val_batch)
        distributed.average_grads(self.arch_parameters())
        self.a_opt.step()
        self.relaxation.after_arch_step(self.arch)
        for r in self.regularizers:
            r.after_arch_step(self.arch)
        self.arch_steps += 1
        self.epoch_arch_steps += 1
        self.meters.add("val", result.ce, result.logits, result.labels)

    def weight_step(self, batch: Batch) -> None:
        x, y = batch
        with_alpha = self.config.search.grad_clip_alpha
        with torch.set_grad_enabled(with_alpha):
            mix = self.relaxation.mix(self.arch)
        for r in self.regularizers:  # e.g. SDARTS: perturbed op weights for this step only
            mix = r.weight_mix(self, mix, batch)
        logits = self.forward(x, mix)
        loss = self.loss_fn(logits, y)
        self.check_finite(loss, "training")
        self.w_opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss.backward()  # with_alpha: α's gradient adds to the last architecture step's
        clip = self.config.search.grad_clip
        params = self._weight_params()
        if with_alpha:
            params = params + [p for p in self.arch_parameters() if p.grad is not None]
        distributed.average_grads(params)
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        self.w_opt.step()
        self.schedule.after_weight_step(
            float(norm) ** 2 if self.schedule.needs_grad_energy else None
        )
        self.meters.add("train", loss, logits, y)

    def _weight_params(self) -> list[torch.nn.Parameter]:
        """The supernet's parameters, listed once per epoch (`begin_epoch`): a part that
        changes the model (DrNAS's widening, supernet/widen.py, keeps the parameters and
        replaces their data) does so at an epoch's end."""
        if self._params is None:
            self._params = list(self.model.parameters())
        return self._params

    def search_step(self, batch: Batch, warm: bool = False) -> None:
        """One step of the loop: the weight step on `batch` and, when the schedule says so
        (never during warm-up), an architecture step on the next validation batch, before
        the weight step or after it (`schedule.weight_first`)."""
        due = not warm and self.schedule.arch_step_due()
        start = time.perf_counter()
        if due and not self.schedule.weight_first:
            self.arch_step(batch, self.val_stream.next())
        self.weight_step(batch)
        if due and self.schedule.weight_first:
            self.arch_step(batch, self.val_stream.next())
        if self.compile_note is not None and due:  # the first step that compiled both
            took = time.perf_counter() - start
            print(f"{self.compile_note}: first step {took:.1f} s", file=sys.stderr, flush=True)
            self.compile_note = None

    def lr_at(self, epoch: int) -> float:
        """Cosine from w_lr to w_lr_min over the epochs (DARTS: set once per epoch)."""
        s = self.config.search
        return cosine_lr(s.w_lr, s.w_lr_min, epoch + s.w_lr_epoch_offset, self.epochs)

    # ------------------------------------------------------------------ the loop
    def run_search(self) -> SearchResult:
        if self.config.search.precision != "fp32":  # said once per (re)start; fp32 is silent
            print(
                f"precision: {self.precision.name} ({self.precision.reason})",
                file=sys.stderr,
                flush=True,
            )
        self.fit()
        self.current_genotype = self.derivation.derive(self, final=True)
        genotype = self._stamp(self.current_genotype)
        if self.run is not None:
            genotype.save(self.run.genotype_path)
            save_choices = getattr(self.space, "save_choices", None)  # a user model's
            if save_choices is not None:
                save_choices(genotype, self.run.path)
        return SearchResult(
            genotype, self.history, self.run.path if self.run else None, self.config
        )

    def begin_epoch(self, epoch: int) -> None:
        self._params = None  # listed again at the first step (`_weight_params`)
        for g in self.w_opt.param_groups:
            g["lr"] = self.lr_at(epoch)
        self.aux_skip.begin_epoch(epoch)

    def batches(self, epoch: int, start: int) -> Iterable[Batch]:
        return self.data.train.epoch(epoch, start=start)

    def before_step(self) -> None:
        self.progress = (self.epoch + self.step / self.steps_per_epoch) / self.epochs
        self.relaxation.set_progress(self.progress)

    def training_step(self, batch: Batch) -> None:
        self.search_step(batch, self.epoch < self.config.search.warmup_epochs)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        self.current_genotype = self.derivation.derive(self)
        return self._epoch_metrics(epoch)

    def reset_epoch(self) -> None:
        super().reset_epoch()
        self.epoch_arch_steps = 0

    def _epoch_metrics(self, epoch: int) -> dict[str, Any]:
        m: dict[str, Any] = {"epoch": epoch, **self.meters.summary()}
        m["lr"] = self.w_lr
        m.update(self.aux_skip.metrics(epoch))
        m["arch_steps"] = self.epoch_arch_steps
        m["time_s"] = round(self.elapsed_s, 3)
        if self.config.search.precision != "fp32":  # the precision `auto` chose, on record
            m["precision"] = self.precision.name
        m["param_free_share"] = self.space.param_free_share(self.current_genotype)
        m["genotype"] = self.current_genotype.to_json()
        for name, p in self.named_parts():  # metrics() once per epoch: it may reset means
            m.update({f"{name}/{k}": v for k, v in p.metrics().items()})
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
    def extra_state(self) -> dict[str, Any]:
        return {
            "arch_steps": self.arch_steps,
            "epoch_arch_steps": self.epoch_arch_steps,
            "model": self.model.state_dict(),
            "arch": self.arch.state_dict(),
            # the last architecture step's gradient, which the next weight step's clipping
            # counts with search.grad_clip_alpha (None where no step has been taken)
            "arch_grads": [
                None if p.grad is None else p.grad.detach().clone() for p in self.arch_parameters()
            ],
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "parts": [p.state_dict() for p in self.parts()],
            "val_stream": self.val_stream.state_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for name, module in (("model", self.model), ("arch", self.arch)):
            load_module(
                module,
                state[name],
                lambda how, name=name: (  # type: ignore[misc]
                    f"checkpoint does not match this run's supernet ({name}: {how}): the run's "
                    f"config.yaml no longer describes the network its checkpoint holds; "
                    f"restore config.yaml, or start a new run"
                ),
            )
        for p, g in zip(self.arch_parameters(), state.get("arch_grads", [])):
            p.grad = None if g is None else g.to(p.device)
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        # the learning rates of this config (resume may lower them to recover from a NaN):
        # the same floats as the checkpoint's when the config is unchanged
        for g in self.w_opt.param_groups:
            g["lr"] = self.lr_at(state["epoch"])
        for g in self.a_opt.param_groups:
            g["lr"] = self.config.search.arch_lr
        for part, ps in zip(self.parts(), state["parts"]):
            part.load_state_dict(ps)
        self.val_stream.load_state_dict(state["val_stream"])
        self.arch_steps = state["arch_steps"]
        self.epoch_arch_steps = state["epoch_arch_steps"]

    def restored(self) -> None:
        self.current_genotype = self.derivation.derive(self)


# =========================================================================== entry points
def default_callbacks(config: Config, progress: bool | None = None) -> list[Callback]:
    from diffnas.callbacks.lookup import Nb201Lookup
    from diffnas.nasbench import nb201

    cbs: list[Callback] = []
    if not distributed.is_main():  # ranks > 0 write nothing
        return cbs
    if (
        config.space.name == "nb201"
        and config.log.lookup
        and (nb201.available() or nb201.official_file() is not None)
    ):
        cbs.append(Nb201Lookup())
    show = config.log.progress if progress is None else progress
    c = config.checkpoint
    return cbs + standard_callbacks(
        config.log.loggers, config.log.every_steps, c.every_s, c.every_steps, show
    )


def _as_config(config: Config | dict[str, Any] | str | None, overrides: list[str] | None) -> Config:
    if isinstance(config, Config):
        if overrides:
            return _override(config, overrides)
        validate(config)  # before the run directory is made
        return config
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
    train_data: Any = None,
    val_data: Any = None,
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
    method: Config | dict[str, Any] | str | None = None,
) -> SearchResult:
    """Run a search from a Config, a mapping, or a config file / preset name.

    Writes a run directory (out, config.out, or runs/<method>-<space>-<dataset>-<time>) and
    returns the derived genotype, the per-epoch history and the directory.

    Bring your own model and data (docs/user_models.md): `config` may be a user nn.Module
    with diffnas.choices (then `method` names the preset, default darts), and
    `train_data` / `val_data` torch Datasets or DataLoaders, `loss` a loss(outputs,
    targets) (default cross-entropy).
    """
    from diffnas.model_search import is_user_target, search_user

    if train_data is None and dataset is not None and is_user_target(None, dataset):
        train_data, dataset = dataset, None  # a torch Dataset/DataLoader given as dataset=
    if train_data is not None or is_user_target(config, dataset):
        return search_user(
            config,
            method=method,
            overrides=overrides,
            out=out,
            callbacks=callbacks,
            progress=progress,
            train_data=train_data,
            val_data=val_data,
            loss=loss,
        )
    cfg = _as_config(config, overrides)
    # a run larger than the digits default: refuse it if it cannot fit (one process: the
    # probe's single-process figures overstate what each of several ranks needs)
    if dataset is None and distributed.world_size() == 1:
        from diffnas.bench.estimate import preflight

        preflight(cfg)
    path = out if out is not None else cfg.out
    run = distributed.on_main(lambda: RunDir.create(cfg, path))  # None on ranks > 0

    def go() -> SearchResult:
        cbs = default_callbacks(cfg, progress) + list(callbacks or [])
        return Searcher(cfg, run, cbs, dataset).run_search()

    return start_run(run, go)


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config `resume(run_dir, overrides=...)` would continue under (refusing changes
    of keys that may not change on resume); loads the checkpoint, runs nothing."""
    from diffnas.config import validate

    run = _search_run(run_dir)
    state = run.load_checkpoint()
    return run.resume_config(
        state, Config, overrides, RESUME_MAY_CHANGE_SEARCH, validate, write=False
    )


def _search_run(run_dir: str | Path, lock: bool = False, user_model: bool = False) -> RunDir:
    run = RunDir.open(run_dir)
    from diffnas.choices import MODEL_SPACE

    raw = yaml.safe_load(run.config_path.read_text()) or {}
    space = raw.get("space") if isinstance(raw, dict) else None
    if not user_model and isinstance(space, dict) and space.get("name") == MODEL_SPACE:
        raise CheckpointError(
            f"'{run_dir}' searched a user model from Python; continue it with "
            f"diffnas.resume(run_dir, model=YourModel(), train_data=...) (docs/user_models.md)"
        )
    if run.kind == "train":
        raise CheckpointError(
            f"'{run_dir}' is a training run, not a search; continue it with "
            f"`diffnas train --resume {run_dir}`"
        )
    return RunDir.open(run_dir, lock=True) if lock else run


def resume(
    run_dir: str | Path,
    *,
    overrides: list[str] | None = None,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
    dataset: Dataset | None = None,
    model: torch.nn.Module | None = None,
    train_data: Any = None,
    val_data: Any = None,
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
) -> SearchResult:
    """Continue a run from its checkpoint; ends exactly where an uninterrupted run would.

    `overrides` (`key=value`) may change only the keys of `RESUME_MAY_CHANGE_SEARCH`
    (threads, epochs, learning rates, ...); metrics.jsonl is rebuilt from the checkpoint.
    A search of a user model made in Python continues with the same `model` class (a fresh
    instance), `train_data`, `val_data` and `loss` given again (docs/user_models.md).
    """
    from diffnas.config import validate

    if model is not None:
        from diffnas.errors import ConfigError
        from diffnas.model_search import resume_user

        if overrides:
            raise ConfigError(
                "a user-model search resumes under its own config: drop overrides, or start "
                "a new diffnas.search(model, ...) with the settings you want"
            )
        return resume_user(
            run_dir,
            model,
            train_data=train_data,
            val_data=val_data,
            loss=loss,
            callbacks=callbacks,
            progress=progress,
        )

    run = distributed.on_main(lambda: _search_run(run_dir, lock=True))  # None on ranks > 0

    def read() -> tuple[dict[str, Any], Config]:
        assert run is not None
        state = run.load_checkpoint()
        return state, run.resume_config(
            state, Config, overrides, RESUME_MAY_CHANGE_SEARCH, validate
        )

    def build(state: dict[str, Any], cfg: Config) -> Searcher:
        cbs = default_callbacks(cfg, progress) + list(callbacks or [])
        return Searcher(cfg, run, cbs, dataset)

    # the checkpoint and config are read by rank 0 and sent to the others
    return resume_run(run, lambda: distributed.shared(read), build, Searcher.run_search)
