"""The loop core that the search and the retraining share: epochs, steps, callbacks,
checkpoint state, RNG streams, resume, and the per-epoch meters.

A loop (`diffnas.search.Searcher`, `diffnas.retrain.train.Trainer`) says what one step
does, which batches an epoch has, what happens as an epoch begins and ends, and what of
its own goes into a checkpoint; `Loop` runs the epochs and owns everything else, so both
resume, log and checkpoint the same way:

    fit():  callbacks.on_search_start
            per epoch:  begin_epoch(epoch)            (learning rates, drop-path, ...)
                        callbacks.on_epoch_start
                        per step: before_step(); training_step(batch);
                                  check_losses() (every finite.every steps);
                                  callbacks.on_step_end
                        check_losses()
                        end_epoch(epoch) -> metrics   (derivation, parts' metrics, tests)
                        epoch += 1; step = 0; reset_epoch()
                        callbacks.collect; history.append; callbacks.on_epoch_end
            callbacks.on_search_end                   (also when the run fails)

`check_losses` reads the losses a step handed to `self.finite` (`diffnas.finite`): after
every `finite.every`-th step, at each epoch's end, before every checkpoint (`state_dict`)
and when the run fails; a non-finite one raises NumericalError naming its step.

Also here: `Mean` (the one per-epoch averager: sums on the tensor's device, one host sync
when the epoch's value is read), `Meters` (the loss/accuracy means of an epoch), `StepTimer`
and the entry-point helpers that start or resume a run in its run directory.
"""

from __future__ import annotations

import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from diffnas.errors import CheckpointError, NumericalError
from diffnas.finite import FiniteCheck, Watched, resolve_every
from diffnas.utils import (
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
    state_mismatch,
)

if TYPE_CHECKING:
    from diffnas.callbacks.base import Callback
    from diffnas.run import RunDir
    from diffnas.spaces.genotype import Genotype

Batch = tuple[torch.Tensor, torch.Tensor]
CHECKPOINT_VERSION = 1
R = TypeVar("R")
C = TypeVar("C")


# =========================================================================== measurement
# losses kept per step of the check interval before `watch_loss` checks them itself (a
# search step watches at most a few: training, validation; the loop checks every interval)
PENDING_CAP = 8


class Mean:
    """The mean of the values added since the last reset (e.g. one epoch's steps).

    The sum stays where the values are (a tensor on the device, or a float): adding never
    synchronises with the host; reading `value()` does, once. Weighted: `add(v * n, n)`
    averages per sample. The sum goes into a checkpoint as a float.
    """

    def __init__(self) -> None:
        self.sum: float | torch.Tensor = 0.0
        self.n: float | torch.Tensor = 0  # a tensor where counts stay on the device

    def add(self, value: float | torch.Tensor, n: float | torch.Tensor = 1) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach()
        self.sum = self.sum + value
        self.n += n

    def value(self) -> float | None:
        """The mean, read on the host (None without values)."""
        n = self.count()
        return float(self.sum) / n if n else None

    def total(self) -> float:
        return float(self.sum)

    def count(self) -> float:
        """The number of values (or their weights' sum; a tensor count is read here)."""
        return self.n if isinstance(self.n, int | float) else float(self.n)

    def reset(self) -> None:
        self.sum, self.n = 0.0, 0

    def pop(self) -> float | None:
        """The mean (None without values), and start over."""
        out = self.value()
        self.reset()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sum": float(self.sum), "n": self.count()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sum, self.n = float(state["sum"]), state["n"]


