"""The space's own derivation rule (darts: top-2 edges per node; nb201: argmax per edge)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffnas.parts import Derivation
from diffnas.registry import DERIVATIONS

if TYPE_CHECKING:
    from diffnas.parts import PartContext
    from diffnas.spaces.genotype import Genotype


@DERIVATIONS.register("default")
class SpaceRule(Derivation):
    def derive(self, s: PartContext, final: bool = False) -> Genotype:
        edge_weights = s.arch.edge_weights()
        if edge_weights is not None:
            edge_weights = {k: v.detach() for k, v in edge_weights.items()}
        return s.space.derive(s.relaxation.derivation_weights(s.arch), edge_weights)
