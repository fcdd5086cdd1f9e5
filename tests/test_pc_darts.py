"""PC-DARTS: partial channel connections and edge normalization, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffnas.search import Searcher
from diffnas.spaces.ops import NB201_OPS
from diffnas.supernet.dag import SearchDAG

from .conftest import tiny_config


class Scale(nn.Module):
    """A toy op: y = a·x + b, downsampled by `stride` (keeps every stride-th pixel)."""

    def __init__(self, a: float, b: float, stride: int) -> None:
        super().__init__()
        self.a, self.b, self.stride = a, b, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x[:, :, :: self.stride, :: self.stride] + self.b


def hand_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS channel shuffle written out: output channel j·groups + g <- input g·(C/groups) + j."""
    c = x.shape[1]
    per = c // groups
    out = torch.empty_like(x)
    for g in range(groups):
        for j in range(per):
            out[:, j * groups + g] = x[:, g * per + j]
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_edge_matches_hand_computation(stride: int) -> None:
    built: list[int] = []

    def make_op(name: str, channels: int, s: int) -> nn.Module:
        built.append(channels)
        return {"double": Scale(2.0, 0.0, s), "plus1": Scale(1.0, 1.0, s)}[name]

    c, k = 8, 4
    dag = SearchDAG(1, 2, [(0, 1)], ["none", "double", "plus1"], c, lambda src: stride, make_op, k)
    assert built and all(ch == c // k for ch in built)  # every op is built for C/K channels

    x = torch.randn(2, c, 6, 6)
    w = torch.tensor([[0.2, 0.3, 0.5]])
    scale = torch.tensor([0.7])
    out = dag([x], w, None, scale)[1]

    head, rest = x[:, : c // k], x[:, c // k :]
    sub = head[:, :, ::stride, ::stride]
    mixed = 0.3 * 2.0 * sub + 0.5 * (sub + 1.0)  # `none` contributes nothing
    if stride == 2:  # the bypass channels are max-pooled 2x2 on a stride-2 edge
        b, ch, h, wd = rest.shape
        rest = rest.reshape(b, ch, h // 2, 2, wd // 2, 2).amax(dim=(3, 5))
    expected = 0.7 * hand_shuffle(torch.cat([mixed, rest], dim=1), k)
    torch.testing.assert_close(out, expected)
    if stride == 1:  # bypass channels pass through unchanged (up to the edge weight)
        positions = [j * k + g for g in range(1, k) for j in range(c // k)]
        torch.testing.assert_close(out[:, positions] / 0.7, x[:, c // k :])


def _dag_flops(partial: int, channels: int = 16, size: int = 8) -> int:
    ops = list(NB201_OPS.names)
    edges = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]

    def make_op(name: str, ch: int, s: int) -> nn.Module:
        return NB201_OPS[name].build(ch, s, False, True)

    dag = SearchDAG(1, 4, edges, ops, channels, lambda src: 1, make_op, partial)
    w = torch.softmax(torch.randn(len(edges), len(ops)), dim=-1)
    dag([torch.randn(2, channels, size, size)], w)  # once: one-off set-up (pool counts) not counted
    counter = FlopCounterMode(display=False)
    with counter:
        dag([torch.randn(2, channels, size, size)], w)
    return int(counter.get_total_flops())


def test_partial_channels_cut_the_mixed_op_compute() -> None:
    """Convolution FLOPs of an nb201 search cell, by hand: 2·B·H·W·(C/K)²·(1 + 9) per edge
    (the 1x1 and 3x3 convs), plus the 3x3 average pool each of the 3 source nodes shares
    among its edges, which the engine computes as a depthwise conv: 2·B·H·W·(C/K)·9."""
    b, h, c, edges, sources = 2, 8, 16, 6, 3
    dense = {}
    for k in (1, 4):
        pools = sources * 2 * b * h * h * (c // k) * 9
        dense[k] = _dag_flops(k, c, h) - pools
        assert dense[k] == edges * 2 * b * h * h * (c // k) ** 2 * (1 + 9)
    # 1/K of the channels through the mixed op: its convolutions cost 1/K² of the full op
    assert dense[4] * 16 == dense[1]


def test_edge_normalization_is_folded_into_the_top2_derivation() -> None:
    s = Searcher(tiny_config("darts", epochs=1, **{"supernet.edge_norm": "true"}))
    ops = s.space.ops
    conv = ops.index("sep_conv_3x3")
    with torch.no_grad():
        for key in ("normal", "reduce"):
            s.arch.alpha[key].zero_()
            s.arch.beta[key].zero_()
            # node 3's inputs (rows 2, 3, 4 = edges 0->3, 1->3, 2->3): op strengths 3 > 2 > 1
            for row, a in zip((2, 3, 4), (3.0, 2.0, 1.0)):
                s.arch.alpha[key][row, conv] = a
    plain = [(e.src, e.dst) for e in s.derivation.derive(s).cells[0].edges if e.dst == 3]
    assert plain == [(0, 3), (1, 3)]

    # β favours edge 2->3: it becomes the strongest input and 1->3 drops out (by hand below)
    with torch.no_grad():
        s.arch.beta["normal"][4] = 2.0
    weights = s.arch.edge_weights()["normal"][2:5].detach()
    e = [math.exp(0.0), math.exp(0.0), math.exp(2.0)]
    torch.testing.assert_close(weights, torch.tensor([v / sum(e) for v in e]))

    def softmax_row(a: float) -> float:  # softmax weight of the conv op in a row (others 0)
        return math.exp(a) / (math.exp(a) + len(ops) - 1)

    strength = [softmax_row(a) * float(wt) for a, wt in zip((3.0, 2.0, 1.0), weights)]
    expected = sorted(sorted(range(3), key=lambda i: -strength[i])[:2])
    assert expected == [0, 2]
    derived = [(e.src, e.dst) for e in s.derivation.derive(s).cells[0].edges if e.dst == 3]
    assert derived == [(i, 3) for i in expected]
