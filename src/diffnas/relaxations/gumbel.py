"""GDAS's relaxation: one op per edge sampled by straight-through Gumbel-softmax.

Forward: the one-hot sample, so only the sampled op runs; backward: the gradient of the
soft Gumbel-softmax, which reaches every α of the edge. The temperature anneals linearly,
once per epoch as in the authors' code. On NB201 the authors' supernet (XAutoDL
`TinyNetworkGDAS`) also adds every unsampled op's weight (value 0) to the edge output as a
scalar, which gives those α a gradient of their own (`unsampled: scalar`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffnas.errors import ConfigError
from diffnas.parts import Relaxation
from diffnas.registry import RELAXATIONS
from diffnas.supernet.base import Architecture
from diffnas.supernet.mixed import Active, MixWeights

if TYPE_CHECKING:
    from diffnas.parts import PartContext

UNSAMPLED = ("auto", "scalar", "skip")
TAU_SCHEDULES = ("epoch", "step")


def gumbel_noise(like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples −log(E), E ~ Exp(1), shaped like `like`; always finite.

    GDAS redraws the whole sample while one is infinite (E = 0); reading that on the host
    would cost a device sync per draw. Here E = 0 becomes the smallest normal float instead
    (G = 87.3 in float32): every other draw is bit-identical, and a zero draw is an event
    of probability ~1e-38 per entry, far below anything a search can tell apart."""
    e = torch.empty_like(like).exponential_()
    return -e.clamp_min(torch.finfo(e.dtype).tiny).log()


@RELAXATIONS.register("gumbel")
class Gumbel(Relaxation):
    """GDAS (Dong & Yang, CVPR 2019).

    Per edge: soft = softmax((log_softmax(α) + G) / τ) with G ~ Gumbel(0, 1); the forward
    weights are one_hot(argmax soft) − soft.detach() + soft (value: exactly the one-hot
    sample; gradient: that of `soft`). `active` hands the supernet the sampled op of each
    edge, so the others are never computed. τ goes linearly from tau_max to tau_min:
    per epoch, reaching tau_min on the last one (XAutoDL: τ = τmax − (τmax − τmin)·e/(E−1)),
    or per step (`tau_schedule: step`). Derivation and logging use the deterministic
    softmax(α).

    `unsampled`: what the ops an edge did not sample contribute. `scalar`: their weights
    (value exactly 0, gradient that of the soft sample) are added to the edge output as a
    scalar, so each gets ∂L/∂w = Σ ∂L/∂(edge output), as XAutoDL's NB201 GDAS does. `skip`:
    nothing (XAutoDL's darts-space GDAS, the paper's equations); their α then move only
    through the softmax coupling with the sampled op. `auto`: scalar on nb201, skip on
    other spaces, each space as its reference code.
    """

    @dataclass
    class Params:
        tau_max: float = 10.0
        tau_min: float = 0.1
        # false: soft Gumbel-softmax weights and every op computed (no compute saving)
        hard: bool = True
        # auto | scalar | skip (see the class docstring)
        unsampled: str = "auto"
        # epoch: τ set once per epoch, tau_min on the last (the authors' code) | step
        tau_schedule: str = "epoch"

        def __post_init__(self) -> None:
            if not 0.0 < self.tau_min <= self.tau_max:
                raise ConfigError(
                    f"gumbel relaxation: need 0 < tau_min <= tau_max, got tau_min="
                    f"{self.tau_min}, tau_max={self.tau_max}"
                )
            if self.unsampled not in UNSAMPLED:
                raise ConfigError(
                    f"gumbel relaxation: unsampled must be one of {', '.join(UNSAMPLED)}, "
                    f"got '{self.unsampled}'"
                )
            if self.tau_schedule not in TAU_SCHEDULES:
                raise ConfigError(
                    f"gumbel relaxation: tau_schedule must be one of "
                    f"{', '.join(TAU_SCHEDULES)}, got '{self.tau_schedule}'"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.tau = self.params.tau_max
        # the number of epochs (for the per-epoch τ); set by `setup`
        self.epochs: int | None = None
        # whether unsampled ops add their weight as a scalar; `auto` is resolved by `setup`
        self.scalar_unsampled = self.params.unsampled == "scalar"

    def setup(self, searcher: PartContext) -> None:
        self.epochs = searcher.epochs
        if self.params.unsampled == "auto":
            self.scalar_unsampled = searcher.config.space.name == "nb201"

    def set_progress(self, t: float) -> None:
        p = self.params
        t = min(max(t, 0.0), 1.0)
        if p.tau_schedule == "epoch":
            if self.epochs is None:
                raise ValueError("the per-epoch Gumbel temperature needs setup() (the epochs)")
            epoch = min(int(t * self.epochs + 1e-9), self.epochs - 1)
            t = epoch / (self.epochs - 1) if self.epochs > 1 else 0.0
        self.tau = p.tau_max - (p.tau_max - p.tau_min) * t

    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        logits = (torch.log_softmax(alpha, dim=-1) + gumbel_noise(alpha)) / self.tau
        soft = torch.softmax(logits, dim=-1)
        if not self.params.hard:
            return soft
        index = soft.detach().argmax(dim=-1, keepdim=True)
        one_hot = torch.zeros_like(soft).scatter_(-1, index, 1.0)
        return one_hot - soft.detach() + soft

    def probs(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        return torch.softmax(alpha, dim=-1)

    def active(self, alpha: torch.Tensor, key: str, weights: torch.Tensor) -> Active | None:
        if not self.params.hard:
            return None
        return [[o] for o in weights.detach().argmax(dim=-1).tolist()]

    def mix(self, arch: Architecture) -> MixWeights:
        """The sampled op weights; with `hard`, the sampled op of every edge of every cell
        read on the host in one transfer (the host chooses which op's kernels to launch:
        the one host read a GDAS step cannot avoid, once per weight and per α step)."""
        if not self.params.hard:
            return super().mix(arch)
        ops = {key: self.weights(alpha, key) for key, alpha in arch.alpha.items()}
        keys = list(ops)
        chosen = torch.cat([ops[k].detach().argmax(dim=-1) for k in keys]).tolist()
        active: dict[str, Active] = {}
        for k in keys:
            n = ops[k].shape[0]
            active[k], chosen = [[o] for o in chosen[:n]], chosen[n:]
        mix = MixWeights(ops, active, arch.edge_weights())
        # a sampled `none` outputs x·0 (XAutoDL's GDAS networks multiply the Zero op's output)
        mix.connect_none = self.params.hard
        if self.scalar_unsampled and self.params.hard:
            biases = {}
            for key, w in mix.ops.items():
                unsampled = torch.ones_like(w).scatter_(-1, w.detach().argmax(-1, keepdim=True), 0)
                biases[key] = (w * unsampled).sum(dim=-1)  # value 0, a gradient for each op
            mix.biases = biases
        return mix

    def metrics(self) -> dict[str, Any]:
        return {"tau": round(self.tau, 6)}
