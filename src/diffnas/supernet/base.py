"""The supernet contract and the architecture parameters (α, and β for edge normalization).

A space builds a `Supernet`; `arch_specs` says which α tensors it needs (one per cell
key: shared 'normal'/'reduce' or per-cell 'cell3'); `Architecture` holds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from diffnas.supernet.mixed import MixWeights


@dataclass(frozen=True)
class ArchSpec:
    """What one α tensor of shape [len(edges), len(ops)] parametrizes."""

    key: str
    cell_type: str  # "normal" or "reduce"
    stage: int | None  # None: shared by every stage
    edges: tuple[tuple[int, int], ...]
    ops: tuple[str, ...]
    n_inputs: int

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.edges), len(self.ops))

    def incoming(self) -> dict[int, list[int]]:
        """Edge rows grouped by destination node."""
        out: dict[int, list[int]] = {}
        for i, (_, dst) in enumerate(self.edges):
            out.setdefault(dst, []).append(i)
        return out


@dataclass(frozen=True)
class CellSite:
    """Where a searched cell sits in the supernet: for cost tables."""

    key: str
    channels: int
    height: int
    width: int
    reduction: bool


class Supernet(nn.Module):
    """A network of search cells; forward(x, mix) -> logits."""

    arch_specs: dict[str, ArchSpec]
    sites: list[CellSite]
    op_cost: Callable[[str, str, int, int, int, int], int]  # (metric, op, C, stride, H, W)
    # Layout of activations and conv weights: channels-last runs the convolutions, pools
    # and BNs of these small-channel cells markedly faster on CPUs (see docs/engine.md).
    memory_format: torch.memory_format = torch.channels_last

    def set_layout(self, x: torch.Tensor | None = None) -> torch.Tensor | None:
        """Put the weights (no x) or the input x in this supernet's memory format."""
        if x is None:
            relayout(self, self.memory_format)
            if self.memory_format == torch.channels_last:
                from diffnas.supernet.kernels import BatchStatsBatchNorm2d

                for m in self.modules():  # accurate BN statistics on channels-last tensors
                    if type(m) is nn.BatchNorm2d:
                        m.__class__ = BatchStatsBatchNorm2d
            return None
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def forward(self, x: torch.Tensor, mix: MixWeights) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def edge_stride(self, spec: ArchSpec, src: int, reduction: bool) -> int:
        return 2 if reduction and src < spec.n_inputs else 1

    def cost_tables(
        self, metric: str = "params", channels: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Exact cost of each (edge, op) of each α, summed over the cells sharing that α.

        metric: 'params' (parameters of the op in a discrete network) or 'macs'
        (multiply-adds at the supernet's input resolution). Expected cost of an architecture
        = Σ weights * table, differentiable in the weights. `channels`: count every cell
        at this common width instead of its own (compares op choices across stages).
        """
        if metric not in ("params", "macs"):
            from diffnas.errors import ConfigError

            raise ConfigError(f"cost metric must be 'params' or 'macs', got '{metric}'")
        tables = {
            k: torch.zeros(spec.shape, dtype=torch.float64) for k, spec in self.arch_specs.items()
        }
        for site in self.sites:
            spec = self.arch_specs[site.key]
            for e, (src, _) in enumerate(spec.edges):
                stride = self.edge_stride(spec, src, site.reduction)
                h, w = (
                    (site.height, site.width)
                    if stride == 2 or not site.reduction
                    else ((site.height + 1) // 2, (site.width + 1) // 2)
                )
                for o, op in enumerate(spec.ops):
                    c = site.channels if channels is None else channels
                    tables[site.key][e, o] += self.op_cost(metric, op, c, stride, h, w)
        return {k: t.float() for k, t in tables.items()}


def relayout(module: nn.Module, memory_format: torch.memory_format) -> None:
    """Store the 4-d parameters (conv weights) of `module` in `memory_format`, in place."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=memory_format)


class Architecture(nn.Module):
    """The architecture parameters: α per arch key, and β per key for edge normalization."""

    def __init__(
        self,
        specs: dict[str, ArchSpec],
        init: Callable[[tuple[int, ...]], torch.Tensor],
        edge_norm: bool = False,
    ) -> None:
        super().__init__()
        self.specs = specs
        self.alpha = nn.ParameterDict({k: nn.Parameter(init(s.shape)) for k, s in specs.items()})
        self.beta = nn.ParameterDict(
            {k: nn.Parameter(1e-3 * torch.randn(len(s.edges))) for k, s in specs.items()}
            if edge_norm
            else {}
        )

    def edge_weights(self) -> dict[str, torch.Tensor] | None:
        """PC-DARTS edge normalization: softmax of β over each node's incoming edges."""
        if not len(self.beta):
            return None
        out = {}
        for key, beta in self.beta.items():
            weights = torch.empty_like(beta)
            for rows in self.specs[key].incoming().values():
                weights[rows] = torch.softmax(beta[rows], dim=0)
            out[key] = weights
        return out
