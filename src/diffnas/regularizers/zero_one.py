"""FairDARTS's zero-one loss: −w · mean (σ(α) − 0.5)², pushing every op weight to 0 or 1.

Closes the gap between the sigmoid weights and the discrete choice the threshold
derivation makes from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffnas.errors import ConfigError
from diffnas.parts import RegContext, Regularizer
from diffnas.registry import REGULARIZERS


@REGULARIZERS.register("zero_one")
class ZeroOne(Regularizer):
    """FairDARTS (Chu et al., ECCV 2020): L_val += −weight · mean over all α entries of
    (σ(α) − 0.5)², a constant weight (10 in the paper and its code) for the whole search.
    """

    @dataclass
    class Params:
        weight: float = 10.0

        def __post_init__(self) -> None:
            if self.weight < 0:
                raise ConfigError(f"zero_one: weight must be >= 0, got {self.weight}")

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._value: torch.Tensor | None = None

    @staticmethod
    def zero_one(alphas: list[torch.Tensor]) -> torch.Tensor:
        """−mean (σ(α) − 0.5)² over every entry of every α tensor."""
        s = torch.cat([torch.sigmoid(a).flatten() for a in alphas])
        return -((s - 0.5) ** 2).mean()

    def loss(self, ctx: RegContext) -> torch.Tensor:
        value = self.zero_one(list(ctx.arch.alpha.values()))
        self._value = value.detach()
        return self.params.weight * value

    def metrics(self) -> dict[str, Any]:
        return {} if self._value is None else {"value": round(float(self._value), 6)}
