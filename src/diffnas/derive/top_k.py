"""Top-K derivation: the K most probable discrete blocks of the searched α, saved with the run.

A block is the space's derived genotype (darts: the normal and reduction cells). Its score is
Σ log(op weight · edge weight) over the kept (edge, op) pairs; the space's own rule (darts:
the 2 strongest incoming edges per node, each with its strongest non-`none` op; nb201: argmax
per edge) picks exactly the top-scoring block, so rank 1 is the `default` derivation. Ranks
2..K change the fewest, least certain choices. At the search's end the K blocks are written
to `blocks.json` in the run directory, where `diffnas netsearch` picks them up.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffnas.derive import check_one_cell_per_alpha
from diffnas.errors import ConfigError, GenotypeError
from diffnas.parts import Derivation
from diffnas.registry import DERIVATIONS
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype
from diffnas.utils import atomic_write_text

if TYPE_CHECKING:
    from diffnas.parts import PartContext
    from diffnas.spaces.base import Space

BLOCKS_FILE = "blocks.json"

# one option of a slot: (score, ((row, op index), ...))
Option = tuple[float, tuple[tuple[int, int], ...]]


def _slot_options(
    w: torch.Tensor,
    ew: torch.Tensor | None,
    rows: list[int],
    ops: tuple[str, ...],
    keep: int | None,
) -> list[Option]:
    """Every choice of one slot, best first (ties: enumeration order, like the default rule)."""
    logw = torch.log(w.clamp_min(1e-30))
    if ew is not None:
        logw = logw + torch.log(ew.clamp_min(1e-30)).unsqueeze(1)
    options: list[Option] = []
    if keep is None:  # one slot per edge: every op, `none` included (nb201)
        (r,) = rows
        options = [(float(logw[r, o]), ((r, o),)) for o in range(len(ops))]
    else:
        cands = [o for o, name in enumerate(ops) if name != "none"]
        for chosen in itertools.combinations(rows, min(keep, len(rows))):
            for picks in itertools.product(cands, repeat=len(chosen)):
                score = sum(float(logw[r, o]) for r, o in zip(chosen, picks))
                options.append((score, tuple(zip(chosen, picks))))
    order = sorted(range(len(options)), key=lambda i: (-options[i][0], i))
    return [options[i] for i in order]


def k_best(slots: list[list[Option]], k: int) -> list[tuple[float, tuple[int, ...]]]:
    """The k best index vectors (one option per slot) by total score, best first."""
    start = tuple(0 for _ in slots)
    total = sum(s[0][0] for s in slots)
    heap = [(-total, start)]
    seen = {start}
    out: list[tuple[float, tuple[int, ...]]] = []
    while heap and len(out) < k:
        neg, idx = heapq.heappop(heap)
        out.append((-neg, idx))
        for i, slot in enumerate(slots):
            if idx[i] + 1 < len(slot):
                nxt = (*idx[:i], idx[i] + 1, *idx[i + 1 :])
                if nxt not in seen:
                    seen.add(nxt)
                    score = -neg - slot[idx[i]][0] + slot[idx[i] + 1][0]
                    heapq.heappush(heap, (-score, nxt))
    return out


def top_k_blocks(
    space: Space,
    weights: dict[str, torch.Tensor],
    edge_weights: dict[str, torch.Tensor] | None,
    k: int,
) -> list[tuple[float, Genotype]]:
    """The k highest-scoring genotypes of `weights` with their scores (log-probabilities)."""
    keep = space.edges_per_node
    slots: list[list[Option]] = []
    where: list[tuple[str, int | None]] = []  # (arch key, destination node) of each slot
    specs = space.arch_specs()
    check_one_cell_per_alpha(space, space.derive(weights), "top_k")
    for key, spec in specs.items():
        w = weights[key].detach().double().cpu()
        ew = None if edge_weights is None else edge_weights[key].detach().double().cpu()
        if keep is None:
            for r in range(len(spec.edges)):
                slots.append(_slot_options(w, ew, [r], spec.ops, None))
                where.append((key, None))
        else:
            for dst, rows in spec.incoming().items():
                slots.append(_slot_options(w, ew, rows, spec.ops, keep))
                where.append((key, dst))
    out = []
    for score, idx in k_best(slots, k):
        picked: dict[str, list[tuple[int, int]]] = {key: [] for key in specs}
        for (key, _), slot, i in zip(where, slots, idx):
            picked[key].extend(slot[i][1])
        cells = []
        for key, spec in specs.items():
            chosen = sorted(
                picked[key], key=lambda ro: (spec.edges[ro[0]][1], spec.edges[ro[0]][0])
            )
            edges = tuple(Edge(spec.ops[o], *spec.edges[r]) for r, o in chosen)
            concat = tuple(sorted(spec.incoming())) if keep is not None else None
            cells.append(CellGenotype(spec.cell_type, edges, spec.stage, concat))
        out.append((score, Genotype(space.name, tuple(cells))))
    return out


def save_blocks(path: Path, blocks: Sequence[tuple[float | None, Genotype]]) -> None:
    """blocks.json: rank, log-probability under the searched α (None: unknown), genotype."""
    records = [
        {
            "rank": i + 1,
            "log_prob": None if score is None else round(score, 6),
            "genotype": g.to_json(),
        }
        for i, (score, g) in enumerate(blocks)
    ]
    atomic_write_text(path, json.dumps({"k": len(records), "blocks": records}, indent=1) + "\n")


def load_blocks(source: str | Path) -> list[Genotype]:
    """The blocks of a search run (its blocks.json, else its genotype.json) or a blocks file."""
    from diffnas.spaces import load_genotype, space_for

    path = Path(source)
    file = path / BLOCKS_FILE if path.is_dir() else path
    if file.name != BLOCKS_FILE or not file.exists():
        return [load_genotype(source)]
    try:
        data = json.loads(file.read_text())
        records = data["blocks"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise GenotypeError(f"'{file}' is not a blocks file ({exc})") from None
    out = []
    for i, rec in enumerate(records):
        g = Genotype.from_json(rec["genotype"], f"{file}: blocks[{i}]")
        space_for(g)
        out.append(g)
    if not out:
        raise GenotypeError(f"'{file}' lists no blocks")
    return out


@DERIVATIONS.register("top_k")
class TopK(Derivation):
    """Rank 1 each epoch (= the space's rule); at the end, the K best blocks in blocks.json."""

    @dataclass
    class Params:
        k: int = 4

        def __post_init__(self) -> None:
            if self.k < 1:
                raise ConfigError(f"search.derive (top_k): k must be at least 1, got {self.k}")

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.last: list[tuple[float, Genotype]] = []

    def blocks(self, s: PartContext, k: int | None = None) -> list[tuple[float, Genotype]]:
        edge_weights = s.arch.edge_weights()
        if edge_weights is not None:
            edge_weights = {key: v.detach() for key, v in edge_weights.items()}
        weights = s.relaxation.derivation_weights(s.arch)
        return top_k_blocks(s.space, weights, edge_weights, k or self.params.k)

    def derive(self, s: PartContext, final: bool = False) -> Genotype:
        if not final:
            return self.blocks(s, 1)[0][1]
        self.last = self.blocks(s)
        if s.run is not None:
            save_blocks(s.run.path / BLOCKS_FILE, self.last)
        return self.last[0][1]

    def metrics(self) -> dict[str, Any]:
        if not self.last:
            return {}
        return {"log_prob": [round(sc, 4) for sc, _ in self.last]}
