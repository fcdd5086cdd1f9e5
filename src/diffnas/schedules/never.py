"""A schedule without architecture steps: the search trains the supernet weights only.

For searches whose architecture is chosen after training (random search with weight
sharing, derive `random_search`); the other half of the training split stays the held-out
validation split the derivation ranks cells on.
"""

from __future__ import annotations

from diffnas.parts import Schedule
from diffnas.registry import SCHEDULES


@SCHEDULES.register("never")
class Never(Schedule):
    train_portion = 0.5

    def arch_step_due(self) -> bool:
        return False
