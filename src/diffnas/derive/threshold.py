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
    from diffnas.parts import PartContext
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
    - at least `min_edges` strongest candidates are kept even below the threshold.
      `min_edges: 0` is FairDARTS: a node left without an input is dropped (its outgoing
      edges too, so a node fed only by dropped nodes goes as well), the remaining nodes
      are renumbered in order and the cell concatenates them (FairDARTS's `DCOCell`). A cell
      whose every node would go keeps its first node's strongest edge (FairDARTS's network
      cannot build such a cell). `min_edges: 1` (the default) keeps every node computed.
    darts: dropped edges are left out of the genotype; nb201: they get the op `none` (and
    no node is dropped: nb201 cells have a fixed node set).
    PC-DARTS edge weights (β) are not used: the threshold applies to op weights.
    """

    @dataclass
    class Params:
        threshold: float = 0.85
        min_edges: int = 1

        def __post_init__(self) -> None:
            if self.min_edges < 0:
                raise ConfigError(
                    f"threshold derivation: min_edges must be >= 0 (0: drop nodes left without "
                    f"an input, as FairDARTS; 1: keep every node), got {self.min_edges}"
                )

    def derive(self, s: PartContext, final: bool = False) -> Genotype:
        return self.derive_weights(s.space, s.relaxation.derivation_weights(s.arch))

    def derive_weights(self, space: Space, weights: dict[str, torch.Tensor]) -> Genotype:
        """The genotype of per-key op weights [E, O] (deterministic, e.g. sigmoid(α))."""
        # the space's own derivation gives the cell types, stages and concat lists
        template = space.derive(weights)
        check_one_cell_per_alpha(space, template, "threshold")
        cells = []
        for (key, spec), cell in zip(space.arch_specs().items(), template.cells):
            w = weights[key].detach().float().cpu()
            edges = self._cell_edges(space, spec, w)
            if space.edges_per_node is None or self.params.min_edges > 0:
                cells.append(replace(cell, edges=edges))
                continue
            edges, concat = drop_inputless_nodes(edges, spec.n_inputs)
            if not edges:  # every node went: the first node keeps its strongest edge
                edges = self._first_node_edge(spec, w)
                concat = (spec.n_inputs,)
            cells.append(replace(cell, edges=edges, concat=concat))
        return space.validate(replace(template, cells=tuple(cells)))

    @staticmethod
    def _first_node_edge(spec: ArchSpec, w: torch.Tensor) -> tuple[Edge, ...]:
        ops = [o for o, name in enumerate(spec.ops) if name != "none"]
        first = spec.incoming()[spec.n_inputs]
        row = max(first, key=lambda r: (float(w[r, ops].max()), -r))
        op = max(ops, key=lambda o: float(w[row, o]))
        return (Edge(spec.ops[op], spec.edges[row][0], spec.edges[row][1]),)

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


def drop_inputless_nodes(
    edges: tuple[Edge, ...], n_inputs: int
) -> tuple[tuple[Edge, ...], tuple[int, ...]]:
    """Drop the nodes without an input (and, in turn, those fed only by dropped nodes);
    renumber the rest in order. Returns the edges and the concat list (every kept node)."""
    alive = set(range(n_inputs))
    kept: list[Edge] = []
    for dst in sorted({e.dst for e in edges}):  # sources precede destinations
        incoming = [e for e in edges if e.dst == dst and e.src in alive]
        if incoming:
            alive.add(dst)
            kept.extend(incoming)
    nodes = sorted(alive - set(range(n_inputs)))
    index = {**{i: i for i in range(n_inputs)}, **{d: n_inputs + i for i, d in enumerate(nodes)}}
    renumbered = tuple(replace(e, src=index[e.src], dst=index[e.dst]) for e in kept)
    return renumbered, tuple(index[d] for d in nodes)
