"""DARTS-PRIME's ADMM regularizer: a discrete auxiliary architecture Z and a dual U.

L_val += (ρ/2) · Σ_keys ‖(a(α) − Z + U) ⊙ M‖₂ (not squared); every K architecture steps
Z ← D(a(α + U)) and U ← (decay·U + α − Z) ⊙ M. M = the ops not pruned by the relaxation.
The defaults are the public code's (src/model_admm_hard_statebn.py with
train_scheduled_hard_statebn.py --reg admm): K = 9 (its `--admm_freq 10` updates when the
step counter + 1 reaches 10, then restarts the count), decay 1.0 (its `--zuewma` is never
passed to the model, whose own default is 1.0), Z starting at the raw α.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffnas.errors import ConfigError
from diffnas.parts import RegContext, Regularizer
from diffnas.registry import REGULARIZERS
from diffnas.regularizers.epoch_mean import EpochMean
from diffnas.supernet.base import Architecture

if TYPE_CHECKING:
    from diffnas.parts import PartContext

Z_INIT = ("alpha", "weights")


@REGULARIZERS.register("admm")
class ADMM(Regularizer):
    """U starts at 0; Z at α (`z_init: alpha`, the public code) or at a(α) (`weights`: the
    term is 0 until the first update). The two agree for CRB, whose a(α) = α at the start."""

    @dataclass
    class Params:
        rho: float = 0.1
        # K: architecture steps between Z/U updates (the public code: 9)
        every: int = 9
        # U ← decay·U + (α − Z) (the public code: 1.0)
        decay: float = 1.0
        # Z's start: 'alpha' (the raw α, the public code) or 'weights' (a(α))
        z_init: str = "alpha"

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        p = self.params
        if p.rho < 0:
            raise ConfigError(f"regularizer admm: rho must be >= 0, got {p.rho}")
        if p.every < 1:
            raise ConfigError(f"regularizer admm: every must be >= 1 step, got {p.every}")
        if p.z_init not in Z_INIT:
            raise ConfigError(
                f"regularizer admm: z_init must be one of {', '.join(Z_INIT)}, got {p.z_init!r}"
            )
        self.searcher: PartContext | None = None
        self.Z: dict[str, torch.Tensor] = {}
        self.U: dict[str, torch.Tensor] = {}
        self.steps = 0  # architecture steps so far
        self.updates = 0
        self.value = EpochMean()

    def setup(self, searcher: PartContext) -> None:
        self.searcher = searcher
        relax = searcher.relaxation
        with torch.no_grad():
            self.Z = {
                k: (a if self.params.z_init == "alpha" else relax.weights(a, k)).detach().clone()
                for k, a in searcher.arch.alpha.items()
            }
        self.U = {k: torch.zeros_like(z) for k, z in self.Z.items()}

    def mask(self, key: str, like: torch.Tensor) -> torch.Tensor:
        assert self.searcher is not None
        alive = self.searcher.relaxation.op_mask(key)
        return torch.ones_like(like) if alive is None else alive.to(like.dtype)

    def loss(self, ctx: RegContext) -> torch.Tensor:
        parts = [
            torch.linalg.vector_norm((w - self.Z[k] + self.U[k]) * self.mask(k, w))
            for k, w in ctx.mix.ops.items()
        ]
        value = self.params.rho / 2 * torch.stack(parts).sum()
        self.value.add(value)
        return value

    def after_arch_step(self, arch: Architecture) -> None:
        self.steps += 1
        if self.steps % self.params.every == 0:
            self.update(arch)

    @torch.no_grad()
    def update(self, arch: Architecture) -> None:
        """Z ← D(a(α + U)), then U ← (decay·U + α − Z) ⊙ M with the new Z."""
        assert self.searcher is not None
        s = self.searcher
        shifted = {
            k: s.relaxation.weights(a.detach() + self.U[k], k) for k, a in arch.alpha.items()
        }
        edges = arch.edge_weights()
        edges = None if edges is None else {k: e.detach() for k, e in edges.items()}
        self.Z = s.space.discretize(shifted, edges)
        self.U = {
            k: (self.params.decay * self.U[k] + a.detach() - self.Z[k]) * self.mask(k, a)
            for k, a in arch.alpha.items()
        }
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "Z": {k: z.cpu().clone() for k, z in self.Z.items()},
            "U": {k: u.cpu().clone() for k, u in self.U.items()},
            "steps": self.steps,
            "updates": self.updates,
            "value": self.value.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = {k: z.device for k, z in self.Z.items()}
        self.Z = {k: z.to(device.get(k, z.device)) for k, z in state["Z"].items()}
        self.U = {k: u.to(device.get(k, u.device)) for k, u in state["U"].items()}
        self.steps, self.updates = int(state["steps"]), int(state["updates"])
        self.value.load_state_dict(state["value"])

    def metrics(self) -> dict[str, Any]:
        """The epoch mean of the term, Z/U updates so far, and ‖U ⊙ M‖ (the dual's size)."""
        dual = sum(float(torch.linalg.vector_norm(u)) for u in self.U.values())
        return {"value": self.value.pop(), "updates": self.updates, "dual": dual}
