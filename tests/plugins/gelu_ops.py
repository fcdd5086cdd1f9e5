"""A test plugin: the darts space plus a user op (GELU + 3x3 conv + BN), as `darts_gelu`."""

from __future__ import annotations

from torch import nn

from diffnas.plugins import op, space_with_ops


class GeluConv(nn.Sequential):
    def __init__(self, c: int, stride: int, affine: bool, search: bool) -> None:
        super().__init__(
            nn.GELU(),
            nn.Conv2d(c, c, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine, track_running_stats=not search),
        )


space_with_ops("darts_gelu", [op("gelu_conv_3x3", GeluConv)])
