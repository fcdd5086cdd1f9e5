"""ACA edges of discrete networks: the chosen op on part of the channels, identity on the rest.

Owns the channel split of an edge with skip fraction s, the narrowed op modules (all C
inputs -> C' outputs) with their analytic parameter and multiply-add counts, for both spaces.

An ACA edge with C channels and skip fraction s computes

    y = concat(op(x)[C' channels], skip(x[:, C':]))        C' = round((1 - s) · C)

- The op reads **all C input channels** and produces only C' output channels (its last
  pointwise/regular convolution and BatchNorm shrink from C to C' outputs; a depthwise
  stage before it keeps C channels). The importance scores ranked the op's *output*
  channels in the supernet, where the op read every input channel; so the eval op keeps its
  input and loses only the output channels judged unimportant.
- Channel-wise ops (pools: output channel c depends on input channel c only) are the same
  op on the first C' channels, which is exactly "all inputs, first C' outputs".
- The identity part carries input channels C'..C-1 into output slots C'..C-1 (aligned, as
  a skip_connect restricted to those channels). On stride-2 edges it is a FactorizedReduce
  of those channels; since FactorizedReduce concatenates two equal halves, the identity
  count is rounded to an even number there: C - C' = 2 · round(s · C / 2).
- s = 0 gives exactly the plain op module, and s = 1 (C' = 0) exactly the plain
  skip_connect module (Identity, or FactorizedReduce(C, C) on stride 2).
Rounding is half-up (0.5 -> 1), not Python's round-half-even.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from diffnas.errors import GenotypeError
from diffnas.spaces.genotype import Edge
from diffnas.spaces.ops import DilConv, OpTable, ReLUConvBN, SepConv


def split_channels(channels: int, skip_fraction: float, stride: int = 1) -> tuple[int, int]:
    """(C' channels computed by the op, C - C' channels carried by identity)."""
    if not 0.0 <= skip_fraction <= 1.0:
        raise GenotypeError(f"skip fraction must be in [0, 1], got {skip_fraction}")
    if stride == 1:
        c_op = math.floor((1.0 - skip_fraction) * channels + 0.5)
        c_skip = channels - c_op
    else:
        c_skip = min(2 * math.floor(skip_fraction * channels / 2 + 0.5), channels)
        c_op = channels - c_skip
    return c_op, c_skip


# --------------------------------------------------------------------------- narrowed ops
def _out(size: int, stride: int) -> int:
    return (size + stride - 1) // stride


@dataclass(frozen=True)
class Narrow:
    """An op built with c_in inputs and c_out outputs for a discrete (eval) network."""

    build: Callable[[int, int, int], nn.Module]  # (c_in, c_out, stride)
    params: Callable[[int, int, int], int]
    macs: Callable[[int, int, int, int, int], int]  # (c_in, c_out, stride, H, W) of the input


def _conv(k: int) -> Narrow:
    """NB201 nor_conv_kxk: ReLU - Conv(c_in -> c_out) - BN(c_out)."""
    return Narrow(
        lambda ci, co, s: ReLUConvBN(ci, co, k, s, k // 2),
        lambda ci, co, s: k * k * ci * co + 2 * co,
        lambda ci, co, s, h, w: k * k * ci * co * _out(h, s) * _out(w, s),
    )


def _dil(k: int, padding: int) -> Narrow:
    """DARTS dil_conv: ReLU - depthwise (dilation 2, c_in) - pointwise c_in -> c_out - BN."""
    return Narrow(
        lambda ci, co, s: DilConv(ci, co, k, s, padding, 2),
        lambda ci, co, s: ci * k * k + ci * co + 2 * co,
        lambda ci, co, s, h, w: (ci * k * k + ci * co) * _out(h, s) * _out(w, s),
    )


def _sep(k: int) -> Narrow:
    """DARTS sep_conv: DilConv(c_in -> c_in, stride) then DilConv(c_in -> c_out)."""
    return Narrow(
        lambda ci, co, s: SepConv(ci, co, k, s, k // 2),
        lambda ci, co, s: (ci * k * k + ci * ci + 2 * ci) + (ci * k * k + ci * co + 2 * co),
        lambda ci, co, s, h, w: (2 * ci * k * k + ci * ci + ci * co) * _out(h, s) * _out(w, s),
    )


# ops with a weight layer that can produce fewer output channels than it reads
NARROW: dict[str, Narrow] = {
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "dil_conv_3x3": _dil(3, 2),
    "dil_conv_5x5": _dil(5, 4),
    "nor_conv_1x1": _conv(1),
    "nor_conv_3x3": _conv(3),
}
# ops whose output channel c depends on input channel c only: narrowed = op on x[:, :C']
CHANNELWISE = frozenset({"max_pool_3x3", "avg_pool_3x3"})


def accepts_skip_fraction(op: str) -> bool:
    return op in NARROW or op in CHANNELWISE


def check_edge(edge: Edge, where: str) -> None:
    """Raise GenotypeError when an edge carries a skip fraction its op cannot take."""
    if edge.skip_fraction and not accepts_skip_fraction(edge.op):
        ok = sorted(NARROW) + sorted(CHANNELWISE)
        raise GenotypeError(
            f"{where}: edge {edge.src}->{edge.dst} '{edge.op}' has skip fraction "
            f"{edge.skip_fraction}, but only an op that computes channels can give some of them "
            f"to identity ({', '.join(ok)}); use [op, from, to] for '{edge.op}'"
        )


# --------------------------------------------------------------------------- the edge
class ACAEdge(nn.Module):
    """concat(op's C' output channels, identity / FactorizedReduce of input channels C'..C-1)."""

    def __init__(self, op: nn.Module, skip: nn.Module, c_op: int, slice_input: bool) -> None:
        super().__init__()
        self.op = op
        self.skip = skip
        self.c_op = c_op
        self.slice_input = slice_input

    def forward(
        self,
        x: torch.Tensor,
        op_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`op_transform` (e.g. drop-path) applies to the op's channels only, not to identity."""
        y = self.op(x[:, : self.c_op] if self.slice_input else x)
        if op_transform is not None:
            y = op_transform(y)
        return torch.cat([y, self.skip(x[:, self.c_op :])], dim=1)

    def extra_repr(self) -> str:
        return f"op_channels={self.c_op}"


def build_edge(table: OpTable, edge: Edge, channels: int, stride: int) -> nn.Module:
    """The eval module of a genotype edge: the plain op, or an ACA edge when s > 0."""
    plain = table[edge.op]
    if not edge.skip_fraction:
        return plain.build(channels, stride, True, False)
    check_edge(edge, f"{table.space} genotype")
    c_op, c_skip = split_channels(channels, edge.skip_fraction, stride)
    if c_skip == 0:
        return plain.build(channels, stride, True, False)
    skip = table["skip_connect"].build(c_skip, stride, True, False)
    if c_op == 0:
        return skip
    if edge.op in NARROW:
        return ACAEdge(NARROW[edge.op].build(channels, c_op, stride), skip, c_op, False)
    return ACAEdge(plain.build(c_op, stride, True, False), skip, c_op, True)


def edge_cost(
    table: OpTable, metric: str, edge: Edge, channels: int, stride: int, h: int, w: int
) -> int:
    """Analytic 'params' or 'macs' (for an H x W input) of `build_edge`'s module."""

    def cost(op: str, c: int) -> int:
        d = table[op]
        return d.params(c, stride) if metric == "params" else d.macs(c, stride, h, w)

    if not edge.skip_fraction:
        return cost(edge.op, channels)
    check_edge(edge, f"{table.space} genotype")
    c_op, c_skip = split_channels(channels, edge.skip_fraction, stride)
    if c_skip == 0:
        return cost(edge.op, channels)
    total = cost("skip_connect", c_skip)
    if c_op == 0:
        return total
    if edge.op in NARROW:
        n = NARROW[edge.op]
        return total + (
            n.params(channels, c_op, stride)
            if metric == "params"
            else n.macs(channels, c_op, stride, h, w)
        )
    return total + cost(edge.op, c_op)


def identity_channel_share(edges: list[Edge], parameter_free: Callable[[str], bool]) -> float:
    """Share of output channels over a cell's edges that no weighted op computes.

    A parameter-free op counts 1, an ACA edge its skip fraction s, `none` is left out. This
    is the channel-level counterpart of `Space.param_free_share` for ACA genotypes.
    """
    kept = [e for e in edges if e.op != "none"]
    if not kept:
        return 1.0
    return sum(1.0 if parameter_free(e.op) else e.skip_fraction for e in kept) / len(kept)
