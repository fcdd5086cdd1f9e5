"""GDAS's relaxation: one op per edge sampled by straight-through Gumbel-softmax.

Forward: the one-hot sample, so only the sampled op runs; backward: the gradient of the
soft Gumbel-softmax, which reaches every α of the edge. The temperature anneals linearly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffnas.errors import ConfigError
from diffnas.parts import Relaxation
from diffnas.registry import RELAXATIONS
from diffnas.supernet.mixed import Active


def gumbel_noise(like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples shaped like `like`; redrawn until finite (as GDAS does)."""
    while True:
        g = -torch.empty_like(like).exponential_().log()
        if bool(torch.isfinite(g).all()):
            return g


@RELAXATIONS.register("gumbel")
class Gumbel(Relaxation):
    """GDAS (Dong & Yang, CVPR 2019).

    Per edge: soft = softmax((log_softmax(α) + G) / τ) with G ~ Gumbel(0, 1); the forward
    weights are one_hot(argmax soft) − soft.detach() + soft (value: exactly the one-hot
    sample; gradient: that of `soft`). `active` hands the supernet the sampled op of each
    edge, so the others are never computed. τ goes linearly from tau_max to tau_min over
    the search. Derivation and logging use the deterministic softmax(α).
    """

    @dataclass
    class Params:
        tau_max: float = 10.0
        tau_min: float = 0.1
        # false: soft Gumbel-softmax weights and every op computed (no compute saving)
        hard: bool = True

        def __post_init__(self) -> None:
            if not 0.0 < self.tau_min <= self.tau_max:
                raise ConfigError(
                    f"gumbel relaxation: need 0 < tau_min <= tau_max, got tau_min="
                    f"{self.tau_min}, tau_max={self.tau_max}"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.tau = self.params.tau_max

    def set_progress(self, t: float) -> None:
        p = self.params
        self.tau = p.tau_max - (p.tau_max - p.tau_min) * min(max(t, 0.0), 1.0)

    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        logits = (torch.log_softmax(alpha, dim=-1) + gumbel_noise(alpha)) / self.tau
        soft = torch.softmax(logits, dim=-1)
        if not self.params.hard:
            return soft
        index = soft.detach().argmax(dim=-1, keepdim=True)
        one_hot = torch.zeros_like(soft).scatter_(-1, index, 1.0)
        return one_hot - soft.detach() + soft

    def probs(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        return torch.softmax(alpha, dim=-1)

    def active(self, alpha: torch.Tensor, key: str, weights: torch.Tensor) -> Active | None:
        if not self.params.hard:
            return None
        return [[o] for o in weights.detach().argmax(dim=-1).tolist()]

    def metrics(self) -> dict[str, Any]:
        return {"tau": round(self.tau, 6)}
