"""Mixed operations: the candidate ops on every edge leaving one node, weighted and summed.

`SourceOps` owns all edges that leave one node (same input, same stride), which is what
lets the engine share work across those edges; `MixWeights` is what a relaxation hands
the supernet: per-edge op weights, optionally which ops to run, and edge scales.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.supernet.kernels import (
    avg_pool,
    conv1x1_scaled_bn,
    cpu_formulations,
    depthwise_conv,
    depthwise_pointwise,
    fast_avg_pool,
    fast_depthwise,
    pointwise_1x1,
    scaled_bn,
)

Active = list[list[int]]
# one node's edge weights: a tensor [edges, ops], or its rows (SearchDAG hands views of w's)
EdgeWeights = torch.Tensor | Sequence[torch.Tensor]


@dataclass
class MixWeights:
    """Per arch key: op weights [E, O]; optional active op indices per edge; edge scales [E].

    `active[key][e]` lists the op indices edge e computes (GDAS: one sampled op; CRB: the
    unpruned ones). Ops not listed contribute nothing and cost nothing. None: every op
    except `none` is computed. `biases[key][e]` (optional, [E]) is a scalar added to edge
    e's output: GDAS on NB201 (XAutoDL) adds the weights of the ops it does not compute
    that way, so their α get a gradient. `connect_none`: an edge that computes nothing
    (GDAS sampled `none`) outputs its input times 0 instead of being left out, as XAutoDL's
    GDAS networks do; what feeds it then gets zero gradients instead of none, so SGD's
    momentum and weight decay still move those weights in that step.
    """

    ops: dict[str, torch.Tensor]
    active: dict[str, Active] | None = None
    edges: dict[str, torch.Tensor] | None = None
    biases: dict[str, torch.Tensor] | None = None
    connect_none: bool = False

    def active_for(self, key: str) -> Active | None:
        return None if self.active is None else self.active.get(key)

    def bias_for(self, key: str) -> torch.Tensor | None:
        return None if self.biases is None else self.biases.get(key)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class SourceOps(nn.Module):
    """The mixed ops of the `n_edges` edges leaving one node.

    forward(x, w, active) returns, per edge, Σ_o w[e, o] · op_o(x) over the computed ops
    (None when an edge computes nothing). `none` is never computed: its output is zero.
    While `capture` is a dict, each computed op's unweighted output is stored in it under
    (edge, op index), e.g. for channel-importance scores (ACA).

    The engine computes the same sums as calling every op module and adding the weighted
    outputs (diffnas.supernet.plain), with less work and memory, using what all edges of
    one node share: the ReLU that starts every conv op is applied to x once; a
    parameter-free op (identity, pooling, pooling + non-affine batch-statistics BN) gives
    the same output on every edge, so it runs once; an op ending in a non-affine
    batch-statistics BN gets its weight w[e, o] as that BN's scale (no separate multiply,
    nothing extra kept for backward). Op modules the engine does not know, or that carry
    hooks, are called as modules.
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
        self, x: torch.Tensor, w: EdgeWeights, active: Active | None = None
    ) -> list[torch.Tensor | None]:
        rows = w.unbind(0) if isinstance(w, torch.Tensor) else w
        relu_x: torch.Tensor | None = None
        shared: dict[int, torch.Tensor] = {}  # op index -> its output, the same on every edge
        outs: list[torch.Tensor | None] = []
        for e, ops in enumerate(self.edges):  # ops: nn.ModuleList
            chosen = (
                self.computed if active is None else [o for o in active[e] if o in self.computed]
            )
            acc: torch.Tensor | None = None
            we = rows[e].unbind(0) if chosen else ()  # this edge's op weights, as views
            for o in chosen:
                module = ops[o]  # type: ignore[index]
                if self.capture is not None or _hooked(module):
                    y = module(x)
                    if self.capture is not None:
                        self.capture[(e, o)] = y
                    acc = _add_weighted(acc, y, we[o])
                    continue
                if _is_shared(module):
                    if o not in shared:
                        shared[o] = _run_shared(module, x)
                    acc = _add_weighted(acc, shared[o], we[o])
                    continue
                body = _relu_body(module)
                if body is None:
                    acc = _add_weighted(acc, module(x), we[o])
                    continue
                if relu_x is None:
                    relu_x = F.relu(x)
                y = _run_body(body, relu_x, we[o])
                acc = y if acc is None else acc + y
            outs.append(acc)
        return outs


