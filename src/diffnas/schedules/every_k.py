"""The fixed DARTS-PRIME schedule: one architecture step every k weight steps.

As the public code without `--dyno_schedule`: an architecture step before the weight step of
epoch step s when (s + 1) % k == 0, the count restarting with each epoch. The
train/validation split matches `--dyno_split`: one validation batch per k training batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diffnas.registry import SCHEDULES
from diffnas.schedules.counting import CountingSchedule, check_positive

if TYPE_CHECKING:
    from diffnas.parts import PartContext


@SCHEDULES.register("every_k")
class EveryK(CountingSchedule):
    """One architecture step every k weight steps: before epoch steps k−1, 2k−1, ..."""

    @dataclass
    class Params:
        k: int = 10

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        check_positive(self.params.k, "every_k", "k")
        self.train_portion = 1.0 - 1.0 / (1.0 + self.params.k)
        self.searcher: PartContext | None = None

    def setup(self, searcher: PartContext) -> None:
        self.searcher = searcher

    def arch_step_due(self, step: int | None = None) -> bool:
        """`step`: the weight step's index in its epoch (default: the searcher's)."""
        if step is None:
            assert self.searcher is not None, "every_k: setup() was not called"
            step = self.searcher.step
        return self._count((step + 1) % self.params.k == 0)

    def metrics(self) -> dict[str, Any]:
        return self._ratio_metrics()
