"""Shared base of the DARTS-PRIME schedules: counts decisions for the logged step ratio.

`arch_step_ratio` in metrics.jsonl = architecture steps / weight steps of the epoch.
"""

from __future__ import annotations

from typing import Any

from diffnas.errors import ConfigError
from diffnas.parts import Schedule


class CountingSchedule(Schedule):
    """Counts the decisions of the current epoch (for the logged architecture-step ratio)."""

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.asked = 0  # decisions this epoch (= weight steps after warm-up)
        self.taken = 0  # architecture steps this epoch

    def _count(self, due: bool) -> bool:
        self.asked += 1
        self.taken += int(due)
        return due

    def _ratio_metrics(self) -> dict[str, Any]:
        """Architecture steps per weight step this epoch; closes the epoch's count."""
        ratio = self.taken / self.asked if self.asked else None
        self.asked = self.taken = 0
        return {"arch_step_ratio": None if ratio is None else round(ratio, 6)}

    def state_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "taken": self.taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.asked, self.taken = int(state["asked"]), int(state["taken"])


def check_positive(value: float, name: str, param: str) -> None:
    if not value > 0:
        raise ConfigError(
            f"search.schedule ({name}): {param} must be > 0 weight steps, got {value}"
        )
