"""Random search with weight sharing: sample cells uniformly, keep the one the supernet rates best.

The baseline that tells whether a search protocol is hard at all (Li & Talwalkar, UAI 2019;
Yang et al., ICLR 2020 "NAS evaluation is frustratingly hard"). With the `uniform`
relaxation (every step trains one uniformly drawn path) and the `never` schedule (no α
steps), the supernet's weights are shared fairly by all cells; this derivation then draws
`samples` cells uniformly from the space (once per run, from the run's seed) and scores each
by the supernet's accuracy with only that cell's ops switched on (the discrete path) on the
first `eval_images` images of the validation split, without augmentation. The best score
wins (ties: the earlier sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffnas.data.transforms import normalize
from diffnas.errors import ConfigError
from diffnas.parts import Derivation
from diffnas.registry import DERIVATIONS
from diffnas.spaces.genotype import Genotype
from diffnas.supernet.mixed import MixWeights
from diffnas.utils import derived_seed

if TYPE_CHECKING:
    from diffnas.parts import PartContext
    from diffnas.spaces.base import Space

EVAL_BATCH = 256


def sample_cells(space: Space, n: int, seed: int) -> list[Genotype]:
    """`n` genotypes drawn uniformly: the space's own derivation of i.i.d. uniform op weights.

    nb201: each edge's op uniform over the op set; darts: each edge's op uniform over the
    non-`none` ops and each node's 2 inputs uniform over its predecessors.
    """
    gen = torch.Generator().manual_seed(seed)
    specs = space.arch_specs()
    out = []
    for _ in range(n):
        weights = {k: torch.rand(spec.shape, generator=gen) for k, spec in specs.items()}
        out.append(space.derive(weights))
    return out


def pick_best(candidates: list[Genotype], scores: list[float]) -> tuple[int, Genotype]:
    """The index and genotype of the highest score (the first one on ties)."""
    if not candidates or len(candidates) != len(scores):
        raise ValueError("pick_best needs one score per candidate")
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best, candidates[best]


def path_mix(space: Space, genotype: Genotype, s: PartContext) -> MixWeights:
    """One-hot op weights of `genotype`, with only its ops computed (edges it drops: none)."""
    ops = {k: v.to(s.device) for k, v in space.one_hot(genotype).items()}
    active = {
        k: [[int(i)] if row.any() else [] for i, row in zip(w.argmax(1), w)] for k, w in ops.items()
    }
    edges = s.arch.edge_weights()
    if edges is not None:
        edges = {k: v.detach() for k, v in edges.items()}
    return MixWeights(ops, active, edges)


@DERIVATIONS.register("random_search")
class RandomSearch(Derivation):
    @dataclass
    class Params:
        # cells drawn uniformly from the space and scored by the supernet
        samples: int = 100
        # validation images each cell is scored on (the first ones of the split)
        eval_images: int = 1000
        # score the candidates at every epoch's end (a per-epoch curve), not only at the end
        every_epoch: bool = True

        def __post_init__(self) -> None:
            if self.samples < 1 or self.eval_images < 1:
                raise ConfigError(
                    f"derive random_search: samples and eval_images must be >= 1, got "
                    f"samples={self.samples}, eval_images={self.eval_images}"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.candidates: list[Genotype] | None = None
        self.best: Genotype | None = None
        self.best_index = -1
        self.best_score = math.nan
        self.mean_score = math.nan
        self.scored_step = -1

    def _candidates(self, s: PartContext) -> list[Genotype]:
        if self.candidates is None:
            self.candidates = sample_cells(
                s.space, self.params.samples, derived_seed(s.config.seed, 7)
            )
        return self.candidates

    def _eval_data(self, s: PartContext) -> tuple[torch.Tensor, torch.Tensor]:
        val = s.data.val
        n = min(self.params.eval_images, val.num_samples)
        return normalize(val.images[:n], val.mean, val.std), val.labels[:n]

    @torch.no_grad()
    def score(self, s: PartContext, genotype: Genotype) -> float:
        """Validation accuracy (%) of the supernet restricted to `genotype`'s ops."""
        x, y = self._eval_data(s)
        mix = path_mix(s.space, genotype, s)
        was_training = s.model.training
        s.model.eval()
        try:
            correct = 0
            for i in range(0, len(y), EVAL_BATCH):
                logits = s.model(x[i : i + EVAL_BATCH], mix)
                correct += int((logits.argmax(1) == y[i : i + EVAL_BATCH]).sum())
        finally:
            s.model.train(was_training)
        return 100.0 * correct / len(y)

    def derive(self, s: PartContext, final: bool = False) -> Genotype:
        candidates = self._candidates(s)
        if self.scored_step == s.global_step and self.best is not None:
            return self.best
        due = final or (self.params.every_epoch and s.global_step > 0)
        if not due:
            return self.best if self.best is not None else candidates[0]
        scores = [self.score(s, g) for g in candidates]
        self.best_index, self.best = pick_best(candidates, scores)
        self.best_score = scores[self.best_index]
        self.mean_score = sum(scores) / len(scores)
        self.scored_step = s.global_step
        return self.best

    def metrics(self) -> dict[str, Any]:
        return {
            "best_val_acc": self.best_score,
            "mean_val_acc": self.mean_score,
            "best_index": self.best_index,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": None if self.best is None else self.best.to_json(),
            "best_index": self.best_index,
            "best_score": self.best_score,
            "mean_score": self.mean_score,
            "scored_step": self.scored_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best")
        self.best = None if best is None else Genotype.from_json(best)
        self.best_index = int(state.get("best_index", -1))
        self.best_score = float(state.get("best_score", math.nan))
        self.mean_score = float(state.get("mean_score", math.nan))
        self.scored_step = int(state.get("scored_step", -1))
