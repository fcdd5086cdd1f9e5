"""Latency-aware search: λ · the predicted latency of the relaxed architecture.

The predictor is an MLP fitted by `diffnas latency fit` on architectures measured by
`diffnas latency collect` on the target device; its input is this step's op weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffnas.bench.latency import LatencyPredictor, check_layout, layout_of
from diffnas.errors import ConfigError
from diffnas.parts import RegContext, Regularizer
from diffnas.registry import REGULARIZERS

if TYPE_CHECKING:
    from diffnas.parts import PartContext


@REGULARIZERS.register("latency")
class Latency(Regularizer):
    """L_val += weight · predicted_latency(w) / scale, w = the relaxation's op weights.

    scale [ours] = the mean latency of the architectures the predictor was trained on
    (normalize: false uses milliseconds), so `weight` is the loss added by an
    architecture of average latency. The predictor's architecture layout (α keys, edges,
    ops) must be the search's; its weights are frozen.
    """

    @dataclass
    class Params:
        predictor: str = ""
        weight: float = 0.1
        normalize: bool = True

        def __post_init__(self) -> None:
            if not self.predictor:
                raise ConfigError(
                    "regularizer latency needs `predictor: FILE`, a predictor written by "
                    "`diffnas latency fit` (e.g. regularizers: [{name: latency, predictor: "
                    "latency.pt, weight: 0.1}])"
                )
            if self.weight < 0:
                raise ConfigError(f"latency regularizer: weight must be >= 0, got {self.weight}")

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.model: LatencyPredictor | None = None
        self.scale = 1.0
        self._predicted: torch.Tensor | None = None

    def setup(self, searcher: PartContext) -> None:
        model = LatencyPredictor.load(self.params.predictor)
        check_layout(
            model.layout,
            layout_of(searcher.model.arch_specs),
            f"latency predictor '{self.params.predictor}'",
        )
        model.requires_grad_(False)
        self.model = model.to(searcher.device).eval()
        self.scale = float(model.y_scale) if self.params.normalize else 1.0

    def loss(self, ctx: RegContext) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("Latency.setup(searcher) must run before the regularizer is used")
        predicted = self.model.predict(ctx.mix.ops)
        self._predicted = predicted.detach()
        return self.params.weight * predicted / self.scale

    def metrics(self) -> dict[str, Any]:
        if self._predicted is None:
            return {}
        return {"predicted_ms": round(float(self._predicted), 4)}
