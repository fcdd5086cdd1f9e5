"""Operation building blocks and the per-space op tables (module, parameter and MAC costs).

Each op is defined once, in an `OpDef`, with its module factory and its analytic costs;
tests check the analytic parameter count against the built module.

**Engine traits.** The supernet engine (supernet/mixed.py) never looks at these classes; it
asks each op module two optional questions, so a user op (`diffnas.plugins.op`) gets the
same fast paths by answering them:

- `engine_shared() -> bool`: the op has no parameters and no state, so its output is the
  same on every edge leaving a node and is computed once per node (pools with a stateless
  BN; `nn.Identity` counts as shared without asking).
- `engine_body() -> list[callable] | None`: the op is `ReLU` followed by these layers; the
  engine computes `relu(x)` once per node, runs the layers (depthwise + pointwise pairs
  fused, the edge weight folded into a trailing stateless BatchNorm) and keeps fewer
  activations for backward. `None`: run the module as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.errors import ConfigError, GenotypeError, did_you_mean


def batchnorm(channels: int, affine: bool, track: bool = True) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=affine, track_running_stats=track)


class ReLUConvBN(nn.Sequential):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        affine: bool = True,
        track: bool = True,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, bias=False),
            batchnorm(c_out, affine, track),
        )

    def engine_body(self) -> list[nn.Module] | None:
        return list(self)[1:] if isinstance(self[0], nn.ReLU) else None


class DilConv(nn.Sequential):
    """ReLU - depthwise conv (dilated) - pointwise conv - BN."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
        track: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False
            ),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            batchnorm(c_out, affine, track),
        )

    def engine_body(self) -> list[nn.Module] | None:
        return list(self)[1:] if isinstance(self[0], nn.ReLU) else None


