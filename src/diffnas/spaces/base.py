"""The search-space contract: ops with costs, the supernet, derivation, discrete networks.

A space is registered by name in `SPACES`; `get_space(config)` builds it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from diffnas.config import SpaceConfig, SupernetConfig
from diffnas.errors import ConfigError, GenotypeError, did_you_mean
from diffnas.registry import SPACES
from diffnas.spaces.genotype import Edge, Genotype
from diffnas.spaces.ops import OpTable
from diffnas.supernet.base import ArchSpec, Supernet


class Space(ABC):
    name: ClassVar[str]
    # Inputs each node keeps in a derived cell (darts: 2; the other edges are left out of the
    # genotype). None: the cell lists every edge, and a dropped edge has the op `none` (nb201).
    edges_per_node: ClassVar[int | None] = None
    op_table: ClassVar[OpTable]
    default_layers: ClassVar[int]

    def __init__(self, cfg: SpaceConfig | None = None) -> None:
        self.cfg = cfg or SpaceConfig(name=self.name)
        self.ops: list[str] = self.op_table.select(self.cfg.exclude_ops)

    @property
    def layers(self) -> int:
        return self.cfg.layers if self.cfg.layers is not None else self.default_layers

    def op_cost(self, metric: str, op: str, channels: int, stride: int, h: int, w: int) -> int:
        d = self.op_table[op]
        return d.params(channels, stride) if metric == "params" else d.macs(channels, stride, h, w)

    def edge_cost(
        self, metric: str, edge: Edge, channels: int, stride: int, h: int = 1, w: int = 1
    ) -> int:
        """Cost of a genotype edge in a discrete network, ACA skip fraction included."""
        from diffnas.spaces.split_edge import edge_cost

        return edge_cost(self.op_table, metric, edge, channels, stride, h, w)

    def parameter_free(self, op: str) -> bool:
        return self.op_table[op].parameter_free

    @abstractmethod
    def arch_specs(self) -> dict[str, ArchSpec]:
        """The α tensors this space's supernet needs."""

    @abstractmethod
    def build_supernet(
        self, net: SupernetConfig, in_channels: int, num_classes: int, input_size: int
    ) -> Supernet: ...

    @abstractmethod
    def derive(
        self, weights: dict[str, torch.Tensor], edge_weights: dict[str, torch.Tensor] | None = None
    ) -> Genotype:
        """The space's standard derivation rule from (deterministic) op weights."""

    def one_hot(self, genotype: Genotype) -> dict[str, torch.Tensor]:
        """The genotype as 0/1 op weights: per arch key, [E, O] with a 1 at each kept (edge, op).

        The inverse of `derive` on its own output: cell i of the genotype is the i-th arch key
        (the order `derive` writes them). Edges the genotype drops are all-zero rows.
        """
        self.check_space(genotype)
        specs = self.arch_specs()
        if len(genotype.cells) != len(specs):
            raise GenotypeError(
                f"{self.name} genotype has {len(genotype.cells)} cell(s) but this supernet has "
                f"{len(specs)} architecture key(s) ({', '.join(specs)}); use a genotype "
                f"derived from this space's configuration"
            )
        out = {}
        for (key, spec), cell in zip(specs.items(), genotype.cells):
            if cell.type != spec.cell_type:
                raise GenotypeError(
                    f"genotype cell for '{key}' is a {cell.type} cell, expected {spec.cell_type}"
                )
            table = torch.zeros(spec.shape)
            for e in cell.edges:
                if (e.src, e.dst) not in spec.edges:
                    raise GenotypeError(
                        f"genotype cell '{key}': edge {e.src}->{e.dst} is not an edge of the "
                        f"search cell"
                    )
                if e.op not in spec.ops:
                    raise GenotypeError(
                        f"genotype cell '{key}': op '{e.op}' is not in this search's op set "
                        f"({', '.join(spec.ops)})"
                    )
                table[spec.edges.index((e.src, e.dst)), spec.ops.index(e.op)] = 1.0
            out[key] = table
        return out

    def discretize(
        self, weights: dict[str, torch.Tensor], edge_weights: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """One-hot of the architecture the standard derivation picks from `weights`.

        Same keys, shapes, device and dtype as `weights`; not differentiable (a constant target).
        """
        genotype = self.derive(weights, edge_weights)
        return {
            k: t.to(device=weights[k].device, dtype=weights[k].dtype)
            for k, t in self.one_hot(genotype).items()
        }

    @abstractmethod
    def validate(self, genotype: Genotype) -> Genotype:
        """Raise GenotypeError naming the problem, or return the genotype."""

    @abstractmethod
    def build_network(
        self,
        genotype: Genotype,
        *,
        num_classes: int,
        in_channels: int = 3,
        channels: int | None = None,
        layers: int | None = None,
        auxiliary: bool = False,
        drop_path: float = 0.0,
        network: str = "cifar",
    ) -> nn.Module:
        """The discrete network of a genotype (what gets retrained and exported).

        `network` names the skeleton around the cells: "cifar" (every space), "imagenet"
        (darts: the DARTS ImageNet mobile network with its stride-8 stem).
        """

    def check_network(self, network: str, known: tuple[str, ...] = ("cifar",)) -> None:
        if network not in known:
            raise ConfigError(
                f"the {self.name} space has no '{network}' network{did_you_mean(network, known)}; "
                f"its networks: {', '.join(known)}"
            )

    def check_space(self, genotype: Genotype) -> None:
        if genotype.space != self.name:
            raise GenotypeError(
                f"genotype{' ' + repr(genotype.name) if genotype.name else ''} is for the "
                f"'{genotype.space}' space, not '{self.name}'; pass --space {genotype.space}"
            )

    def param_free_share(self, genotype: Genotype) -> float:
        """Share of the genotype's edges whose op has no parameters (collapse indicator)."""
        edges = [e for c in genotype.cells for e in c.edges if e.op != "none"]
        if not edges:
            return 1.0
        return sum(self.parameter_free(e.op) for e in edges) / len(edges)


def get_space(cfg: SpaceConfig | str) -> Space:
    if isinstance(cfg, str):
        cfg = SpaceConfig(name=cfg)
    cls = SPACES.get(cfg.name)
    return cls(cfg)


def space_for(genotype: Genotype) -> Space:
    """The space a genotype belongs to, with the genotype validated against it."""
    space = get_space(genotype.space)
    space.validate(genotype)
    return space