def _hooked(m: nn.Module) -> bool:
    return any(bool(sub._forward_hooks or sub._forward_pre_hooks) for sub in m.modules())


def _add_weighted(acc: torch.Tensor | None, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return y * w if acc is None else torch.addcmul(acc, y, w)


def _stateless_bn(m: object) -> bool:
    """A BN that normalizes with batch statistics only: a function of its input alone."""
    return isinstance(m, nn.BatchNorm2d) and not m.affine and not m.track_running_stats


def _is_shared(m: nn.Module) -> bool:
    """Parameter-free and stateless: the same output on every edge leaving a node (the op's
    `engine_shared` trait, spaces/ops.py)."""
    if isinstance(m, nn.Identity):
        return True
    shared = getattr(m, "engine_shared", None)
    return bool(shared()) if callable(shared) else False


def _run_shared(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """m(x) for a shared op, its 3x3 average pools computed as depthwise convolutions."""
    if x.dim() != 4:
        return m(x)
    for layer in m if isinstance(m, nn.Sequential) else [m]:
        x = avg_pool(layer, x) if fast_avg_pool(layer) and cpu_formulations(x) else layer(x)
    return x


Layer = Callable[[torch.Tensor], torch.Tensor]


def _relu_body(m: nn.Module) -> list[Layer] | None:
    """The layers after the op's leading ReLU (its `engine_body` trait; None: not one)."""
    body = getattr(m, "engine_body", None)
    return body() if callable(body) else None


def _run_body(body: list[Layer], h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """w · body(h), the weight folded into a trailing stateless BN when there is one."""
    last = body[-1]
    first = body[0]
    cpu = cpu_formulations(h)  # off it (a GPU): PyTorch's own kernels for the layers
    if (
        cpu
        and len(body) == 2
        and _stateless_bn(last)
        and isinstance(first, nn.Conv2d)
        and pointwise_1x1(first)
        and isinstance(last, nn.BatchNorm2d)
    ):  # a 1x1 conv is cheap to recompute: its output is not kept for backward
        return conv1x1_scaled_bn(first, h, w, last.eps)
    i = 0
    while i < len(body) - 1:
        m = body[i]
        if cpu and isinstance(m, nn.Conv2d) and fast_depthwise(m):
            nxt = body[i + 1]
            if i + 2 < len(body) and isinstance(nxt, nn.Conv2d) and pointwise_1x1(nxt):
                h = depthwise_pointwise(m, nxt, h)  # the depthwise output is not kept
                i += 2
                continue
            h = depthwise_conv(m, h)
        else:
            h = m(h)
        i += 1
    if _stateless_bn(last):
        assert isinstance(last, nn.BatchNorm2d)
        return scaled_bn(h, w, last.eps)
    return last(h) * w


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
        self, x: torch.Tensor, w: EdgeWeights, active: Active | None = None
    ) -> list[torch.Tensor | None]:
        if self.k == 1:  # grown to the full width (DrNAS's progressive K): no bypass
            return self.inner(x, w, active)
        head, rest = x[:, : self.part], x[:, self.part :]
        if self.inner.stride == 2:
            rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)
        outs: list[torch.Tensor | None] = []
        for y in self.inner(head, w, active):
            if y is None:
                y = head.new_zeros((rest.shape[0], self.part, *rest.shape[2:]))
            outs.append(channel_shuffle(torch.cat([y, rest], dim=1), self.k))
        return outs
