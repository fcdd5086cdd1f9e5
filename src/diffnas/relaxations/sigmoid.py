"""FairDARTS's relaxation: independent sigmoid weights, so the ops of an edge do not compete.

Each op's weight is σ(α) on its own (no normalization over the edge); with the zero-one
regularizer the weights are pushed to 0 or 1 and the `threshold` derivation keeps the 1s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffnas.errors import ConfigError
from diffnas.parts import Relaxation
from diffnas.registry import RELAXATIONS


@RELAXATIONS.register("sigmoid")
class Sigmoid(Relaxation):
    """FairDARTS (Chu et al., ECCV 2020): op weights = sigmoid(α), element-wise.

    α starts at 0 (every weight 0.5) as in the FairDARTS code; `init_std` > 0 adds
    N(0, init_std²) noise instead. The `none` op has no output, so under this relaxation
    its α only feels weight decay: FairDARTS removes it from the op set
    (`space.exclude_ops: [none]`, as configs/fair_darts.yaml does).
    """

    @dataclass
    class Params:
        init_std: float = 0.0

        def __post_init__(self) -> None:
            if self.init_std < 0:
                raise ConfigError(f"sigmoid relaxation: init_std must be >= 0, got {self.init_std}")

    def init_alpha(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.params.init_std == 0:
            return torch.zeros(shape)
        return self.params.init_std * torch.randn(shape)

    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        return torch.sigmoid(alpha)
