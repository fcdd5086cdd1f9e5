"""Per-epoch means of a regularizer's values, for metrics.jsonl.

Sums stay on the device (no sync per step) and go into the checkpoint as floats.
"""

from __future__ import annotations

from typing import Any

import torch


class EpochMean:
    """Mean of the values added since the last `pop()` (one epoch's architecture steps)."""

    def __init__(self) -> None:
        self.sum: float | torch.Tensor = 0.0
        self.n = 0

    def add(self, value: torch.Tensor) -> None:
        self.sum = self.sum + value.detach()
        self.n += 1

    def pop(self) -> float | None:
        """The mean (None without values), and start a new epoch."""
        out = float(self.sum) / self.n if self.n else None
        self.sum, self.n = 0.0, 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sum": float(self.sum), "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sum, self.n = float(state["sum"]), int(state["n"])