class SepConv(nn.Sequential):
    """Two stacked DilConv(dilation=1): the DARTS separable convolution."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        affine: bool = True,
        track: bool = True,
    ) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine, track),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine, track),
        )

    def engine_body(self) -> list[nn.Module] | None:
        # ReLU, dw, pw, BN, then the second DilConv's ReLU, dw, pw, BN
        first, second = self[0], self[1]
        if not (isinstance(first, DilConv) and isinstance(first[0], nn.ReLU)):
            return None
        return [*list(first)[1:], *list(second.children())]


class FactorizedReduce(nn.Module):
    """Stride-2 'identity': two offset 1x1 stride-2 convs, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True, track: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ConfigError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = batchnorm(c_out, affine, track)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self._convs(self.relu(x)))

    def _convs(self, h: torch.Tensor) -> torch.Tensor:
        """The two offset convolutions of relu(x), concatenated (before the BN)."""
        # pad so that odd spatial sizes give matching halves
        y = F.pad(h, (0, 1, 0, 1))[:, :, 1:, 1:]
        return torch.cat([self.conv_1(h), self.conv_2(y)], dim=1)

    def engine_body(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [self._convs, self.bn]


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class PoolBN(nn.Sequential):
    def __init__(
        self, kind: str, channels: int, stride: int, bn: bool, affine: bool, track: bool = True
    ) -> None:
        pool: nn.Module
        if kind == "max":
            pool = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        layers: list[nn.Module] = [pool]
        if bn:
            layers.append(batchnorm(channels, affine, track))
        super().__init__(*layers)

    def engine_shared(self) -> bool:
        return all(
            isinstance(m, nn.MaxPool2d | nn.AvgPool2d)
            or (isinstance(m, nn.BatchNorm2d) and not m.affine and not m.track_running_stats)
            for m in self
        )


# --------------------------------------------------------------------------- op tables
def _out(size: int, stride: int) -> int:
    return (size + stride - 1) // stride


@dataclass(frozen=True)
class OpDef:
    """One candidate operation of a space.

    build(C, stride, affine, search) makes the module (`search` = inside a supernet, where
    BatchNorm keeps no running statistics and pools get a non-affine BN in the darts space).
    params(C, stride) counts the parameters of the op in a discrete (eval) network.
    macs(C, stride, H, W) counts multiply-adds for an H x W input.
    """

    name: str
    build: Callable[[int, int, bool, bool], nn.Module]
    params: Callable[[int, int], int]
    macs: Callable[[int, int, int, int], int]
    parameter_free: bool


class OpTable:
    """The ordered candidate ops of one space."""

    def __init__(self, space: str, ops: list[OpDef]) -> None:
        self.space = space
        self._ops = {op.name: op for op in ops}

    @property
    def names(self) -> list[str]:
        return list(self._ops)

    def __getitem__(self, name: str) -> OpDef:
        try:
            return self._ops[name]
        except KeyError:
            raise GenotypeError(
                f"unknown op '{name}' for the {self.space} space{did_you_mean(name, self._ops)}; "
                f"its ops: {', '.join(self._ops)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def extended(self, space: str, ops: list[OpDef]) -> OpTable:
        """A new table for `space`: these ops followed by `ops` (a plugin's user ops)."""
        for op in ops:
            if op.name in self._ops:
                raise ConfigError(f"op '{op.name}' is already an op of the {self.space} space")
        return OpTable(space, [*self._ops.values(), *ops])

    def select(self, exclude: list[str]) -> list[str]:
        for name in exclude:
            if name not in self._ops:
                raise ConfigError(
                    f"space.exclude_ops: unknown op '{name}' for the {self.space} space"
                    f"{did_you_mean(name, self._ops)}; its ops: {', '.join(self._ops)}"
                )
        kept = [n for n in self._ops if n not in exclude]
        if not [n for n in kept if n != "none"]:
            raise ConfigError(f"space.exclude_ops removes every op of the {self.space} space")
        return kept


def _bn_params(c: int) -> int:
    return 2 * c


def _sep_params(k: int) -> Callable[[int, int], int]:
    return lambda c, s: 2 * (c * k * k + c * c + _bn_params(c))


def _dil_params(k: int) -> Callable[[int, int], int]:
    return lambda c, s: c * k * k + c * c + _bn_params(c)


def _sep_macs(k: int) -> Callable[[int, int, int, int], int]:
    def macs(c: int, s: int, h: int, w: int) -> int:
        hw = _out(h, s) * _out(w, s)
        return 2 * (c * k * k + c * c) * hw

    return macs


def _dil_macs(k: int) -> Callable[[int, int, int, int], int]:
    return lambda c, s, h, w: (c * k * k + c * c) * _out(h, s) * _out(w, s)


def _zero_cost(*_: int) -> int:
    return 0


def _darts_skip(c: int, stride: int, affine: bool, search: bool) -> nn.Module:
    if stride == 1:
        return nn.Identity()
    return FactorizedReduce(c, c, affine, track=not search)


DARTS_OPS = OpTable(
    "darts",
    [
        OpDef("none", lambda c, s, a, q: Zero(s), _zero_cost, _zero_cost, True),
        OpDef(
            "max_pool_3x3",
            lambda c, s, a, q: PoolBN("max", c, s, bn=q, affine=False, track=not q),
            _zero_cost,
            _zero_cost,
            True,
        ),
        OpDef(
            "avg_pool_3x3",
            lambda c, s, a, q: PoolBN("avg", c, s, bn=q, affine=False, track=not q),
            _zero_cost,
            _zero_cost,
            True,
        ),
        OpDef(
            "skip_connect",
            _darts_skip,
            lambda c, s: 0 if s == 1 else c * c + _bn_params(c),
            lambda c, s, h, w: 0 if s == 1 else c * c * _out(h, s) * _out(w, s),
            True,
        ),
        OpDef(
            "sep_conv_3x3",
            lambda c, s, a, q: SepConv(c, c, 3, s, 1, a, not q),
            _sep_params(3),
            _sep_macs(3),
            False,
        ),
        OpDef(
            "sep_conv_5x5",
            lambda c, s, a, q: SepConv(c, c, 5, s, 2, a, not q),
            _sep_params(5),
            _sep_macs(5),
            False,
        ),
        OpDef(
            "dil_conv_3x3",
            lambda c, s, a, q: DilConv(c, c, 3, s, 2, 2, a, not q),
            _dil_params(3),
            _dil_macs(3),
            False,
        ),
        OpDef(
            "dil_conv_5x5",
            lambda c, s, a, q: DilConv(c, c, 5, s, 4, 2, a, not q),
            _dil_params(5),
            _dil_macs(5),
            False,
        ),
    ],
)


def _nor_conv(k: int) -> Callable[[int, int, bool, bool], nn.Module]:
    return lambda c, s, a, q: ReLUConvBN(c, c, k, s, k // 2, a, track=not q)


NB201_OPS = OpTable(
    "nb201",
    [
        OpDef("none", lambda c, s, a, q: Zero(s), _zero_cost, _zero_cost, True),
        OpDef("skip_connect", lambda c, s, a, q: nn.Identity(), _zero_cost, _zero_cost, True),
        OpDef(
            "nor_conv_1x1",
            _nor_conv(1),
            lambda c, s: c * c + _bn_params(c),
            lambda c, s, h, w: c * c * _out(h, s) * _out(w, s),
            False,
        ),
        OpDef(
            "nor_conv_3x3",
            _nor_conv(3),
            lambda c, s: 9 * c * c + _bn_params(c),
            lambda c, s, h, w: 9 * c * c * _out(h, s) * _out(w, s),
            False,
        ),
        OpDef(
            "avg_pool_3x3",
            lambda c, s, a, q: PoolBN("avg", c, s, bn=False, affine=False),
            _zero_cost,
            _zero_cost,
            True,
        ),
    ],
)
