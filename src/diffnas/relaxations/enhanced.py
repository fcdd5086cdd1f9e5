"""Enhanced-gradient relaxation (arXiv 2103.12529): softmax weights, a reshaped gradient for α.

Forward: the DARTS softmax weights p = softmax(α). Backward [ours, after arXiv 2103.12529]:
for each edge, the plain gradient ∂L/∂α_o = p_o ⟨g, o(x) − y⟩ loses the p_o factor, so weak
ops keep a signal, and a complexity pull μ · (c_o − Σ_k p_k c_k) / max_k c_k is added, with
c_o the op's parameter count (or multiply-adds) from the space's cost tables, so that among
ops of equal use the cheaper one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from diffnas.errors import ConfigError
from diffnas.parts import Relaxation
from diffnas.registry import RELAXATIONS

if TYPE_CHECKING:
    from diffnas.parts import PartContext

METRICS = ("params", "macs")


class EnhancedSoftmax(torch.autograd.Function):
    """p = softmax(α) over the last dim; backward gives the enhanced gradient.

    With G = ∂L/∂p (for a mixed op y = Σ p_o o(x): G_o = ⟨g, o(x)⟩, g = ∂L/∂y):
    ĝ_o = G_o − Σ_k p_k G_k + μ (r_o − Σ_k p_k r_k), r = cost / max cost of the edge.
    (The softmax gradient is p_o (G_o − Σ_k p_k G_k).)
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, alpha: torch.Tensor, rel_cost: torch.Tensor, mu: float
    ) -> torch.Tensor:
        p = torch.softmax(alpha, dim=-1)
        ctx.save_for_backward(p, rel_cost)
        ctx.mu = mu  # type: ignore[attr-defined]
        return p

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_p: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        p, rel_cost = ctx.saved_tensors  # type: ignore[attr-defined]
        grad = grad_p - (p * grad_p).sum(dim=-1, keepdim=True)
        mu = ctx.mu  # type: ignore[attr-defined]
        if mu:
            grad = grad + mu * (rel_cost - (p * rel_cost).sum(dim=-1, keepdim=True))
        return grad, None, None


def relative_cost(table: torch.Tensor) -> torch.Tensor:
    """cost / the largest cost of the same edge (rows of parameter-free ops only: 0)."""
    top = table.max(dim=-1, keepdim=True).values
    return torch.where(top > 0, table / top.clamp_min(1e-12), torch.zeros_like(table))


@RELAXATIONS.register("enhanced")
class Enhanced(Relaxation):
    """Enhanced gradient: no p_o factor on ∇α, plus a complexity pull of weight `mu`.

    `metric`: what c_o counts, 'params' (the paper's network complexity) or 'macs'.
    The pull uses `Supernet.cost_tables(metric)`, i.e. each op's cost summed over the
    cells sharing the α row, divided by the edge's costliest op (so μ is scale-free).
    """

    @dataclass
    class Params:
        mu: float = 0.01
        metric: str = "params"

        def __post_init__(self) -> None:
            if self.mu < 0:
                raise ConfigError(f"enhanced relaxation: mu must be >= 0, got {self.mu}")
            if self.metric not in METRICS:
                raise ConfigError(
                    f"enhanced relaxation: metric must be one of {', '.join(METRICS)}, got "
                    f"'{self.metric}'"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.rel_cost: dict[str, torch.Tensor] = {}

    def setup(self, searcher: PartContext) -> None:
        tables = searcher.model.cost_tables(self.params.metric)
        self.rel_cost = {k: relative_cost(t).to(searcher.device) for k, t in tables.items()}

    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        rel = self.rel_cost.get(key)
        if rel is None:  # before setup (the searcher's first derivation): no pull yet
            if self.params.mu and torch.is_grad_enabled() and alpha.requires_grad:
                raise RuntimeError("Enhanced.setup(searcher) must run before architecture steps")
            rel = torch.zeros_like(alpha)
        rel = rel.to(dtype=alpha.dtype, device=alpha.device)
        out: torch.Tensor = EnhancedSoftmax.apply(alpha, rel, self.params.mu)
        return out

    def probs(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        return torch.softmax(alpha, dim=-1)
