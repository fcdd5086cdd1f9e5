"""β-DARTS's beta-decay regularizer: λ_t · mean over edges of logsumexp(α_e).

Keeps the value and the spread of the (softmax-activated) architecture parameters small;
λ rises linearly over the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffnas.errors import ConfigError
from diffnas.parts import RegContext, Regularizer
from diffnas.registry import REGULARIZERS


@REGULARIZERS.register("beta_decay")
class BetaDecay(Regularizer):
    """β-DARTS (Ye et al., CVPR 2022).

    L_val += λ_t · mean_e logsumexp(α_e), the mean over every edge of every α key (PC-DARTS
    β is not included), with either
    - `lambda_per_epoch` set: λ = lambda_min + lambda_per_epoch · epoch, the epoch's index
      (from 0), constant within the epoch: the official code (optimizers/darts/architect.py,
      λ = 50·epoch/100, i.e. lambda_per_epoch 0.5), whatever the search's length; or
    - `lambda_per_epoch: null` (the default): λ_t = lambda_min + (lambda_max − lambda_min) · t,
      t the fraction of the search done, updated every step: λ reaches lambda_max at the
      end of the search whatever its length (the official NAS-Bench-201 search runs 100
      epochs, so there λ rises from 0 to ≈50).
    """

    @dataclass
    class Params:
        lambda_max: float = 50.0
        lambda_min: float = 0.0
        # λ = lambda_min + lambda_per_epoch · epoch (the official code: 0.5); null: linear
        # from lambda_min to lambda_max over the search
        lambda_per_epoch: float | None = None

        def __post_init__(self) -> None:
            if self.lambda_per_epoch is not None and self.lambda_per_epoch < 0:
                raise ConfigError(
                    f"beta_decay: lambda_per_epoch must be >= 0 (the official code's is 0.5) "
                    f"or null, got {self.lambda_per_epoch}"
                )
            if self.lambda_min < 0 or self.lambda_max < 0:
                raise ConfigError(
                    f"beta_decay: lambda_min and lambda_max must be >= 0, got "
                    f"{self.lambda_min}, {self.lambda_max}"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._lam = self.params.lambda_min
        self._value: torch.Tensor | None = None

    def coefficient(self, t: float) -> float:
        p = self.params
        return p.lambda_min + (p.lambda_max - p.lambda_min) * min(max(t, 0.0), 1.0)

    @staticmethod
    def decay(alphas: list[torch.Tensor]) -> torch.Tensor:
        """mean over edges of logsumexp over each edge's ops."""
        return torch.cat([torch.logsumexp(a, dim=-1).flatten() for a in alphas]).mean()

    def loss(self, ctx: RegContext) -> torch.Tensor:
        per_epoch = self.params.lambda_per_epoch
        if per_epoch is None:
            self._lam = self.coefficient(ctx.progress)
        else:
            self._lam = self.params.lambda_min + per_epoch * ctx.searcher.epoch
        value = self.decay(list(ctx.arch.alpha.values()))
        self._value = value.detach()
        return self._lam * value

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lambda": round(self._lam, 6)}
        if self._value is not None:
            out["value"] = round(float(self._value), 6)
        return out
