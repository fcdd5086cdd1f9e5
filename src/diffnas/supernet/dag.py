"""The search cell as a DAG of mixed edges, shared by every space.

Nodes are numbered inputs first; node j is the sum of the mixed ops on its incoming
edges (optionally scaled per edge, plus DARTS-'s auxiliary skip, and batch-normalized).
Edges are grouped by source node.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from diffnas.supernet.kernels import batch_norm, dense_grad
from diffnas.supernet.mixed import Active, PartialChannelEdges, SourceOps


class SearchDAG(nn.Module):
    """All mixed edges of one search cell.

    edges: (src, dst) in the order of the rows of this cell's α; stride(src) gives the
    stride of the edges leaving src (2 for the inputs of a reduction cell).
    """

    def __init__(
        self,
        n_inputs: int,
        n_nodes: int,
        edges: list[tuple[int, int]],
        op_names: list[str],
        channels: int,
        stride: Callable[[int], int],
        make_op: Callable[[str, int, int], nn.Module],
        partial_channels: int = 1,
        node_bn: bool = False,
        aux_skip: bool = False,
    ) -> None:
        """`aux_skip` (DARTS-): every edge also gets β · skip(x) (`aux_beta`), skip being
        make_op('skip_connect', channels, stride): outside the mixed op, so outside α."""
        super().__init__()
        self.n_inputs = n_inputs
        self.n_nodes = n_nodes
        self.edges = list(edges)
        self.sources = sorted({s for s, _ in edges})
        self.out_edges: dict[int, list[int]] = {
            s: [i for i, (src, _) in enumerate(edges) if src == s] for s in self.sources
        }
        self.dst_of = [d for _, d in edges]
        self.stride_of = {s: stride(s) for s in self.sources}
        self.max_stride = max(self.stride_of.values())
        groups = {}
        for s in self.sources:
            k = partial_channels
            ops = SourceOps(op_names, channels // k, stride(s), len(self.out_edges[s]), make_op)
            groups[str(s)] = PartialChannelEdges(ops, channels, k) if k > 1 else ops
        self.groups = nn.ModuleDict(groups)
        self.node_bn = node_bn
        # DARTS-: one auxiliary skip per edge (identity, or on a stride-2 edge a factorized
        # reduction with its own weights, as the official MixedOp's `auxiliary_op`)
        self.aux: nn.ModuleList | None = (
            nn.ModuleList(make_op("skip_connect", channels, stride(s)) for s, _ in edges)
            if aux_skip
            else None
        )
        self.aux_beta = 0.0  # set each epoch by the search (diffnas.supernet.aux_skip)

    def forward(
        self,
        inputs: list[torch.Tensor],
        w: torch.Tensor,
        active: Active | None = None,
        edge_scale: torch.Tensor | None = None,
        edge_bias: torch.Tensor | None = None,
        connect_none: bool = False,
    ) -> list[torch.Tensor]:
        """The cell's nodes. `edge_bias` [E]: a scalar added to each edge's output;
        `connect_none`: an edge that computes nothing (a sampled `none`) outputs its input
        times 0, so gradients (zeros) still reach what feeds it (see MixWeights)."""
        nodes: list[torch.Tensor | None] = [*inputs, *([None] * (self.n_nodes - self.n_inputs))]
        sums: dict[int, list[torch.Tensor]] = {j: [] for j in range(self.n_inputs, self.n_nodes)}
        ref = inputs[0]
        # one view per edge's row, each split into its ops' weights where they are used:
        # the backward of an unbind is one stack, where indexing w[e, o] per op costs two
        # selects forward and a zero fill and copy per weight backward (on a GPU each
        # tensor op is a kernel launch, and a supernet step is launch-bound there)
        rows = w.unbind(0)
        for j in range(self.n_nodes):
            if j >= self.n_inputs:
                nodes[j] = self._finish(sums.pop(j), ref, j)
            if j not in self.out_edges:
                continue
            idx = self.out_edges[j]
            sub_active = None if active is None else [active[i] for i in idx]
            x = nodes[j]
            assert x is not None
            outs = self.groups[str(j)](x, [rows[i] for i in idx], sub_active)
            for i, y in zip(idx, outs):
                y = self.edge_output(y, i, x, j, ref, edge_scale, edge_bias, connect_none)
                if y is not None:
                    sums[self.dst_of[i]].append(y)
        return nodes  # type: ignore[return-value]

    def edge_output(
        self,
        y: torch.Tensor | None,
        i: int,
        x: torch.Tensor,
        src: int,
        ref: torch.Tensor,
        edge_scale: torch.Tensor | None,
        edge_bias: torch.Tensor | None,
        connect_none: bool,
    ) -> torch.Tensor | None:
        """Edge i's contribution to its destination from its mixed-op output y (None: no op
        computed), input x of source node `src`: scaled, offset, or a connected zero; plus
        β · skip(x) with the auxiliary skip (added after the edge's scale and offset)."""
        out = self._edge_output(y, i, x, src, ref, edge_scale, edge_bias, connect_none)
        if self.aux is None:
            return out
        skip = self.aux[i](x) * self.aux_beta
        return skip if out is None else out + skip

    def _edge_output(
        self,
        y: torch.Tensor | None,
        i: int,
        x: torch.Tensor,
        src: int,
        ref: torch.Tensor,
        edge_scale: torch.Tensor | None,
        edge_bias: torch.Tensor | None,
        connect_none: bool,
    ) -> torch.Tensor | None:
        if y is None:
            if connect_none:
                s = self.stride_of[src]
                y = (x if s == 1 else x[:, :, ::s, ::s]).mul(0.0)
            elif edge_bias is not None:
                y = self.zeros(ref)
            else:
                return None
        if edge_scale is not None:
            y = y * edge_scale[i]
        if edge_bias is not None:
            y = y + edge_bias[i]
        return y

    def zeros(self, ref: torch.Tensor) -> torch.Tensor:
        """A zero node of this cell (the shape of its intermediate nodes)."""
        b, c, h, w = ref.shape
        s = self.max_stride
        return ref.new_zeros(b, c, (h + s - 1) // s, (w + s - 1) // s)

    def source_ops(self) -> dict[int, SourceOps]:
        """The SourceOps of each source node (inside a PartialChannelEdges wrapper if any)."""
        out: dict[int, SourceOps] = {}
        for s in self.sources:
            g = self.groups[str(s)]
            out[s] = g.inner if isinstance(g, PartialChannelEdges) else g  # type: ignore[assignment]
        return out

    def start_capture(self) -> None:
        """Record every computed op output of the next forward passes (see SourceOps)."""
        for ops in self.source_ops().values():
            ops.capture = {}

    def stop_capture(self) -> dict[tuple[int, int], torch.Tensor]:
        """The recorded outputs by (α row, op index); recording stops."""
        out = {}
        for s, ops in self.source_ops().items():
            for (local, o), y in (ops.capture or {}).items():
                out[(self.out_edges[s][local], o)] = y
            ops.capture = None
        return out

    def _finish(self, parts: list[torch.Tensor], ref: torch.Tensor, j: int) -> torch.Tensor:
        if parts:
            out = parts[0]
            for p in parts[1:]:
                out = out + p
        else:  # every incoming op pruned or `none`
            out = self.zeros(ref)
        if self.node_bn:
            out = batch_norm(out)
        # a node's gradient may arrive as a strided view (a slice of the cell's concatenated
        # output); the ops it flows back into are much faster on a dense one
        return dense_grad(out)
