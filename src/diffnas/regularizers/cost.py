"""Cost-aware search: λ · expected parameters or multiply-adds of the relaxed architecture.

Exact and differentiable: Σ op weights · the space's per-(edge, op) cost table, summed
over every searched cell, divided by the cost of the costliest architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffnas.errors import ConfigError
from diffnas.parts import RegContext, Regularizer
from diffnas.registry import REGULARIZERS

if TYPE_CHECKING:
    from diffnas.parts import PartContext

METRICS = ("params", "macs")


@REGULARIZERS.register("cost")
class Cost(Regularizer):
    """L_val += weight · Σ_keys Σ_(e,o) w[e, o] · table[e, o] / scale.

    `table` is `Supernet.cost_tables(metric)`: each op's parameters (or multiply-adds at the
    supernet's input resolution) in a discrete network, summed over the cells sharing that
    α; `w` are this step's op weights from the relaxation (softmax, Gumbel sample, sigmoid
    ...). Every edge counts (darts: the supernet's 14, not the 8 a derivation keeps).
    scale [ours] = the cost of the costliest choice on every edge, so `weight` is the
    loss added by the costliest architecture whatever the space and size (normalize:
    false uses the raw count). The expected cost is logged every epoch.
    """

    @dataclass
    class Params:
        metric: str = "params"
        weight: float = 0.1
        normalize: bool = True

        def __post_init__(self) -> None:
            if self.metric not in METRICS:
                raise ConfigError(
                    f"cost regularizer: metric must be one of {', '.join(METRICS)}, got "
                    f"'{self.metric}'"
                )
            if self.weight < 0:
                raise ConfigError(f"cost regularizer: weight must be >= 0, got {self.weight}")

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.tables: dict[str, torch.Tensor] = {}
        self.scale = 1.0
        self._expected: torch.Tensor | None = None

    def setup(self, searcher: PartContext) -> None:
        tables = searcher.model.cost_tables(self.params.metric)
        self.tables = {k: t.to(searcher.device) for k, t in tables.items()}
        worst = sum(float(t.max(dim=-1).values.sum()) for t in tables.values())
        self.scale = worst if self.params.normalize and worst > 0 else 1.0

    def expected(self, ops: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ weights · table over every α key (in units of the metric)."""
        if not self.tables:
            raise RuntimeError("Cost.setup(searcher) must run before the regularizer is used")
        return torch.stack([(ops[k] * t).sum() for k, t in self.tables.items()]).sum()

    def loss(self, ctx: RegContext) -> torch.Tensor:
        value = self.expected(ctx.mix.ops)
        self._expected = value.detach()
        return self.params.weight * value / self.scale

    def metrics(self) -> dict[str, Any]:
        if self._expected is None:
            return {}
        return {f"expected_{self.params.metric}": round(float(self._expected), 1)}
