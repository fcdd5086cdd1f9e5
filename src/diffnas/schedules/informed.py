"""DARTS-PRIME's dynamic informed schedule: an architecture step when the weights settle.

Gradient energy FI = Σ‖∇w‖² of each weight step, smoothed by an EWMA, is compared with an
adaptive threshold τ that targets one architecture step per `f` weight steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from diffnas.errors import ConfigError
from diffnas.registry import SCHEDULES
from diffnas.schedules.counting import CountingSchedule, check_positive


@SCHEDULES.register("informed")
class Informed(CountingSchedule):
    """Before each weight step: α step iff 0 < FI_ewma < τ; then τ ← τ·m^(−f), else τ ← τ·m.

    τ stays put on average when one decision in f + 1 is a step: m^(−f) · m^f = 1.
    FI_ewma is seeded with the first FI (as the public code does); until then no α step.
    """

    needs_grad_energy: ClassVar[bool] = True

    @dataclass
    class Params:
        # target weight steps per architecture step
        f: float = 10.0
        # threshold multiplier m
        multiplier: float = 1.05
        # initial threshold τ; null: start at the first FI [ours] (the paper's 1.0 takes
        # about log(FI/1.0)/log(m) weight steps without α steps to catch up with FI)
        threshold: float | None = 1.0
        # EWMA weight of the newest FI: FI_ewma = ewma·FI + (1 − ewma)·FI_ewma
        ewma: float = 0.2

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        p = self.params
        check_positive(p.f, "informed", "f")
        if not p.multiplier > 1.0:
            raise ConfigError(
                f"search.schedule (informed): multiplier must be > 1, got {p.multiplier}"
            )
        if not 0.0 < p.ewma <= 1.0:
            raise ConfigError(f"search.schedule (informed): ewma must be in (0, 1], got {p.ewma}")
        if p.threshold is not None and not p.threshold > 0:
            raise ConfigError(
                f"search.schedule (informed): threshold must be > 0, got {p.threshold}"
            )
        # one validation batch per f training batches
        self.train_portion = 1.0 - 1.0 / (1.0 + p.f)
        self.threshold: float | None = None if p.threshold is None else float(p.threshold)
        self.fi_ewma: float | None = None
        self.fi: float | None = None

    def arch_step_due(self) -> bool:
        p = self.params
        if self.threshold is None:  # threshold: null, before the first FI
            return self._count(False)
        due = self.fi_ewma is not None and 0.0 < self.fi_ewma < self.threshold
        if due:  # m^(-f), computed as the public code does (bit for bit)
            self.threshold *= math.exp(-math.log(p.multiplier) * p.f)
        else:
            self.threshold *= p.multiplier
        return self._count(due)

    def after_weight_step(self, grad_energy: float | None) -> None:
        if grad_energy is None:  # pragma: no cover - the loop always passes it
            raise ValueError("the informed schedule needs the weight gradient energy")
        if not math.isfinite(grad_energy):
            return  # a non-finite gradient is caught by the loop's loss check; keep the EWMA
        self.fi = float(grad_energy)
        a = self.params.ewma
        self.fi_ewma = self.fi if self.fi_ewma is None else a * self.fi + (1 - a) * self.fi_ewma
        if self.threshold is None:
            self.threshold = self.fi

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "threshold": self.threshold,
            "fi_ewma": self.fi_ewma,
            "fi": self.fi,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.threshold = state["threshold"]
        self.fi_ewma = state["fi_ewma"]
        self.fi = state["fi"]

    def metrics(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "fi_ewma": self.fi_ewma,
            **self._ratio_metrics(),
        }
