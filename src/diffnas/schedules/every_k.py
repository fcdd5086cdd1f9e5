"""The fixed DARTS-PRIME schedule: one architecture step every k weight steps.

The train/validation split matches: one validation batch per k training batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffnas.registry import SCHEDULES
from diffnas.schedules.counting import CountingSchedule, check_positive


@SCHEDULES.register("every_k")
class EveryK(CountingSchedule):
    """The fixed alternative: one architecture step every k weight steps (before the first)."""

    @dataclass
    class Params:
        k: int = 10

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        check_positive(self.params.k, "every_k", "k")
        self.train_portion = 1.0 - 1.0 / (1.0 + self.params.k)
        self.calls = 0  # decisions so far (the whole search)

    def arch_step_due(self) -> bool:
        due = self.calls % self.params.k == 0
        self.calls += 1
        return self._count(due)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.calls = int(state["calls"])

    def metrics(self) -> dict[str, Any]:
        return self._ratio_metrics()
