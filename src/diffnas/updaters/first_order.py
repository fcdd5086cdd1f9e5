"""First-order DARTS: ∇α L_val(w, α) at the current weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from diffnas.parts import ArchStepResult, Batch, Updater
from diffnas.registry import UPDATERS

if TYPE_CHECKING:
    from diffnas.parts import PartContext


@UPDATERS.register("first_order")
class FirstOrder(Updater):
    def arch_grads(self, s: PartContext, train_batch: Batch, val_batch: Batch) -> ArchStepResult:
        mix = s.relaxation.mix(s.arch)
        loss, ce, logits = s.val_objective(mix, val_batch)
        s.check_finite(loss, "validation")
        params = s.arch_parameters()
        # grad w.r.t. α only: the supernet's weight gradients are never formed
        with s.autocast():  # bf16: the engine's backward recomputes under it (search.py)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        return ArchStepResult(loss.detach(), ce.detach(), logits.detach(), val_batch[1])
