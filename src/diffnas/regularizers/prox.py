"""DARTS-PRIME's proximity regularizer: pulls the op weights towards their own discretization.

L_val += (t/T) · (ρ/2) · Σ_keys ‖a(α) − D(a(α))‖₂ (not squared), D = the one-hot of the
architecture the space's standard derivation picks; its weight grows with search progress.
t counts the weight steps done including the current one (the public code advances its clock
before each step), so the term already acts at the first step and reaches ρ/2 at the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffnas.errors import ConfigError
from diffnas.parts import RegContext, Regularizer
from diffnas.registry import REGULARIZERS
from diffnas.regularizers.epoch_mean import EpochMean


def distance_to_discrete(ctx: RegContext, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over arch keys of the Frobenius norm ‖a(α)_key − target_key‖₂ (differentiable in a)."""
    parts = [torch.linalg.vector_norm(w - targets[k]) for k, w in ctx.mix.ops.items()]
    return torch.stack(parts).sum()


def discretized(ctx: RegContext) -> dict[str, torch.Tensor]:
    """D(a(α)): one-hot of what the standard derivation picks from this step's op weights."""
    weights = {k: w.detach() for k, w in ctx.mix.ops.items()}
    edges = None if ctx.mix.edges is None else {k: e.detach() for k, e in ctx.mix.edges.items()}
    return ctx.searcher.space.discretize(weights, edges)


@REGULARIZERS.register("prox")
class Proximity(Regularizer):
    """(t/T)·(ρ/2)·‖a(α) − D(a(α))‖₂ per arch key, summed; t/T = the search's progress
    counting the current weight step as done (the public code's clock)."""

    @dataclass
    class Params:
        rho: float = 0.1

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        if self.params.rho < 0:
            raise ConfigError(f"regularizer prox: rho must be >= 0, got {self.params.rho}")
        self.value = EpochMean()
        self.distance = EpochMean()

    def loss(self, ctx: RegContext) -> torch.Tensor:
        dist = distance_to_discrete(ctx, discretized(ctx))
        t = ctx.progress + 1.0 / ctx.searcher.total_steps  # the current step counts as done
        value = t * self.params.rho / 2 * dist
        self.value.add(value)
        self.distance.add(dist)
        return value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value.state_dict(), "distance": self.distance.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value.load_state_dict(state["value"])
        self.distance.load_state_dict(state["distance"])

    def metrics(self) -> dict[str, Any]:
        """Epoch means over the architecture steps: the term and ‖a(α) − D(a(α))‖₂."""
        return {"value": self.value.pop(), "distance": self.distance.pop()}
