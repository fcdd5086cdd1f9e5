"""Callback hooks (no-op defaults) and the standard callbacks: metrics log and checkpoints.

Callbacks keep logging, checkpointing and lookups out of the loops; each may carry state
that goes into the checkpoint. The standard ones serve searches and training runs alike.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from diffnas.loop import Meters
    from diffnas.run import RunDir
    from diffnas.spaces.genotype import Genotype


class Loop(Protocol):
    """What the standard callbacks use of a loop (`diffnas.loop.Loop`: a `Searcher` or a
    `Trainer`)."""

    run: RunDir | None
    epoch: int  # the epoch in progress (or the next one, between epochs)
    epochs: int
    global_step: int
    meters: Meters
    current_genotype: Genotype

    @property
    def total_steps(self) -> int: ...

    def state_dict(self) -> dict[str, Any]: ...


L = TypeVar("L")


class Callback(Generic[L]):
    """Hooks of a run (search or training); `L` is the loop type a callback needs.

    `on_search_start` / `on_search_end` bracket any run, training runs included. In a
    search the order is (pinned by tests/test_hook_order.py; callbacks in list order at
    each hook; `diffnas.search` puts the default ones first):

        on_search_start
        per epoch:  on_epoch_start
                    per step: on_step_end   (after the step's parts' hooks)
                    collect                 (the parts' metrics are in `metrics` already)
                    on_epoch_end            (the loop is at the next epoch: a checkpoint
                                             written here resumes there)
        on_search_end                       (also when the run fails; before the final
                                             derivation)

    A resumed run calls `load_state_dict` before `on_search_start` and continues at the
    checkpoint's epoch and step.
    """

    name = "callback"

    def on_search_start(self, s: L) -> None: ...

    def on_epoch_start(self, s: L) -> None: ...

    def on_step_end(self, s: L) -> None: ...

    def collect(self, s: L, metrics: dict[str, Any]) -> None:
        """Add values to the epoch's metrics before they are written."""

    def on_epoch_end(self, s: L, metrics: dict[str, Any]) -> None: ...

    def on_search_end(self, s: L) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MetricsLogger(Callback[Loop]):
    """Appends each epoch's metrics to metrics.jsonl and rewrites genotype.json."""

    name = "metrics"

    def on_epoch_end(self, s: Loop, metrics: dict[str, Any]) -> None:
        if s.run is None:
            return
        s.run.append_metrics(metrics)
        s.current_genotype.save(s.run.genotype_path)


class Checkpointer(Callback[Loop]):
    """Writes checkpoint.pt atomically at every epoch's end and every `every_s` seconds."""

    name = "checkpoint"

    def __init__(self, every_s: float = 300.0, every_steps: int = 0) -> None:
        self.every_s = every_s
        self.every_steps = every_steps
        self._last = time.monotonic()

    def on_search_start(self, s: Loop) -> None:
        self._last = time.monotonic()

    def on_step_end(self, s: Loop) -> None:
        if s.run is None:
            return
        due_steps = self.every_steps and s.global_step % self.every_steps == 0
        due_time = self.every_s and time.monotonic() - self._last >= self.every_s
        if due_steps or due_time:
            self.save(s)

    def on_epoch_end(self, s: Loop, metrics: dict[str, Any]) -> None:
        if s.run is not None:
            self.save(s)

    def save(self, s: Loop) -> None:
        assert s.run is not None
        s.run.save_checkpoint(s.state_dict())
        self._last = time.monotonic()
