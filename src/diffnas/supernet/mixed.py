"""Mixed operations: the candidate ops on every edge leaving one node, weighted and summed.

`SourceOps` owns all edges that leave one node (same input, same stride), which is what
lets the engine share work across those edges; `MixWeights` is what a relaxation hands
the supernet: per-edge op weights, optionally which ops to run, and edge scales.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Active = list[list[int]]


@dataclass
class MixWeights:
    """Per arch key: op weights [E, O]; optional active op indices per edge; edge scales [E].

    `active[key][e]` lists the op indices edge e computes (GDAS: one sampled op; CRB: the
    unpruned ones). Ops not listed contribute nothing and cost nothing. None: every op
    except `none` is computed.
    """

    ops: dict[str, torch.Tensor]
    active: dict[str, Active] | None = None
    edges: dict[str, torch.Tensor] | None = None

    def active_for(self, key: str) -> Active | None:
        return None if self.active is None else self.active.get(key)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class SourceOps(nn.Module):
    """The mixed ops of the `n_edges` edges leaving one node.

    forward(x, w, active) returns, per edge, Σ_o w[e, o] · op_o(x) over the computed ops
    (None when an edge computes nothing). `none` is never computed: its output is zero.
    While `capture` is a dict, each computed op's unweighted output is stored in it under
    (edge, op index), e.g. for channel-importance scores (ACA).
    """

    capture: dict[tuple[int, int], torch.Tensor] | None = None

    def __init__(
        self,
        op_names: list[str],
        channels: int,
        stride: int,
        n_edges: int,
        make_op: Callable[[str, int, int], nn.Module],
    ) -> None:
        super().__init__()
        self.op_names = list(op_names)
        self.stride = stride
        self.n_edges = n_edges
        self.computed = [i for i, name in enumerate(op_names) if name != "none"]
        self.edges = nn.ModuleList(
            nn.ModuleList(
                make_op(name, channels, stride) if name != "none" else nn.Identity()
                for name in op_names
            )
            for _ in range(n_edges)
        )

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, active: Active | None = None
    ) -> list[torch.Tensor | None]:
        outs: list[torch.Tensor | None] = []
        for e, ops in enumerate(self.edges):  # ops: nn.ModuleList
            chosen = (
                self.computed if active is None else [o for o in active[e] if o in self.computed]
            )
            acc: torch.Tensor | None = None
            for o in chosen:
                y = ops[o](x)  # type: ignore[index]
                if self.capture is not None:
                    self.capture[(e, o)] = y
                y = y * w[e, o]
                acc = y if acc is None else acc + y
            outs.append(acc)
        return outs


class PartialChannelEdges(nn.Module):
    """PC-DARTS: the mixed op sees 1/K of the channels; the rest bypass, then a shuffle."""

    def __init__(self, inner: SourceOps, channels: int, k: int) -> None:
        super().__init__()
        if channels % k:
            from diffnas.errors import ConfigError

            raise ConfigError(
                f"supernet.partial_channels={k} must divide the cell's channel count {channels}"
            )
        self.inner = inner
        self.k = k
        self.part = channels // k

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, active: Active | None = None
    ) -> list[torch.Tensor | None]:
        head, rest = x[:, : self.part], x[:, self.part :]
        if self.inner.stride == 2:
            rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)
        outs: list[torch.Tensor | None] = []
        for y in self.inner(head, w, active):
            if y is None:
                y = head.new_zeros((rest.shape[0], self.part, *rest.shape[2:]))
            outs.append(channel_shuffle(torch.cat([y, rest], dim=1), self.k))
        return outs
