"""Uniform single-path sampling: each step, every edge computes one op drawn uniformly.

The supernet of random search with weight sharing (Li & Talwalkar, UAI 2019; the uniform
sampler of single-path one-shot NAS): α is never trained and plays no part in the forward
pass; every candidate cell gets the same share of weight updates, so the supernet can rank
sampled cells fairly afterwards (derive `random_search`).
"""

from __future__ import annotations

import torch

from diffnas.parts import Relaxation
from diffnas.registry import RELAXATIONS
from diffnas.supernet.mixed import Active


@RELAXATIONS.register("uniform")
class UniformPath(Relaxation):
    """Forward weights: a one-hot op per edge, drawn uniformly from the edge's ops each call.

    Only the drawn op is computed (`active`). The weights carry no gradient to α, and the
    deterministic `probs` (derivation, logging) are softmax(α), i.e. what α was initialized to.
    """

    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        n_edges, n_ops = alpha.shape
        index = torch.randint(n_ops, (n_edges,), device=alpha.device)
        return torch.nn.functional.one_hot(index, n_ops).to(alpha.dtype)

    def probs(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        return torch.softmax(alpha.detach(), dim=-1)

    def active(self, alpha: torch.Tensor, key: str, weights: torch.Tensor) -> Active | None:
        return [[o] for o in weights.argmax(dim=-1).tolist()]
