"""Genotypes: the discrete architectures a search produces, as validated JSON.

A genotype is a list of cells; each cell has a type (normal/reduce), the stage it belongs
to (None = shared by every stage), and its edges `[op, from, to]` (plus an optional ACA
skip fraction). The classic DARTS pair is two shared cells; RDARTS has five per-stage cells.
An optional `network` section fixes the discrete network's skeleton (normal cells per stage,
initial channels), as the network-level search (`diffnas netsearch`) writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffnas.errors import GenotypeError

CELL_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class Edge:
    op: str
    src: int
    dst: int
    # ACA: fraction of the output channels carried by identity instead of the op.
    skip_fraction: float = 0.0

    def to_json(self) -> list[Any]:
        out: list[Any] = [self.op, self.src, self.dst]
        if self.skip_fraction:
            out.append(round(self.skip_fraction, 6))
        return out


@dataclass(frozen=True)
class CellGenotype:
    type: str
    edges: tuple[Edge, ...]
    stage: int | None = None
    concat: tuple[int, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "stage": self.stage}
        out["edges"] = [e.to_json() for e in self.edges]
        if self.concat is not None:
            out["concat"] = list(self.concat)
        return out

    def ops(self) -> list[str]:
        return [e.op for e in self.edges]


@dataclass(frozen=True)
class NetworkLayout:
    """The skeleton of a discrete network: normal cells in each stage, initial channels.

    Stages are separated by one reduction cell each (darts: `stages=(2, 2, 2)` with
    `channels=16` is the 8-cell C=16 network, reductions at 1/3 and 2/3 of depth).
    """

    stages: tuple[int, ...]
    channels: int

    @property
    def layers(self) -> int:
        """Cells in total, reductions included."""
        return sum(self.stages) + len(self.stages) - 1

    def to_json(self) -> dict[str, Any]:
        return {"stages": list(self.stages), "channels": self.channels}

    @staticmethod
    def from_json(raw: Any, where: str) -> NetworkLayout:
        if not isinstance(raw, dict) or set(raw) != {"stages", "channels"}:
            raise GenotypeError(
                f"{where}: 'network' must be an object with keys stages (normal cells per "
                f'stage) and channels, e.g. {{"stages": [2, 2, 2], "channels": 16}}'
            )
        stages, channels = raw["stages"], raw["channels"]
        if (
            not isinstance(stages, list)
            or not stages
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in stages)
            or sum(stages) < 1
        ):
            raise GenotypeError(
                f"{where}: network.stages must be a non-empty list of cell counts >= 0 with at "
                f"least one cell, got {stages!r}"
            )
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise GenotypeError(
                f"{where}: network.channels must be an integer >= 1, got {channels!r}"
            )
        return NetworkLayout(tuple(stages), channels)


@dataclass(frozen=True)
class Genotype:
    space: str
    cells: tuple[CellGenotype, ...]
    name: str | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # the discrete network's skeleton; None: the network builder's sizes (e.g. 20 cells, C=36)
    network: NetworkLayout | None = None

    # ------------------------------------------------------------------ access
    def cells_of(self, cell_type: str) -> list[CellGenotype]:
        return [c for c in self.cells if c.type == cell_type]

    def cell_for(self, cell_type: str, stage: int, position: float = 0.0) -> CellGenotype:
        """The searched cell that an eval-network cell uses.

        Eval cells of `cell_type` in `stage` (for reductions: the reduction's index) use the
        searched cells of that type and stage, else the shared ones (stage None), else those
        of the nearest searched stage (e.g. an eval net with more reductions than the search
        reuses the last searched reduction cell). When a stage has several searched cells,
        relative `position` in [0, 1) within the stage picks one.
        """
        own = [c for c in self.cells if c.type == cell_type and c.stage == stage]
        if not own:
            own = [c for c in self.cells if c.type == cell_type and c.stage is None]
        if not own:
            staged = [c.stage for c in self.cells_of(cell_type) if c.stage is not None]
            if not staged:
                raise GenotypeError(f"genotype has no {cell_type} cell")
            # ties go to the later stage (the eval net is deeper than the searched one)
            nearest = min(staged, key=lambda s: (abs(s - stage), -s))
            own = [c for c in self.cells if c.type == cell_type and c.stage == nearest]
        index = min(int(position * len(own)), len(own) - 1)
        return own[index]

    @property
    def is_shared(self) -> bool:
        return all(c.stage is None for c in self.cells)

    # ------------------------------------------------------------------ io
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"space": self.space}
        if self.name:
            out["name"] = self.name
        out["cells"] = [c.to_json() for c in self.cells]
        if self.network is not None:
            out["network"] = self.network.to_json()
        if self.info:
            out["info"] = self.info
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        from diffnas.utils import atomic_write_text

        atomic_write_text(Path(path), self.dumps())

    @staticmethod
    def from_json(data: Any, source: str = "genotype") -> Genotype:
        """Parse (structure only); `validate_genotype` checks it against its space."""
        if not isinstance(data, dict):
            raise GenotypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        for key in data:
            if key not in ("space", "name", "cells", "network", "info"):
                raise GenotypeError(
                    f"{source}: unknown key '{key}'; a genotype has keys space, name, cells, "
                    f"network, info"
                )
        if "space" not in data or not isinstance(data["space"], str):
            raise GenotypeError(f'{source}: missing \'space\' (e.g. "darts" or "nb201")')
        cells_raw = data.get("cells")
        if not isinstance(cells_raw, list) or not cells_raw:
            raise GenotypeError(f"{source}: 'cells' must be a non-empty list")
        cells = [_parse_cell(c, f"{source}: cells[{i}]") for i, c in enumerate(cells_raw)]
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise GenotypeError(f"{source}: 'name' must be a string, got {name!r}")
        info = data.get("info") or {}
        if not isinstance(info, dict):
            raise GenotypeError(f"{source}: 'info' must be an object")
        network = (
            NetworkLayout.from_json(data["network"], source)
            if data.get("network") is not None
            else None
        )
        return Genotype(data["space"], tuple(cells), name, info, network)

    @staticmethod
    def load(path: str | Path) -> Genotype:
        path = Path(path)
        if not path.exists():
            raise GenotypeError(f"genotype file '{path}' does not exist")
        from diffnas.config import read_text_file

        text = read_text_file(path, "genotype file", GenotypeError)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"genotype file '{path}' is not valid JSON: {exc}") from None
        except RecursionError:
            raise GenotypeError(f"genotype file '{path}' is nested too deeply") from None
        return Genotype.from_json(data, source=str(path))


def _parse_cell(raw: Any, where: str) -> CellGenotype:
    if not isinstance(raw, dict):
        raise GenotypeError(f"{where}: expected an object with type, stage, edges")
    for key in raw:
        if key not in ("type", "stage", "edges", "concat"):
            raise GenotypeError(
                f"{where}: unknown key '{key}'; a cell has type, stage, edges, concat"
            )
    cell_type = raw.get("type", "normal")
    if cell_type not in CELL_TYPES:
        raise GenotypeError(f"{where}: type must be one of {CELL_TYPES}, got {cell_type!r}")
    stage = raw.get("stage")
    if stage is not None and (not isinstance(stage, int) or isinstance(stage, bool) or stage < 0):
        raise GenotypeError(f"{where}: stage must be null or a non-negative integer, got {stage!r}")
    edges_raw = raw.get("edges")
    if not isinstance(edges_raw, list) or not edges_raw:
        raise GenotypeError(f"{where}: 'edges' must be a non-empty list of [op, from, to]")
    edges = []
    for j, e in enumerate(edges_raw):
        if (
            not isinstance(e, list)
            or len(e) not in (3, 4)
            or not isinstance(e[0], str)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in e[1:3])
        ):
            raise GenotypeError(
                f"{where}.edges[{j}]: expected [op, from, to] or [op, from, to, skip_fraction], got {e!r}"
            )
        if len(e) == 4 and (isinstance(e[3], bool) or not isinstance(e[3], int | float)):
            raise GenotypeError(f"{where}.edges[{j}]: skip fraction must be a number, got {e[3]!r}")
        s = float(e[3]) if len(e) == 4 else 0.0
        if not 0.0 <= s <= 1.0:
            raise GenotypeError(f"{where}.edges[{j}]: skip fraction must be in [0, 1], got {s}")
        edges.append(Edge(e[0], e[1], e[2], s))
    concat = raw.get("concat")
    if concat is not None:
        if not isinstance(concat, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in concat
        ):
            raise GenotypeError(f"{where}: concat must be a list of node indices")
        concat = tuple(concat)
    return CellGenotype(cell_type, tuple(edges), stage, concat)
