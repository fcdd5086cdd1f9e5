"""Second-order (unrolled) DARTS with the finite-difference Hessian-vector product.

∇α = ∇α L_val(w', α) − ξ · [∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)] / (2ε),
w± = w ± ε ∇w' L_val(w', α), ε = eps / ‖∇w' L_val‖, and the virtual step w' either
- `virtual_step: optimizer` (default; the authors' code, quark0/darts cnn/architect.py):
  the weight optimizer's real next step without clipping,
  w' = w − ξ (μ · momentum_buffer + ∇w L_train(w, α) + λ w), or
- `virtual_step: plain` (the paper's equation 6): w' = w − ξ ∇w L_train(w, α).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from diffnas.errors import ConfigError
from diffnas.parts import ArchStepResult, Batch, Updater
from diffnas.registry import UPDATERS
from diffnas.supernet.mixed import MixWeights

if TYPE_CHECKING:
    from diffnas.parts import PartContext

WeightDict = dict[str, torch.Tensor]


def _leaf_mix(mix: MixWeights) -> tuple[MixWeights, list[torch.Tensor], list[torch.Tensor]]:
    """Detached copies of the op/edge weights that require grad, with the originals."""
    originals, leaves = [], []

    def leaf(t: torch.Tensor) -> torch.Tensor:
        lt = t.detach().requires_grad_(True)
        originals.append(t)
        leaves.append(lt)
        return lt

    ops = {k: leaf(v) for k, v in mix.ops.items()}
    edges = None if mix.edges is None else {k: leaf(v) for k, v in mix.edges.items()}
    return MixWeights(ops, mix.active, edges), originals, leaves


@UPDATERS.register("second_order")
class SecondOrder(Updater):
    @dataclass
    class Params:
        # virtual step size ξ; null = the current weight learning rate (DARTS)
        xi: float | None = None
        # ε = eps / ‖∇w' L_val‖
        eps: float = 0.01
        # 'optimizer': w' is the weight optimizer's next SGD step (momentum buffer and weight
        # decay included, as the DARTS code does); 'plain': w' = w − ξ ∇w L_train (the paper)
        virtual_step: str = "optimizer"

        def __post_init__(self) -> None:
            if self.virtual_step not in ("optimizer", "plain"):
                raise ConfigError(
                    f"second_order: virtual_step must be 'optimizer' (the DARTS code's SGD step "
                    f"with momentum and weight decay) or 'plain' (w − ξ∇w L_train, the paper's "
                    f"equation), got '{self.virtual_step}'"
                )

    def _train_ce(
        self, s: PartContext, params: WeightDict, mix: MixWeights, batch: Batch
    ) -> torch.Tensor:
        return s.loss_fn(s.forward(batch[0], mix, params), batch[1])

    def hessian_vector_product(
        self,
        s: PartContext,
        params: WeightDict,
        mix: MixWeights,
        leaves: list[torch.Tensor],
        batch: Batch,
        v: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """[∇ L_train(w + εv) − ∇ L_train(w − εv)] / 2ε w.r.t. `leaves` (≈ ∇²_{leaves,w} L_train · v)."""
        norm = torch.sqrt(torch.stack([(t * t).sum() for t in v]).sum())
        eps = self.params.eps / norm
        names = list(params)
        plus = {n: params[n] + eps * vi for n, vi in zip(names, v)}
        minus = {n: params[n] - eps * vi for n, vi in zip(names, v)}
        # always float32: under bf16 (search.precision) the rounding of the two passes is far
        # above their difference at ε = eps/‖v‖ (α-gradient cosine to fp32 fell to ~0.6)
        with s.full_precision():
            g_plus = torch.autograd.grad(
                self._train_ce(s, plus, mix, batch), leaves, allow_unused=True
            )
            g_minus = torch.autograd.grad(
                self._train_ce(s, minus, mix, batch), leaves, allow_unused=True
            )
        return [
            torch.zeros_like(leaf) if gp is None else (gp - gm) / (2 * eps)
            for leaf, gp, gm in zip(leaves, g_plus, g_minus)
        ]

    @staticmethod
    def optimizer_direction(s: PartContext, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """μ · momentum_buffer + g + λ w per weight: the direction of the next SGD step.

        As DARTS's `_compute_unrolled_model`: the buffer is taken from the weight optimizer
        (none before its first step), μ and λ from its settings, and the gradient unclipped.
        """
        group = s.w_opt.param_groups[0]
        mu, wd = float(group["momentum"]), float(group["weight_decay"])
        out = []
        for p, gi in zip(s.model.parameters(), grads):
            d = gi + wd * p.detach() if wd else gi
            buf = s.w_opt.state.get(p, {}).get("momentum_buffer") if mu else None
            if buf is not None:
                d = d + mu * buf
            out.append(d)
        return out

    def arch_grads(self, s: PartContext, train_batch: Batch, val_batch: Batch) -> ArchStepResult:
        xi = self.params.xi if self.params.xi is not None else s.w_lr
        params = {n: p.detach() for n, p in s.model.named_parameters()}
        names = list(params)
        mix = s.relaxation.mix(s.arch)
        leaf_mix, originals, leaves = _leaf_mix(mix)

        # virtual step w' = w − ξ (μ · buffer + ∇w L_train(w, α) + λ w), or w − ξ ∇w L_train
        w_req = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        with s.autocast():
            g = torch.autograd.grad(
                self._train_ce(s, w_req, leaf_mix, train_batch), list(w_req.values())
            )
        step = list(g)
        if self.params.virtual_step == "optimizer":
            step = self.optimizer_direction(s, step)
        w1 = {n: (params[n] - xi * d).requires_grad_(True) for n, d in zip(names, step)}

        # ∇ of L_val(w', α) w.r.t. the op weights and w'
        logits = s.forward(val_batch[0], leaf_mix, w1)
        ce = s.loss_fn(logits, val_batch[1])
        s.check_finite(ce, "validation")
        with s.autocast():
            grads = torch.autograd.grad(ce, leaves + list(w1.values()), allow_unused=True)
        d_mix = [
            torch.zeros_like(lf) if gi is None else gi
            for lf, gi in zip(leaves, grads[: len(leaves)])
        ]
        d_w = list(grads[len(leaves) :])

        hvp = self.hessian_vector_product(s, params, leaf_mix, leaves, train_batch, d_w)
        total = [dm - xi * h for dm, h in zip(d_mix, hvp)]

        # chain through the relaxation (and add the regularizers, which depend on α only)
        reg = s.reg_loss(mix, ce.detach())
        outputs, grad_outputs = list(originals), list(total)
        if reg.requires_grad:
            outputs.append(reg)
            grad_outputs.append(torch.ones_like(reg))
        arch_params = s.arch_parameters()
        arch_grads = torch.autograd.grad(outputs, arch_params, grad_outputs, allow_unused=True)
        for p, gp in zip(arch_params, arch_grads):
            p.grad = gp
        return ArchStepResult((ce + reg).detach(), ce.detach(), logits.detach(), val_batch[1])
