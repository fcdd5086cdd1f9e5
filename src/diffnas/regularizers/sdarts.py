"""SDARTS (Chen & Hsieh, ICML 2020): the weight step on perturbed architecture weights.

Both variants leave the architecture step and α alone and change only the op weights the
weight step's forward uses (the `weight_mix` hook of `Regularizer`), as the official code
(xiangning-chen/SmoothDARTS, sota/cnn/train_search.py and attacker/perturb.py) does: it
replaces α by softmax(α), perturbs that, projects it back (`clip()`: each edge's row
clamped to [0, 1] and divided by its sum), runs the weight step with it, then restores α.

- `sdarts_rs` (random smoothing): p = clip(softmax(α) + U(−ε, ε)), a new draw each step;
- `sdarts_adv` (adversarial): p from `steps` (7) steps of L∞ PGD that ascend the training
  loss of the weight step's batch, step size 2ε/steps, from a random start in the ε-ball,
  each step projected onto the ε-ball around softmax(α) and then clipped; if the result
  has a lower loss than softmax(α) itself, softmax(α) is used unperturbed.

ε grows once per epoch: ε_e = epsilon_start + (epsilon − epsilon_start) · e / epochs, e
the epoch's index from 0 (0.03 to 0.3 by default, never quite reaching 0.3, as the
official code).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffnas import distributed
from diffnas.errors import ConfigError
from diffnas.parts import Batch, RegContext, Regularizer
from diffnas.registry import REGULARIZERS
from diffnas.supernet.mixed import MixWeights

if TYPE_CHECKING:
    from diffnas.parts import PartContext

Weights = dict[str, torch.Tensor]

EPSILON_SCHEDULES = ("linear", "constant")
PROJECTIONS = ("simplex", "none")


def simplex_clip(p: torch.Tensor) -> torch.Tensor:
    """The official `clip()`, per row (edge): clamp to [0, 1]; a row that is then all zero
    becomes one-hot at its argmax before the clamp; divide by the row's sum."""
    top = p.argmax(dim=-1, keepdim=True)
    q = p.clamp(0.0, 1.0)
    dead = q.sum(dim=-1, keepdim=True) == 0
    # no `if dead.any()`: that would read the device in every step; where() costs nothing
    one_hot = torch.zeros_like(q).scatter_(-1, top, 1.0)
    q = torch.where(dead, one_hot, q)
    return q / q.sum(dim=-1, keepdim=True)


@dataclass
class PerturbParams:
    # ε of the last epoch's schedule end (the official --epsilon_alpha, 0.3)
    epsilon: float = 0.3
    # ε of epoch 0 (the official code's fixed 0.03)
    epsilon_start: float = 0.03
    # linear: ε_e = epsilon_start + (epsilon − epsilon_start) · e / epochs, once per epoch;
    # constant: ε = epsilon throughout
    epsilon_schedule: str = "linear"
    # simplex: the perturbed weights are clamped to [0, 1] and renormalized per edge (the
    # official clip()); none: used as they are
    project: str = "simplex"

    def check(self, name: str) -> None:
        if self.epsilon < 0 or self.epsilon_start < 0:
            raise ConfigError(
                f"{name}: epsilon and epsilon_start must be >= 0 (SDARTS: 0.3 and 0.03), got "
                f"{self.epsilon}, {self.epsilon_start}"
            )
        if self.epsilon_schedule not in EPSILON_SCHEDULES:
            raise ConfigError(
                f"{name}: epsilon_schedule must be one of {', '.join(EPSILON_SCHEDULES)}, got "
                f"{self.epsilon_schedule!r}"
            )
        if self.project not in PROJECTIONS:
            raise ConfigError(
                f"{name}: project must be one of {', '.join(PROJECTIONS)}, got {self.project!r}"
            )


class WeightPerturbation(Regularizer):
    """Common part of both SDARTS variants: the ε schedule, no validation-loss term."""

    name = "sdarts"

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._epsilon = self.params.epsilon_start

    def epsilon_at(self, epoch: int, epochs: int) -> float:
        p = self.params
        if p.epsilon_schedule == "constant":
            return float(p.epsilon)
        return p.epsilon_start + (p.epsilon - p.epsilon_start) * epoch / epochs

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return simplex_clip(w) if self.params.project == "simplex" else w

    def loss(self, ctx: RegContext) -> torch.Tensor:
        return ctx.ce.new_zeros(())  # the architecture step is DARTS's

    def weight_mix(self, s: PartContext, mix: MixWeights, batch: Batch) -> MixWeights:
        self._epsilon = self.epsilon_at(s.epoch, s.epochs)
        base = {k: w.detach() for k, w in mix.ops.items()}
        ops = self.perturb(s, mix, base, self._epsilon, batch)
        return dataclasses.replace(mix, ops=ops)

    @abstractmethod
    def perturb(
        self, s: PartContext, mix: MixWeights, base: Weights, eps: float, batch: Batch
    ) -> Weights:
        """The op weights for the weight step, from the relaxation's (`base`, detached)."""

    def metrics(self) -> dict[str, Any]:
        return {"epsilon": round(self._epsilon, 6)}


