"""The genome of the network-level search and the network it decodes to.

Integer vector [n_0, ..., n_{S-1}, c, b_0, ..., b_{S-1}]: normal cells per stage (within
`blocks`), the index of the initial channels in `channels`, and the block (index into the
top-K list of the block search) each stage uses. Stage s takes its normal cell from block
b_s; the reduction cell opening stage s (s >= 1) is block b_s's reduction cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffnas.errors import ConfigError, GenotypeError
from diffnas.spaces.genotype import CellGenotype, Genotype, NetworkLayout


@dataclass(frozen=True)
class Candidate:
    """A decoded genome."""

    stages: tuple[int, ...]  # normal cells per stage
    channels: int
    blocks: tuple[int, ...]  # block index per stage

    @property
    def key(self) -> str:
        """A stable text id (file records, seeds)."""
        return (
            f"s{'-'.join(map(str, self.stages))}_c{self.channels}_"
            f"b{'-'.join(map(str, self.blocks))}"
        )


@dataclass(frozen=True)
class GenomeSpace:
    n_stages: int
    min_blocks: int
    max_blocks: int
    channels: tuple[int, ...]
    n_choices: int  # blocks available from the block search

    def __post_init__(self) -> None:
        if self.n_stages < 2:
            raise ConfigError(f"netsearch.stages must be at least 2, got {self.n_stages}")
        if not 0 <= self.min_blocks <= self.max_blocks or self.max_blocks < 1:
            raise ConfigError(
                f"netsearch.blocks must be [min, max] normal cells per stage with "
                f"0 <= min <= max and max >= 1, got [{self.min_blocks}, {self.max_blocks}]"
            )
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(
                f"netsearch.channels must list initial channel counts >= 1, got {list(self.channels)}"
            )
        if self.n_choices < 1:
            raise ConfigError("the network search needs at least one block")

    @property
    def n_var(self) -> int:
        return 2 * self.n_stages + 1

    @property
    def lower(self) -> list[int]:
        return [self.min_blocks] * self.n_stages + [0] + [0] * self.n_stages

    @property
    def upper(self) -> list[int]:
        return (
            [self.max_blocks] * self.n_stages
            + [len(self.channels) - 1]
            + [self.n_choices - 1] * self.n_stages
        )

    def decode(self, x: list[int] | tuple[int, ...]) -> Candidate:
        x = [int(v) for v in x]
        if len(x) != self.n_var or any(
            not lo <= v <= hi for v, lo, hi in zip(x, self.lower, self.upper)
        ):
            raise GenotypeError(
                f"genome {x} is outside the search space (bounds {self.lower} .. {self.upper})"
            )
        s = self.n_stages
        return Candidate(tuple(x[:s]), self.channels[x[s]], tuple(x[s + 1 :]))

    def encode(self, c: Candidate) -> list[int]:
        if c.channels not in self.channels:
            raise GenotypeError(
                f"{c.channels} initial channels is not a choice of this search "
                f"({list(self.channels)})"
            )
        x = [*c.stages, self.channels.index(c.channels), *c.blocks]
        self.decode(x)  # bounds check
        return x


def network_genotype(blocks: list[Genotype], c: Candidate, name: str | None = None) -> Genotype:
    """The per-stage darts genotype plus network section of candidate `c`."""
    cells: list[CellGenotype] = []
    for stage, b in enumerate(c.blocks):
        block = blocks[b]
        if block.space != "darts":
            raise GenotypeError(
                f"the network search builds darts networks; block {b} is a {block.space} genotype"
            )
        normal = block.cell_for("normal", 0)
        cells.append(CellGenotype("normal", normal.edges, stage, normal.concat))
        if stage > 0:
            reduce = block.cell_for("reduce", 0)
            cells.append(CellGenotype("reduce", reduce.edges, stage - 1, reduce.concat))
    return Genotype(
        "darts",
        tuple(cells),
        name or c.key,
        {"blocks": list(c.blocks)},
        NetworkLayout(c.stages, c.channels),
    )
