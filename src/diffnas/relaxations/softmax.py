"""DARTS's continuous relaxation: op weights = softmax(α) over each edge's ops."""

from __future__ import annotations

import torch

from diffnas.parts import Relaxation
from diffnas.registry import RELAXATIONS


@RELAXATIONS.register("softmax")
class Softmax(Relaxation):
    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        return torch.softmax(alpha, dim=-1)
