"""The search-space contract: ops with costs, the supernet, derivation, discrete networks.

A space is registered by name in `SPACES`; `get_space(config)` builds it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from diffnas.config import SpaceConfig, SupernetConfig
from diffnas.errors import GenotypeError
from diffnas.registry import SPACES
from diffnas.spaces.genotype import Edge, Genotype
from diffnas.spaces.ops import OpTable
from diffnas.supernet.base import ArchSpec, Supernet


class Space(ABC):
    name: ClassVar[str]
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
        from diffnas.spaces.aca import edge_cost

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
    ) -> nn.Module:
        """The discrete network of a genotype (what gets retrained and exported)."""

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
