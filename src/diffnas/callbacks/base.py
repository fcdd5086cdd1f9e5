"""Callback hooks (no-op defaults) and the standard callbacks: metrics log and checkpoints.

Callbacks keep logging, checkpointing and lookups out of the search loop; each may carry
state that goes into the checkpoint.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffnas.search import Searcher


class Callback:
    name = "callback"

    def on_search_start(self, s: Searcher) -> None: ...

    def on_epoch_start(self, s: Searcher) -> None: ...

    def on_step_end(self, s: Searcher) -> None: ...

    def collect(self, s: Searcher, metrics: dict[str, Any]) -> None:
        """Add values to the epoch's metrics before they are written."""

    def on_epoch_end(self, s: Searcher, metrics: dict[str, Any]) -> None: ...

    def on_search_end(self, s: Searcher) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MetricsLogger(Callback):
    """Appends each epoch's metrics to metrics.jsonl and rewrites genotype.json."""

    name = "metrics"

    def on_epoch_end(self, s: Searcher, metrics: dict[str, Any]) -> None:
        if s.run is None:
            return
        s.run.append_metrics(metrics)
        s.current_genotype.save(s.run.genotype_path)


class Checkpointer(Callback):
    """Writes checkpoint.pt atomically at every epoch's end and every `every_s` seconds."""

    name = "checkpoint"

    def __init__(self, every_s: float = 300.0, every_steps: int = 0) -> None:
        self.every_s = every_s
        self.every_steps = every_steps
        self._last = time.monotonic()

    def on_search_start(self, s: Searcher) -> None:
        self._last = time.monotonic()

    def on_step_end(self, s: Searcher) -> None:
        if s.run is None:
            return
        due_steps = self.every_steps and s.global_step % self.every_steps == 0
        due_time = self.every_s and time.monotonic() - self._last >= self.every_s
        if due_steps or due_time:
            self.save(s)

    def on_epoch_end(self, s: Searcher, metrics: dict[str, Any]) -> None:
        if s.run is not None:
            self.save(s)

    def save(self, s: Searcher) -> None:
        assert s.run is not None
        s.run.save_checkpoint(s.state_dict())
        self._last = time.monotonic()
