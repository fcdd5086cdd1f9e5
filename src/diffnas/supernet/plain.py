"""The plain supernet computation: the baseline the search engine is measured and checked against.

One module call per op, NCHW, op outputs weighted and summed in a Python loop: what a
straightforward DARTS implementation does. `make_plain(model)` switches every mixed-op
group and cell DAG of a built supernet to it; modules, parameters and state_dict are
untouched, so the same weights and batch run both computations side by side
(`diffnas bench speed`, benchmarks/speed.py, tests/test_engine.py).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.supernet.base import relayout
from diffnas.supernet.dag import SearchDAG
from diffnas.supernet.mixed import Active, SourceOps


def plain_source_forward(
    self: SourceOps, x: torch.Tensor, w: torch.Tensor, active: Active | None = None
) -> list[torch.Tensor | None]:
    """Per edge: Σ_o w[e, o] · op_o(x), each op its own module call."""
    outs: list[torch.Tensor | None] = []
    for e, ops in enumerate(self.edges):
        chosen = self.computed if active is None else [o for o in active[e] if o in self.computed]
        acc: torch.Tensor | None = None
        for o in chosen:
            y = ops[o](x)  # type: ignore[index]
            if self.capture is not None:
                self.capture[(e, o)] = y
            y = y * w[e, o]
            acc = y if acc is None else acc + y
        outs.append(acc)
    return outs


def plain_dag_forward(
    self: SearchDAG,
    inputs: list[torch.Tensor],
    w: torch.Tensor,
    active: Active | None = None,
    edge_scale: torch.Tensor | None = None,
    edge_bias: torch.Tensor | None = None,
    connect_none: bool = False,
) -> list[torch.Tensor]:
    """Node j = Σ over its incoming edges, added one at a time."""
    nodes: list[torch.Tensor | None] = [*inputs, *([None] * (self.n_nodes - self.n_inputs))]
    sums: dict[int, list[torch.Tensor]] = {j: [] for j in range(self.n_inputs, self.n_nodes)}
    for j in range(self.n_nodes):
        if j >= self.n_inputs:
            parts = sums.pop(j)
            if parts:
                out = parts[0]
                for p in parts[1:]:
                    out = out + p
            else:
                out = self.zeros(inputs[0])
            if self.node_bn:
                out = F.batch_norm(out, None, None, training=True)
            nodes[j] = out
        if j not in self.out_edges:
            continue
        idx = self.out_edges[j]
        sub_active = None if active is None else [active[i] for i in idx]
        x = nodes[j]
        assert x is not None
        outs = self.groups[str(j)](x, w[idx], sub_active)
        for i, y in zip(idx, outs):
            y = self.edge_output(y, i, x, j, inputs[0], edge_scale, edge_bias, connect_none)
            if y is not None:
                sums[self.dst_of[i]].append(y)
    return nodes  # type: ignore[return-value]


def make_plain(model: nn.Module) -> nn.Module:
    """Switch a built supernet (in place) to the plain computation (NCHW); returns it."""
    relayout(model, torch.contiguous_format)
    setattr(model, "memory_format", torch.contiguous_format)  # noqa: B010 (any Module)
    for m in model.modules():
        if isinstance(m, SourceOps):
            m.forward = types.MethodType(plain_source_forward, m)  # type: ignore[method-assign]
        elif isinstance(m, SearchDAG):
            m.forward = types.MethodType(plain_dag_forward, m)  # type: ignore[method-assign]
    return model
