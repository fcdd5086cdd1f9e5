"""DARTS's schedule: one architecture step per weight step, before it or after it.

`order: arch_first` is the DARTS code (architecture step, then weight step);
`order: weight_first` is XAutoDL's NB201 scripts (DARTS-V1, GDAS: weight step, then
architecture step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffnas.errors import ConfigError
from diffnas.parts import Schedule
from diffnas.registry import SCHEDULES

ORDERS = ("arch_first", "weight_first")


@SCHEDULES.register("alternate")
class Alternate(Schedule):
    train_portion = 0.5

    @dataclass
    class Params:
        # arch_first (DARTS) | weight_first (XAutoDL's NB201 scripts)
        order: str = "arch_first"

        def __post_init__(self) -> None:
            if self.order not in ORDERS:
                raise ConfigError(
                    f"search.schedule (alternate): order must be one of {', '.join(ORDERS)}, "
                    f"got '{self.order}'"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.weight_first = self.params.order == "weight_first"

    def arch_step_due(self) -> bool:
        return True
