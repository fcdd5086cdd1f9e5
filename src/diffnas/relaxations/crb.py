"""DARTS-PRIME's CRB activation: op weights = clamp(α, 0, 1), with permanent pruning.

Ops whose α reaches 0 after an architecture step are masked for good and never computed
again (the supernet skips them); the mask is part of the checkpoint.

Gradient at the boundaries: `torch.clamp` passes the gradient on the closed interval
[0, 1] and blocks it outside, exactly as the public DARTS-PRIME code (which calls
`torch.clamp`). Consequences: an α pushed above 1 gets no gradient from the loss and only
comes back through the optimizer's weight decay; an α pushed below 0 is pruned right after
the step, so the zero-gradient region below 0 never lasts; a pruned α sits exactly at 0,
where the gradient would pass, but its op is no longer computed (no loss gradient) and the
mask is re-applied after every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffnas.errors import ConfigError
from diffnas.parts import Relaxation
from diffnas.registry import RELAXATIONS
from diffnas.supernet.base import Architecture
from diffnas.supernet.mixed import Active

if TYPE_CHECKING:
    from diffnas.parts import PartContext


@RELAXATIONS.register("crb")
class ClampedReLU(Relaxation):
    """CRB (clamped rectified) weights: ops do not compete within an edge (no softmax)."""

    @dataclass
    class Params:
        # α init: 1/|O| + init_noise · N(0, 1)
        init_noise: float = 1e-4

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.alive: dict[str, torch.Tensor] = {}  # bool [E, O]: False = pruned for good
        self._active: dict[str, Active | None] = {}

    # ------------------------------------------------------------------ the relaxation
    def init_alpha(self, shape: tuple[int, ...]) -> torch.Tensor:
        return 1.0 / shape[-1] + self.params.init_noise * torch.randn(shape)

    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        return torch.clamp(alpha, 0.0, 1.0)

    def active(self, alpha: torch.Tensor, key: str, weights: torch.Tensor) -> Active | None:
        # cached: recomputed only when the mask changes (no device sync per step)
        return self._active.get(key)

    def op_mask(self, key: str) -> torch.Tensor | None:
        return self.alive.get(key)

    # ------------------------------------------------------------------ pruning
    def setup(self, searcher: PartContext) -> None:
        for key, spec in searcher.arch.specs.items():
            if "none" in spec.ops:
                raise ConfigError(
                    f"relaxation 'crb' needs 'none' removed from the op set (the {key!r} cell "
                    f"has ops {', '.join(spec.ops)}): CRB weights are not normalized, so "
                    f"'none' would only add a zero op. Set space.exclude_ops: [none] "
                    f"(--set 'space.exclude_ops=[none]'), as configs/darts_prime.yaml does"
                )
        self.alive = {
            k: torch.ones_like(a, dtype=torch.bool) for k, a in searcher.arch.alpha.items()
        }
        self.prune(searcher.arch)

    def after_arch_step(self, arch: Architecture) -> None:
        self.prune(arch)

    @torch.no_grad()
    def prune(self, arch: Architecture) -> None:
        """Mask every α ≤ 0 for good and set every masked α to 0."""
        for key, alpha in arch.alpha.items():
            alive = self.alive.setdefault(key, torch.ones_like(alpha, dtype=torch.bool))
            alive &= alpha > 0
            alpha.masked_fill_(~alive, 0.0)
        self._refresh()

    def _refresh(self) -> None:
        self._active = {}
        for key, alive in self.alive.items():
            if bool(alive.all()):
                self._active[key] = None  # nothing pruned: the supernet's default (all ops)
            else:
                self._active[key] = [
                    [o for o, on in enumerate(row) if on] for row in alive.cpu().tolist()
                ]

    def pruned(self) -> int:
        return sum(int((~a).sum()) for a in self.alive.values())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"alive": {k: a.cpu().clone() for k, a in self.alive.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = {k: a.device for k, a in self.alive.items()}
        self.alive = {
            k: a.to(device.get(k, a.device), torch.bool) for k, a in state["alive"].items()
        }
        self._refresh()

    def metrics(self) -> dict[str, Any]:
        total = sum(a.numel() for a in self.alive.values())
        return {"pruned_ops": self.pruned(), "alive_ops": total - self.pruned()}