@REGULARIZERS.register("sdarts_rs")
class RandomSmoothing(WeightPerturbation):
    """SDARTS-RS: the weight step on clip(weights + U(−ε, ε)), a fresh draw each step."""

    name = "sdarts_rs"

    @dataclass
    class Params(PerturbParams):
        def __post_init__(self) -> None:
            self.check("sdarts_rs")

    def perturb(
        self, s: PartContext, mix: MixWeights, base: Weights, eps: float, batch: Batch
    ) -> Weights:
        del s, mix, batch
        return {
            k: self.project(w + torch.empty_like(w).uniform_(-eps, eps)) for k, w in base.items()
        }


@REGULARIZERS.register("sdarts_adv")
class AdversarialPGD(WeightPerturbation):
    """SDARTS-ADV: the weight step on the op weights of an L∞ PGD attack on its loss."""

    name = "sdarts_adv"

    @dataclass
    class Params(PerturbParams):
        steps: int = 7
        # PGD step (sign of the gradient times this); null: 2ε / steps, the official value
        step_size: float | None = None
        # start from a uniform draw in the ε-ball (official), or from the weights themselves
        random_start: bool = True
        # use the unperturbed weights when the attack ends with a lower loss (official)
        keep_if_better: bool = True

        def __post_init__(self) -> None:
            self.check("sdarts_adv")
            if self.steps < 1:
                raise ConfigError(f"sdarts_adv: steps must be >= 1 (SDARTS: 7), got {self.steps}")
            if self.step_size is not None and self.step_size <= 0:
                raise ConfigError(
                    f"sdarts_adv: step_size must be > 0 or null (2ε/steps), got {self.step_size}"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        # training loss of the weights used minus that of the unperturbed, and whether the
        # attack's weights were used: device tensors after a step (read in metrics only)
        self._gain: float | torch.Tensor = 0.0
        self._kept: bool | torch.Tensor = True

    def _loss(self, s: PartContext, mix: MixWeights, ops: Weights, batch: Batch) -> torch.Tensor:
        return s.loss_fn(s.forward(batch[0], dataclasses.replace(mix, ops=ops)), batch[1])

    def perturb(
        self, s: PartContext, mix: MixWeights, base: Weights, eps: float, batch: Batch
    ) -> Weights:
        p = self.params
        lr = p.step_size if p.step_size is not None else 2.0 * eps / p.steps
        # the official attack runs the network in eval mode, so BatchNorm running statistics
        # (diffnas's cells keep none; the nb201 stem does) are not moved by its passes
        saved = {k: b.detach().clone() for k, b in s.model.named_buffers()}
        # data-parallel (diffnas.distributed): losses and gradients of the global batch, the
        # mean over the ranks, so every rank takes the same attack and the same decision
        with torch.no_grad():
            before = distributed.mean(self._loss(s, mix, base, batch))
        cur = base
        if p.random_start:
            cur = {
                k: self.project(w + torch.empty_like(w).uniform_(-eps, eps))
                for k, w in base.items()
            }
        keys = list(cur)
        for _ in range(p.steps):
            leaves = {k: cur[k].clone().requires_grad_(True) for k in keys}
            loss = self._loss(s, mix, leaves, batch)
            with s.autocast():
                grads = torch.autograd.grad(loss, [leaves[k] for k in keys], allow_unused=True)
            grads = tuple(None if g is None else distributed.mean(g) for g in grads)
            nxt = {}
            for k, g in zip(keys, grads):
                w = cur[k] if g is None else cur[k] + lr * torch.sign(g)
                nxt[k] = self.project(base[k] + (w - base[k]).clamp(-eps, eps))
            cur = nxt
        with torch.no_grad():
            after = distributed.mean(self._loss(s, mix, cur, batch))
        for k, b in s.model.named_buffers():
            b.copy_(saved[k])
        if not p.keep_if_better:
            self._kept, self._gain = True, after - before
            return cur
        # decided on the device (where(), not `if`): the step reads nothing back
        kept = before <= after
        self._kept = kept
        self._gain = torch.where(kept, after - before, torch.zeros_like(after))
        return {k: torch.where(kept, cur[k], base[k]) for k in keys}

    def state_dict(self) -> dict[str, Any]:
        return {"gain": float(self._gain), "kept": bool(self._kept)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gain, self._kept = float(state["gain"]), bool(state["kept"])

    def metrics(self) -> dict[str, Any]:
        # the last weight step's attack: its loss increase and whether it was used
        return {
            **super().metrics(),
            "gain": round(float(self._gain), 6),
            "kept": bool(self._kept),
        }
