"""Faster formulations of supernet layers whose stock CPU backward is slow.

Depthwise convolution: PyTorch's CPU backward for the input gradient of a depthwise conv
with dilation or stride runs at a fraction of the forward's speed; the input gradient is
itself a depthwise convolution (of the output gradient, zero-interleaved for stride 2,
with the flipped kernel), which runs at forward speed. The weight gradient stays
PyTorch's. Results equal F.conv2d's to float rounding (tests/test_engine.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        stride: int,
        padding: int,
        dilation: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation)
        return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x, grad_w = _depthwise_backward(
            grad, x, weight, stride, padding, dilation, need_x, need_w
        )
        return grad_x, grad_w, None, None, None


def _depthwise_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    c = x.shape[1]
    grad_x = grad_w = None
    if need_x:
        g = grad
        if stride > 1:  # zero-interleave back to the input's resolution
            g = torch.zeros_like(x, memory_format=_format(grad))
            g[:, :, ::stride, ::stride] = grad
        grad_x = F.conv2d(g, weight.flip(-1, -2), None, 1, padding, dilation, c)
        grad_x = grad_x[:, :, : x.shape[2], : x.shape[3]]
    if need_w:
        grad_w = torch.ops.aten.convolution_backward(
            grad,
            x,
            weight,
            None,
            [stride, stride],
            [padding, padding],
            [dilation, dilation],
            False,
            [0, 0],
            c,
            [False, True, False],
        )[1]
    return grad_x, grad_w


class _DepthwisePointwise(torch.autograd.Function):
    """pointwise(depthwise(x)), keeping only x for backward: the depthwise output is
    recomputed there (a depthwise forward is cheap; its output is a full activation)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w_dw: torch.Tensor,
        w_pw: torch.Tensor,
        stride: int,
        padding: int,
        dilation: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, w_dw, w_pw)
        ctx.conf = (stride, padding, dilation)
        h = F.conv2d(x, w_dw, None, stride, padding, dilation, x.shape[1])
        return F.conv2d(h, w_pw)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_dw, w_pw = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        need_x, need_dw, need_pw = ctx.needs_input_grad[:3]
        h = F.conv2d(x, w_dw, None, stride, padding, dilation, x.shape[1])
        grad_h, grad_pw = torch.ops.aten.convolution_backward(
            grad, h, w_pw, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [need_x or need_dw, need_pw, False],
        )[:2]  # fmt: skip
        grad_x = grad_dw = None
        if need_x or need_dw:
            grad_x, grad_dw = _depthwise_backward(
                grad_h, x, w_dw, stride, padding, dilation, need_x, need_dw
            )
        return grad_x, grad_dw, grad_pw, None, None, None


def _format(t: torch.Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        else torch.contiguous_format
    )


def fast_depthwise(m: nn.Conv2d) -> bool:
    """Whether `m` is a conv the depthwise kernel computes exactly (square, symmetric pad)."""
    k, s, p, d = m.kernel_size, m.stride, m.padding, m.dilation
    return (
        m.groups == m.in_channels == m.out_channels
        and m.bias is None
        and m.padding_mode == "zeros"
        and isinstance(p, tuple)
        and k[0] == k[1]
        and s[0] == s[1]
        and p[0] == p[1]
        and d[0] == d[1]
        and 2 * p[0] == d[0] * (k[0] - 1)  # 'same' padding: the flipped kernel lines up
    )


def depthwise_conv(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """m(x) for a conv that `fast_depthwise` accepts, with the faster backward."""
    return _DepthwiseConv.apply(x, m.weight, m.stride[0], m.padding[0], m.dilation[0])


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward hands on a dense gradient in the forward tensor's layout.

    The gradient of a slice of a concatenation (a darts cell's output) is a strided view;
    BN and conv backward are several times slower on such views than on dense tensors.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.fmt = _format(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=ctx.fmt)


class _ConvScaledBN(torch.autograd.Function):
    """batch_norm(conv(x), weight=scale) with batch statistics, keeping only x for
    backward: the conv output is recomputed there (for cheap convs such as 1x1)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        scale: torch.Tensor,
        eps: float,
    ) -> torch.Tensor:
        y = F.conv2d(x, weight)
        out, mean, invstd = torch.native_batch_norm(y, scale, None, None, None, True, 0.0, eps)
        ctx.save_for_backward(x, weight, scale, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, scale, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_scale = ctx.needs_input_grad[:3]
        y = F.conv2d(x, weight)
        grad_y, grad_scale, _ = torch.ops.aten.native_batch_norm_backward(
            grad, y, scale, None, None, mean, invstd, True, ctx.eps,
            [need_x or need_w, need_scale, False],
        )  # fmt: skip
        grad_x = grad_w = None
        if need_x or need_w:
            grad_x, grad_w = torch.ops.aten.convolution_backward(
                grad_y, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [need_x, need_w, False],
            )[:2]  # fmt: skip
        return grad_x, grad_w, grad_scale, None


def conv1x1_scaled_bn(
    conv: nn.Conv2d, x: torch.Tensor, scale: torch.Tensor, eps: float
) -> torch.Tensor:
    """batch_norm(conv(x), weight=scale) for `pointwise_1x1(conv)`, without keeping conv(x)."""
    return _ConvScaledBN.apply(x, conv.weight, scale, eps)


def pointwise_1x1(m: nn.Conv2d) -> bool:
    """Whether `m` is a plain 1x1 conv (no bias, stride 1, no padding, one group)."""
    return (
        m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.padding == (0, 0)
        and m.groups == 1
        and m.bias is None
    )


def depthwise_pointwise(dw: nn.Conv2d, pw: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """pw(dw(x)) for `fast_depthwise(dw)` and `pointwise_1x1(pw)`, without keeping dw(x)."""
    return _DepthwisePointwise.apply(
        x, dw.weight, pw.weight, dw.stride[0], dw.padding[0], dw.dilation[0]
    )


def dense_grad(x: torch.Tensor) -> torch.Tensor:
    """x, with a dense gradient in backward (see _DenseGrad)."""
    return _DenseGrad.apply(x) if x.requires_grad else x