class Meters:
    """An epoch's mean losses and accuracies of training and validation batches."""

    KEYS = ("train_loss", "train_correct", "train_n", "val_loss", "val_correct", "val_n")
    PHASES = ("train", "val")

    def __init__(self) -> None:
        self.loss = {p: Mean() for p in self.PHASES}
        self.correct = {p: Mean() for p in self.PHASES}
        self.reset()

    def reset(self) -> None:
        self.scored = True
        for m in (*self.loss.values(), *self.correct.values()):
            m.reset()

    def add(
        self, prefix: str, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        n = labels.shape[0]
        self.loss[prefix].add(loss.detach() * n, n)
        if labels.dim() != 1 or labels.dtype.is_floating_point or logits.dim() != 2:
            self.scored = False  # a user loss on other targets: no accuracy
            return
        self.correct[prefix].add((logits.argmax(1) == labels).sum(), n)

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for p in self.PHASES:
            n = self.loss[p].count()
            out[f"{p}_loss"] = self.loss[p].value()
            scored = n and self.scored  # the correct counts are over the loss's samples
            out[f"{p}_acc"] = 100.0 * self.correct[p].total() / n if scored else None
        if out["train_loss"] is None:
            out["train_loss"], out["train_acc"] = math.nan, math.nan
        return out

    def state_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.PHASES:
            out[f"{p}_loss"] = self.loss[p].total()
            out[f"{p}_correct"] = self.correct[p].total()
            out[f"{p}_n"] = float(self.loss[p].count())
        return out

    def load_state_dict(self, state: dict[str, float]) -> None:
        for p in self.PHASES:
            n = state[f"{p}_n"]
            self.loss[p].load_state_dict({"sum": state[f"{p}_loss"], "n": n})
            # accuracies count every sample the losses count (unless unscored)
            self.correct[p].load_state_dict({"sum": state[f"{p}_correct"], "n": n})


class StepTimer:
    """Wall time of a loop's steps: `lap()` after each step adds the time since the last
    lap (or `restart()`); `sync` waits for the device first (benchmarks), the loop does not
    (no host sync in its steps)."""

    def __init__(self, device: torch.device | None = None, sync: bool = False) -> None:
        self.sync = sync and device is not None and device.type == "cuda"
        self.device = device
        self.total_s = 0.0
        self.restart()

    def restart(self) -> None:
        if self.sync:
            torch.cuda.synchronize(self.device)
        self._start = time.perf_counter()

    def lap(self) -> float:
        """Seconds since the last lap; added to `total_s`."""
        if self.sync:
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        dt, self._start = now - self._start, now
        self.total_s += dt
        return dt


class ThreadProbe:
    """Whether a run's steps are too small for several threads (`threads: null`).

    Every op of a step is an OpenMP parallel region ending in a barrier; on small tensors
    the second thread gains little or loses: the README's digits search (8x8 images) took
    2.2 s a step with 2 threads and the `diffnas` command's short spin, 4.6 s with idle
    threads asleep (OMP_WAIT_POLICY=PASSIVE), 2.4 s with 1 thread (2-core AMD EPYC, quiet).
    So the first steps of a run are timed: one warm-up step at n threads, then n, 1, n, 1;
    1 thread is kept unless n threads were more than `margin` faster (1 thread cannot be
    held up by other processes)."""

    ORDER = (0, 1, 0, 1)  # after the warm-up: n threads (0) or 1 (1)

    def __init__(self, n: int, margin: float = 0.1) -> None:
        self.n = n
        self.margin = margin
        self.seen = 0  # steps recorded, the warm-up included
        self.times: tuple[list[float], list[float]] = ([], [])

    def next_threads(self) -> int:
        i = self.seen - 1
        return 1 if 0 <= i < len(self.ORDER) and self.ORDER[i] else self.n

    def record(self, seconds: float) -> bool | None:
        """Add the step just taken; once every probe step is in, whether 1 thread wins."""
        i = self.seen - 1
        self.seen += 1
        if i >= 0:
            self.times[self.ORDER[i]].append(seconds)
        if self.seen <= len(self.ORDER):
            return None
        return min(self.times[1]) <= (1 + self.margin) * min(self.times[0])

    def note(self, one: bool) -> str:
        t_n, t_1 = min(self.times[0]), min(self.times[1])
        keep = "1 thread" if one else f"{self.n} threads"
        return (
            f"threads: a step took {t_n:.3g} s with {self.n} threads and {t_1:.3g} s with 1: "
            f"{keep} for this run (threads: null; --threads N sets a count)"
        )


# =========================================================================== the loop
class Loop(ABC):
    """Epochs of steps with callbacks, checkpoints and resume (module docstring)."""

    kind = "search"  # what the run directory holds: "search" or "train"
    # threads: null on the CPU: the load is read again after this many seconds of steps
    # (and at every epoch's start): 2 threads beside a process that arrived meanwhile run
    # a step ~1.5-2x slower than 1 thread (docs/engine.md, "Threads"); a read takes ~0.2 s
    RECHECK_S = 20.0

    def __init__(
        self,
        run: RunDir | None,
        callbacks: list[Callback] | None,
        threads: int | None,
        device: str,
        seed: int,
        epochs: int,
        finite_check_every: int | None = None,
    ) -> None:
        self.run = run
        # threads: null = the cores not busy with other processes, checked again every epoch
        self.auto_threads = threads is None
        self.threads = set_threads(threads)
        # threads: null on the CPU: the first steps decide whether 1 thread is faster
        # (ThreadProbe); None until they have, then for the rest of this process
        self.one_thread: bool | None = None
        self.device = resolve_device(device)
        if self.device.type == "cuda":  # fixed shapes every step: cuDNN picks its fastest
            torch.backends.cudnn.benchmark = True  # kernels once (as the DARTS code does)
        seed_everything(seed)
        self.epochs = epochs
        self.epoch = 0  # the epoch in progress (or the next one, between epochs)
        self.step = 0  # steps done in the current epoch
        self.global_step = 0
        self.elapsed_s = 0.0
        self.meters = Meters()
        # the losses steps hand to `watch_loss`, read on the host every `finite_check_every`
        # steps (`<kind>.finite_check_every`; null: by device, diffnas.finite)
        self.finite = FiniteCheck(resolve_every(finite_check_every, self.device))
        self.finite_key = f"{self.kind}.finite_check_every"  # the key that sets finite.every
        self.history: list[dict[str, Any]] = []
        self.callbacks: list[Callback] = list(callbacks or [])

    # ------------------------------------------------------------------ what a loop says
    config: Any  # the run's config (a search Config, a TrainConfig): checkpoints hold it
    current_genotype: Genotype  # written to genotype.json at each epoch's end

    @property
    @abstractmethod
    def steps_per_epoch(self) -> int: ...

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @abstractmethod
    def batches(self, epoch: int, start: int) -> Iterable[Batch]:
        """The epoch's batches from step `start` on (a resumed epoch continues mid-way)."""

    @abstractmethod
    def training_step(self, batch: Batch) -> None: ...

    def begin_epoch(self, epoch: int) -> None:
        """Before the epoch's first step (and its callbacks): learning rates, ..."""
        del epoch

    def before_step(self) -> None:  # noqa: B027 (optional hook)
        """Before each step (`self.step` is the step about to be taken)."""

    @abstractmethod
    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The epoch's metrics, after its last step."""

    def reset_epoch(self) -> None:
        """Clear per-epoch counters once the epoch's metrics are taken."""
        self.meters.reset()

    # checkpoints: what the loop adds of its own, and how it reads it back
    @abstractmethod
    def extra_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_extra_state(self, state: dict[str, Any]) -> None: ...

    def restored(self) -> None:  # noqa: B027 (optional hook)
        """After a checkpoint is loaded, before the RNG streams are restored."""

    def config_dict(self) -> dict[str, Any]:
        from diffnas.config import to_dict

        return to_dict(self.config)

    # ------------------------------------------------------------------ running
    def fit(self) -> None:
        """Run the remaining epochs (all of them, or from a checkpoint's position)."""
        for cb in self.callbacks:
            cb.on_search_start(self)
        try:
            while self.epoch < self.epochs:
                self.run_epoch()
        except Exception as failure:
            # a failure after a non-finite loss the check had not read yet (a part that
            # chokes on NaN): the NumericalError that names the first one is the cause
            if not isinstance(failure, NumericalError):
                self.check_losses()
            raise
        finally:
            for cb in self.callbacks:
                cb.on_search_end(self)

    def run_epoch(self) -> None:
        epoch = self.epoch
        probe = None
        adaptive = self.auto_threads and self.device.type == "cpu"  # threads follow the load
        if adaptive:
            self.threads = set_threads(1 if self.one_thread else None)
            if self.one_thread is None and self.threads > 1:
                probe = ThreadProbe(self.threads)  # (an epoch too short: again next epoch)
        self.begin_epoch(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(self)
        timer = StepTimer()
        since_check = 0.0
        for batch in self.batches(epoch, self.step):
            if probe is not None:
                set_threads(probe.next_threads())
            self.before_step()
            self.training_step(batch)
            self.step += 1
            self.global_step += 1
            lap = timer.lap()
            self.elapsed_s += lap
            since_check += lap
            if probe is not None:
                if (one := probe.record(lap)) is not None:
                    self.one_thread = one
                    self.threads = set_threads(1 if one else probe.n)
                    print(probe.note(one), file=sys.stderr, flush=True)
                    probe = None
            elif adaptive and not self.one_thread and since_check >= self.RECHECK_S:
                since_check = 0.0
                self.threads = set_threads(None)
            if self.finite.due(self.global_step):
                self.check_losses()
            for cb in self.callbacks:
                cb.on_step_end(self)
        self.check_losses()
        metrics = self.end_epoch(epoch)
        # the epoch is complete: a checkpoint written now resumes at the next one
        self.epoch, self.step = epoch + 1, 0
        self.reset_epoch()
        for cb in self.callbacks:
            cb.collect(self, metrics)
        self.history.append(metrics)
        for cb in self.callbacks:
            cb.on_epoch_end(self, metrics)

    # ------------------------------------------------------------------ failures
    def watch_loss(self, loss: torch.Tensor, phase: str) -> None:
        """Hand a loss of the step in progress to the finiteness check (no host read).

        Steps taken outside `run_epoch` (the speed and estimate benches call the steps
        directly) never reach the loop's checks: past `PENDING_CAP` per check interval the
        losses are checked here, so they neither pile up nor hide a non-finite loss."""
        self.finite.watch(loss, Watched(phase, self.epoch, self.step, self.global_step))
        if self.finite.pending > PENDING_CAP * self.finite.every:
            self.check_losses()

    def check_losses(self) -> None:
        """Raise NumericalError if a loss watched so far was not finite (one host read of
        the losses since the last check; nothing to read: no read)."""
        bad = self.finite.first_bad()
        if bad is not None:
            lrs, fix, retry = self.nonfinite_advice()
            self.numerical_error(bad.value, bad.where.phase, lrs, fix, retry, bad.where)

    def nonfinite_advice(self) -> tuple[str, str, str]:
        """(learning rates, fix, retry) of `numerical_error` for a loop that watches."""
        raise NotImplementedError(f"{type(self).__name__} watches losses but gives no advice")

    def numerical_error(
        self,
        loss: torch.Tensor | float,
        phase: str,
        lrs: str,
        fix: str,
        retry: str,
        at: Watched | None = None,
    ) -> None:
        """Raise NumericalError for a non-finite `loss`, saying how to continue: `fix` what
        to change, `retry` the `--set` of a resume that changes it. `at`: where the loss was
        computed (None: in the step in progress); a check that found it later says so."""
        if self.run is not None and self.run.checkpoint_path.exists():
            command = "search" if self.kind == "search" else "train"
            where = (
                f" The last checkpoint in '{self.run.path}' is intact: {fix}, and continue "
                f"from it with `diffnas {command} --resume {self.run.path} --set "
                f"{retry}, or start again."
            )
        elif self.run is not None:
            where = (
                f" No checkpoint was written yet, so nothing can be resumed: {fix}, "
                f"and start again."
            )
        else:
            where = f" {fix}."
        value = loss.item() if isinstance(loss, torch.Tensor) else loss
        epoch, step = (self.epoch, self.step) if at is None else (at.epoch, at.step)
        late = ""
        if at is not None and self.global_step > at.global_step + 1:
            later = self.global_step - at.global_step - 1
            late = (
                f"; found {later} step{'s' if later > 1 else ''} later: the losses are "
                f"checked every {self.finite.every} steps ({self.finite_key}) and "
                f"before each checkpoint"
            )
        raise NumericalError(
            f"the {phase} loss became {value} at epoch {epoch + 1}, step {step + 1} "
            f"({lrs}){late}.{where}"
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        self.check_losses()  # no checkpoint of weights a non-finite loss has reached
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "elapsed_s": self.elapsed_s,
            **self.extra_state(),
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks},
            "meters": self.meters.state_dict(),
            "history": self.history,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            what = "training checkpoint" if self.kind == "train" else "checkpoint"
            raise CheckpointError(
                f"{what} version {state.get('version')} is not supported by this diffnas "
                f"(expects {CHECKPOINT_VERSION})"
            )
        self.load_extra_state(state)
        for cb in self.callbacks:
            if cb.name in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][cb.name])
        self.meters.load_state_dict(state["meters"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.global_step, self.elapsed_s = state["global_step"], state["elapsed_s"]
        self.history = list(state["history"])
        self.restored()
        set_rng_state(state["rng"])


def load_module(module: torch.nn.Module, state: Any, message: Callable[[str], str]) -> None:
    """`module.load_state_dict(state)`, or a CheckpointError with `message(how they differ)`."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise CheckpointError(message(state_mismatch(module, state))) from None


# =========================================================================== entry points
def standard_callbacks(
    loggers: list[str], log_every_steps: int, every_s: float, every_steps: int, progress: bool
) -> list[Callback]:
    """The metrics log, the configured loggers, the checkpoint and the progress bar."""
    from diffnas.callbacks.base import Checkpointer, MetricsLogger
    from diffnas.callbacks.loggers import build_loggers
    from diffnas.callbacks.progress import ProgressBar

    cbs: list[Callback] = [
        MetricsLogger(),
        # loggers before the checkpoint: what a checkpoint holds has been logged
        *build_loggers(loggers, log_every_steps),
        Checkpointer(every_s, every_steps),
    ]
    if progress:
        cbs.append(ProgressBar())
    return cbs


L = TypeVar("L", bound=Loop)


def start_run(run: RunDir | None, go: Callable[[], R]) -> R:
    """Run `go` in a new run directory (None: a process that writes none); a start that
    fails before its first checkpoint leaves nothing behind."""
    try:
        return go()
    except BaseException:
        if run is not None:
            run.discard()
        raise
    finally:
        if run is not None:
            run.release()


def resume_run(
    run: RunDir | None,
    load: Callable[[], tuple[dict[str, Any], C]],
    build: Callable[[dict[str, Any], C], L],
    finish: Callable[[L], R],
) -> R:
    """Continue the locked `run` from its checkpoint: `load()` gives the checkpoint and
    the config it continues under, `build(state, config)` makes the loop, which loads the
    state; metrics.jsonl is rebuilt from the checkpoint; then `finish(loop)`. `run` None:
    a process that writes nothing (a data-parallel rank > 0; `load` gets rank 0's)."""
    try:
        state, config = load()
        loop = build(state, config)
        loop.load_state_dict(state)
        if run is not None:
            run.write_metrics(loop.history)
        return finish(loop)
    finally:
        if run is not None:
            run.release()
