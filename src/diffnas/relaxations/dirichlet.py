"""DrNAS's relaxation: op weights sampled from a Dirichlet whose concentration is learned.

Each forward pass draws, per edge, w ~ Dirichlet(β) with β = elu(α) + 1 (> 0 for any α),
by the pathwise (reparameterised) sampler `torch.distributions.Dirichlet.rsample`, so the
validation loss is differentiable in α through the sample. Ops pruned by the progressive
schedule (`keep_top_ops`) get weight 0 and the edge's sample is renormalised over the
kept ops, as the official code does; pruned ops are never computed. The mask is part of
the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet as DirichletDist

from diffnas.errors import ConfigError
from diffnas.parts import Relaxation
from diffnas.registry import RELAXATIONS
from diffnas.supernet.base import Architecture
from diffnas.supernet.mixed import Active

if TYPE_CHECKING:
    from diffnas.parts import PartContext

PROBS = ("softmax", "mean")


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    """DrNAS's map from α to the Dirichlet concentration: elu(α) + 1 (always > 0)."""
    return F.elu(alpha) + 1.0


@RELAXATIONS.register("dirichlet")
class Dirichlet(Relaxation):
    """DrNAS (Chen et al., ICLR 2021): one reparameterised Dirichlet sample per edge and
    forward pass (the official utils.process_step_matrix(α, 'dirichlet', mask)).

    `probs` (derivation and logging): `softmax` of α over the kept ops, renormalised (the
    official genotype() and show_arch_parameters()), or `mean`: the Dirichlet mean
    β_i / Σ β over the kept ops. Both pick the same op on an edge (elu + 1 and exp are
    increasing); they can rank edges differently in the darts top-2 rule.
    """

    @dataclass
    class Params:
        # softmax (the official code's genotype) | mean (the Dirichlet mean)
        probs: str = "softmax"

        def __post_init__(self) -> None:
            if self.probs not in PROBS:
                raise ConfigError(
                    f"dirichlet relaxation: probs must be one of {', '.join(PROBS)}, "
                    f"got '{self.probs}'"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.alive: dict[str, torch.Tensor] = {}  # bool [E, O]: False = pruned for good
        self._active: dict[str, Active | None] = {}

    # ------------------------------------------------------------------ the relaxation
    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        # no argument check: it reads the concentration on the host (a device sync per
        # step), and elu(α) + 1 > 0 holds by construction (a NaN α is the loop's check's)
        w = DirichletDist(concentration(alpha), validate_args=False).rsample()
        return self._masked(w, key)

    def probs(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        if self.params.probs == "mean":
            c = concentration(alpha)
            return self._masked(c / c.sum(dim=-1, keepdim=True), key)
        return self._masked(torch.softmax(alpha, dim=-1), key)

    def _masked(self, w: torch.Tensor, key: str) -> torch.Tensor:
        alive = self.alive.get(key)
        if alive is None:
            return w
        w = w * alive.to(device=w.device, dtype=w.dtype)
        return w / w.sum(dim=-1, keepdim=True)

    def active(self, alpha: torch.Tensor, key: str, weights: torch.Tensor) -> Active | None:
        return self._active.get(key)

    def op_mask(self, key: str) -> torch.Tensor | None:
        return self.alive.get(key)

    def setup(self, searcher: PartContext) -> None:
        self.alive = {}
        self._active = {}

    # ------------------------------------------------------------------ pruning
    @torch.no_grad()
    def keep_top_ops(self, arch: Architecture, n: int) -> None:
        """Keep the n ops of largest α on every edge, prune the rest for good.

        As the official utils.prune: already pruned ops are not eligible, the kept α keep
        their values and every other α is set to 0 (Adam's moments are left as they are).
        """
        for key, alpha in arch.alpha.items():
            if n > alpha.shape[-1]:
                raise ConfigError(
                    f"cannot keep {n} ops per edge: the {key!r} cell has {alpha.shape[-1]}"
                )
            scores = alpha.detach().clone()
            old = self.alive.get(key)
            if old is not None:
                scores[~old.to(scores.device)] -= 1e6
            top, index = scores.topk(k=n, dim=-1)
            alpha.copy_(torch.zeros_like(alpha).scatter(-1, index, top))
            self.alive[key] = torch.zeros_like(alpha, dtype=torch.bool).scatter(-1, index, True)
        self._refresh()

    def _refresh(self) -> None:
        self._active = {
            key: [[o for o, on in enumerate(row) if on] for row in alive.cpu().tolist()]
            for key, alive in self.alive.items()
        }

    def pruned(self) -> int:
        return sum(int((~a).sum()) for a in self.alive.values())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"alive": {k: a.cpu().clone() for k, a in self.alive.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alive = {k: a.to(torch.bool) for k, a in state["alive"].items()}
        self._refresh()

    def metrics(self) -> dict[str, Any]:
        return {"pruned_ops": self.pruned()} if self.alive else {}
