"""DARTS's schedule: one architecture step before every weight step."""

from __future__ import annotations

from diffnas.parts import Schedule
from diffnas.registry import SCHEDULES


@SCHEDULES.register("alternate")
class Alternate(Schedule):
    train_portion = 0.5

    def arch_step_due(self) -> bool:
        return True
