"""FairDARTS's derivation: keep the edges whose strongest op weight passes a threshold.

Meant for independent (sigmoid) op weights pushed to 0 or 1 by the zero-one loss; a node
may end up with fewer inputs than the space's usual derivation gives it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from diffnas.derive import check_one_cell_per_alpha
from diffnas.errors import ConfigError
from diffnas.parts import Derivation
from diffnas.registry import DERIVATIONS
from diffnas.spaces.genotype import Edge, Genotype

if TYPE_CHECKING:
    from diffnas.search import Searcher
    from diffnas.spaces.base import Space
    from diffnas.supernet.base import ArchSpec


@DERIVATIONS.register("threshold")
class Threshold(Derivation):
    """FairDARTS `threshold_sparse` (Chu et al., ECCV 2020), defined for both spaces.

    Per node, over its incoming edges (edge strength = its largest non-`none` op weight,
    op = that op):
    - candidates: the `space.edges_per_node` strongest edges (darts: 2, FairDARTS's
      "|edge| <= 2 per node"); every incoming edge where the space lists all edges (nb201);
    - kept: the candidates whose strength is >= `threshold` (0.85 in FairDARTS);
    - [ours] at least `min_edges` (default 1) strongest candidates are kept even below the
      threshold: FairDARTS drops nodes left without inputs, our genotypes keep every node
      computed (a darts genotype needs an input for every node; on nb201 it keeps the cell
      connected).
    darts: dropped edges are left out of the genotype; nb201: they get the op `none`.
    PC-DARTS edge weights (β) are not used: the threshold applies to op weights.
    """

    @dataclass
    class Params:
        threshold: float = 0.85
        min_edges: int = 1

        def __post_init__(self) -> None:
            if self.min_edges < 1:
                raise ConfigError(
                    f"threshold derivation: min_edges must be >= 1 (every node of a derived "
                    f"cell needs an input), got {self.min_edges}"
                )

    def derive(self, s: Searcher, final: bool = False) -> Genotype:
        return self.derive_weights(s.space, s.relaxation.derivation_weights(s.arch))

    def derive_weights(self, space: Space, weights: dict[str, torch.Tensor]) -> Genotype:
        """The genotype of per-key op weights [E, O] (deterministic, e.g. sigmoid(α))."""
        # the space's own derivation gives the cell types, stages and concat lists
        template = space.derive(weights)
        check_one_cell_per_alpha(space, template, "threshold")
        cells = []
        for (key, spec), cell in zip(space.arch_specs().items(), template.cells):
            edges = self._cell_edges(space, spec, weights[key].detach().float().cpu())
            cells.append(replace(cell, edges=edges))
        return space.validate(replace(template, cells=tuple(cells)))

    def _cell_edges(self, space: Space, spec: ArchSpec, w: torch.Tensor) -> tuple[Edge, ...]:
        candidates_ops = [o for o, name in enumerate(spec.ops) if name != "none"]
        strength = w[:, candidates_ops].max(dim=1)
        best = {r: candidates_ops[int(i)] for r, i in enumerate(strength.indices)}
        edges = []
        for dst, rows in spec.incoming().items():
            # stable sort: ties go to the lower source node, as in DARTS
            ranked = sorted(rows, key=lambda r: -float(strength.values[r]))
            if space.edges_per_node is not None:
                ranked = ranked[: space.edges_per_node]
            kept = [r for r in ranked if float(strength.values[r]) >= self.params.threshold]
            for r in ranked:
                if len(kept) >= self.params.min_edges:
                    break
                if r not in kept:
                    kept.append(r)
            for r in sorted(rows, key=lambda r: spec.edges[r][0]):
                if r in kept:
                    edges.append(Edge(spec.ops[best[r]], spec.edges[r][0], dst))
                elif space.edges_per_node is None:
                    edges.append(Edge("none", spec.edges[r][0], dst))
        return tuple(edges)
