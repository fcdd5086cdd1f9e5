"""DrNAS's anchor regularizer: keeps the learned Dirichlet close to a fixed prior.

`kind: kl` adds scale · Σ_edges KL(Dir(elu(α) + 1) ‖ Dir(anchor · 1)) to the validation
loss (the official model_search.py `_get_kl_reg`); `kind: l2` adds (scale / 2) · ‖α − α₀‖²
with α₀ the α whose concentration is the anchor (α₀ = 0 for the official anchor 1), whose
gradient scale · (α − α₀) is exactly what the official code gets from Adam's weight_decay =
reg_scale on α (architect.py) when the anchor is 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributions import Dirichlet, kl_divergence

from diffnas.errors import ConfigError
from diffnas.parts import RegContext, Regularizer
from diffnas.registry import REGULARIZERS
from diffnas.regularizers.epoch_mean import EpochMean
from diffnas.relaxations.dirichlet import concentration

KINDS = ("kl", "l2")


@REGULARIZERS.register("dirichlet_anchor")
class DirichletAnchor(Regularizer):
    """DrNAS (Chen et al., ICLR 2021) anchor regularizer, `kl` or `l2`, weight `scale`.

    The official code's default is `l2` with reg_scale 1e-3 (both spaces); its help text
    says a `kl` run may need another scale. The sum runs over every edge of every α key,
    pruned ops included (the official KL takes the whole α matrix).
    """

    @dataclass
    class Params:
        # kl | l2 (the official default)
        kind: str = "l2"
        # the official reg_scale
        scale: float = 1e-3
        # the prior's concentration, the same for every op (the official code: 1)
        anchor: float = 1.0

        def __post_init__(self) -> None:
            if self.kind not in KINDS:
                raise ConfigError(
                    f"regularizer dirichlet_anchor: kind must be one of {', '.join(KINDS)}, "
                    f"got '{self.kind}'"
                )
            if self.scale < 0:
                raise ConfigError(
                    f"regularizer dirichlet_anchor: scale must be >= 0, got {self.scale}"
                )
            if not self.anchor > 0:
                raise ConfigError(
                    f"regularizer dirichlet_anchor: anchor (a concentration) must be > 0, "
                    f"got {self.anchor}"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        a = self.params.anchor
        # elu(α₀) + 1 = anchor
        self.alpha0 = a - 1.0 if a >= 1.0 else math.log(a)
        self.value = EpochMean()

    def loss(self, ctx: RegContext) -> torch.Tensor:
        p = self.params
        terms = []
        for alpha in ctx.arch.alpha.values():
            if p.kind == "kl":
                q = Dirichlet(concentration(alpha))
                prior = Dirichlet(torch.full_like(alpha, p.anchor))
                terms.append(kl_divergence(q, prior).sum())
            else:
                terms.append(0.5 * (alpha - self.alpha0).pow(2).sum())
        total = p.scale * torch.stack(terms).sum()
        self.value.add(total)
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value.load_state_dict(state["value"])

    def metrics(self) -> dict[str, Any]:
        return {self.params.kind: self.value.pop()}  # dirichlet_anchor/l2 or /kl
