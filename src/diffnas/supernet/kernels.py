"""Faster formulations of supernet layers whose stock CPU backward is slow.

Depthwise convolution: PyTorch's CPU backward for the input gradient of a depthwise conv
with dilation or stride runs at a fraction of the forward's speed; the input gradient is
itself a depthwise convolution (of the output gradient, zero-interleaved for stride 2,
with the flipped kernel), which runs at forward speed. The weight gradient is computed in
float32 for 16-bit inputs (PyTorch's bf16 kernel can be wrong), and for 5x5, dilated and
strided kernels as a sum of oneDNN's fast undilated ones at most 3 taps wide
(`_depthwise_weight_grad`). Results equal F.conv2d's to float rounding
(tests/test_engine.py).

3x3 average pooling (padding 1, padded cells not counted): PyTorch's CPU pooling kernels
take several times longer than a depthwise convolution over the same tensor (channels-last,
16 channels: ~7x forward, more in bfloat16, whose pooling backward is slower still). The
pool is a depthwise convolution with a kernel of ones times the reciprocal of each output
cell's count of valid inputs; its input gradient is the same convolution of the scaled
output gradient (zero-interleaved for stride 2).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def _amp_forward(forward: Any) -> Any:
    """Records, at a Function's forward, the autocast it runs under (for `_amp_backward`)."""

    @functools.wraps(forward)
    def wrapped(ctx: Any, *args: Any) -> Any:
        device = next(a.device.type for a in args if isinstance(a, torch.Tensor))
        enabled = torch.is_autocast_enabled(device)
        ctx.amp = (device, enabled, torch.get_autocast_dtype(device))
        return forward(ctx, *args)

    return wrapped


def _amp_backward(backward: Any) -> Any:
    """Runs a Function's backward under the autocast its forward ran under, on any device
    (the rule of torch.amp.custom_fwd/custom_bwd, which fix the device type where the class
    is defined). It matters on CUDA: PyTorch runs a CPU backward on the calling thread,
    inside the caller's autocast, but a CUDA backward on the device's own thread, outside
    it, where a bf16 gradient met a float32 weight (a bf16 search crashed on the first
    GPU it ran on; tests/test_engine.py takes the backward outside autocast on the CPU)."""

    @functools.wraps(backward)
    def wrapped(ctx: Any, *grads: Any) -> Any:
        device, enabled, dtype = ctx.amp
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            return backward(ctx, *grads)

    return wrapped


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    @_amp_forward
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
    @_amp_backward
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        need_x, need_w = _wanted(ctx, 0), _wanted(ctx, 1)
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
    grad_x = grad_w = None
    if need_x:
        grad_x = _depthwise_input_grad(grad, weight, x.shape, x.dtype, stride, padding, dilation)
    if need_w:
        grad_w = _depthwise_weight_grad(grad, x, weight, stride, padding, dilation)
    return grad_x, grad_w


def _depthwise_weight_grad(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    """The weight gradient of a depthwise conv, in the weight's dtype.

    Computed in float32 for 16-bit x: PyTorch's bfloat16 kernel for it (torch 2.13 CPU,
    oneDNN) returns wrong values for dilated depthwise convs on 32x32 inputs on CPUs with
    AMX (relative error 1e+17 and more) and takes 2-7x the float32 time for 5x5 and
    dilated kernels (docs/engine.md).

    oneDNN has a fast kernel for this gradient only for undilated kernels at most 3 wide
    (any height, stride 1 or 2); 5x5 and dilated kernels take a generic grouped-conv path,
    5-30x slower per tap on a darts supernet's shapes. On the CPU those are rewritten as
    sums of fast ones (`_weight_grad_pieces`): a dilation-d kernel by the output's phases
    (output rows d*a + q see only input rows of phase q), a strided one by the phases of
    its taps, and a kernel wider than 3 by groups of at most 3 columns; each piece's
    inputs are gathered once. Second derivatives (create_graph), float64 and other devices
    take PyTorch's kernel."""
    k = weight.shape[-1]
    pieces = None
    slow = dilation > 1 or k > 3
    if slow and x.device.type == "cpu" and x.dtype != torch.float64 and not torch.is_grad_enabled():
        pieces = _weight_grad_pieces(x.shape, grad.shape, k, stride, padding, dilation)
    if pieces is None:
        half = _half(x)
        grad_w = _conv_weight_grad(
            grad.float() if half else grad,
            x.float() if half else x,
            weight.float() if half else weight,
            stride,
            [padding, padding],
            dilation,
        )
        return grad_w.to(weight.dtype)
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device)
    for (th, tw, _, _), combos in pieces.items():
        g, _ = _gather(grad, [(h.out, w.out) for h, w in combos])  # no padding: inside
        for t0 in range(0, tw.n, 3):  # at most 3 columns of taps a call
            kw = min(3, tw.n - t0)
            xs, pad = _gather(x, [(h.window(0, th.n), w.window(t0, kw)) for h, w in combos])
            # only the weight's shape is read
            gw = _conv_weight_grad(g, xs, xs.new_empty((x.shape[1], 1, th.n, kw)), 1, pad, 1)
            cols = slice(tw.start + tw.step * t0, tw.start + tw.step * (t0 + kw - 1) + 1, tw.step)
            rows = slice(th.start, th.start + th.step * (th.n - 1) + 1, th.step)
            grad_w[:, :, rows, cols] += gw
    return grad_w.to(weight.dtype)


def _conv_weight_grad(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: list[int],
    dilation: int,
) -> torch.Tensor:
    """PyTorch's weight gradient of a depthwise conv (groups = x's channels)."""
    return torch.ops.aten.convolution_backward(
        grad,
        x,
        weight,
        None,
        [stride, stride],
        padding,
        [dilation, dilation],
        False,
        [0, 0],
        x.shape[1],
        [False, True, False],
    )[1]


class _Span(NamedTuple):
    """Indices start, start + step, ..., n of them, along one axis."""

    start: int
    step: int
    n: int


class _AxisPiece(NamedTuple):
    """Along one axis, the outputs `out` see the inputs in_start + in_step * (m + t) for
    their m-th position and the piece's t-th tap; the taps are `taps` of the kernel."""

    out: _Span
    in_start: int
    in_step: int
    taps: _Span

    def window(self, t0: int, n_taps: int) -> _Span:
        """The inputs that taps t0 .. t0 + n_taps - 1 of the piece see, in order."""
        return _Span(self.in_start + self.in_step * t0, self.in_step, self.out.n + n_taps - 1)


def _axis_pieces(
    n_in: int, n_out: int, k: int, stride: int, padding: int, dilation: int
) -> list[_AxisPiece] | None:
    """One axis of a conv as undilated stride-1 pieces (None: no such rewrite here).
    Input index of output o and tap i: stride * o + dilation * i - padding."""
    if stride == 1:  # outputs of phase q (o = d*a + q) see inputs q - p + d*(a + i)
        return [
            _AxisPiece(
                _Span(q, dilation, len(range(q, n_out, dilation))),
                q - padding,
                dilation,
                _Span(0, 1, k),
            )
            for q in range(dilation)
        ]
    if dilation == 1:  # taps of phase r (i = s*j + r) see inputs r - p + s*(o + j)
        return [
            _AxisPiece(
                _Span(0, 1, n_out), r - padding, stride, _Span(r, stride, len(range(r, k, stride)))
            )
            for r in range(stride)
        ]
    if stride == dilation:  # inputs -p + d*(o + i)
        return [_AxisPiece(_Span(0, 1, n_out), -padding, dilation, _Span(0, 1, k))]
    return None


_Pieces = dict[tuple[_Span, _Span, int, int], list[tuple[_AxisPiece, _AxisPiece]]]


@functools.lru_cache(maxsize=256)  # one plan per conv shape, asked at every backward
def _weight_grad_pieces(
    x_shape: torch.Size, g_shape: torch.Size, k: int, stride: int, padding: int, dilation: int
) -> _Pieces | None:
    """The (row, column) pieces of a depthwise conv's weight gradient, grouped by the taps
    they compute and their output's size: pieces of one group are summed in one call,
    stacked along the batch (the phases of an odd-sized output differ in size)."""
    rows = _axis_pieces(x_shape[2], g_shape[2], k, stride, padding, dilation)
    cols = _axis_pieces(x_shape[3], g_shape[3], k, stride, padding, dilation)
    if rows is None or cols is None:
        return None
    groups: _Pieces = {}
    for h in rows:
        for w in cols:
            if h.out.n and w.out.n:
                groups.setdefault((h.taps, w.taps, h.out.n, w.out.n), []).append((h, w))
    return groups


def _gather(t: torch.Tensor, spans: list[tuple[_Span, _Span]]) -> tuple[torch.Tensor, list[int]]:
    """For each (rows, cols) span pair, t at those indices (zero outside t), stacked along the
    batch, channels-last float32 (16-bit t: converted after gathering, fewer bytes); zero borders that every pair has on both sides of an axis are
    left to the convolution: returned as its padding (rows, cols)."""
    inside = [(_inside(sh, t.shape[2]), _inside(sw, t.shape[3])) for sh, sw in spans]
    rows, cols = spans[0][0].n, spans[0][1].n
    ph = min(
        min(r0, rows - r0 - len(range(h0, h1, sh.step)))
        for ((h0, h1, r0), _), (sh, _) in zip(inside, spans)
    )
    pw = min(
        min(c0, cols - c0 - len(range(w0, w1, sw.step)))
        for (_, (w0, w1, c0)), (_, sw) in zip(inside, spans)
    )
    parts = []
    for ((h0, h1, r0), (w0, w1, c0)), (sh, sw) in zip(inside, spans):
        v = t[:, :, h0 : h1 : sh.step, w0 : w1 : sw.step]
        pads = (c0 - pw, cols - c0 - v.shape[3] - pw, r0 - ph, rows - r0 - v.shape[2] - ph)
        parts.append(F.pad(v, pads) if any(pads) else v)
    out = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
    return out.to(dtype=torch.float32, memory_format=torch.channels_last), [ph, pw]


def _inside(span: _Span, size: int) -> tuple[int, int, int]:
    """The part of `span` inside [0, size): (first index, end, its position in the span)."""
    lo = max(0, (-span.start + span.step - 1) // span.step)
    hi = min(span.n, (size - span.start + span.step - 1) // span.step)
    if hi <= lo:
        return 0, 0, 0
    return span.start + span.step * lo, span.start + span.step * (hi - 1) + 1, lo


def _depthwise_input_grad(
    grad: torch.Tensor,
    weight: torch.Tensor,
    shape: torch.Size,
    dtype: torch.dtype,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    """The input gradient of a 'same'-padded depthwise conv with input `shape`: a depthwise
    conv of the output gradient (zero-interleaved, in `dtype`, for stride 2) with the
    flipped kernel."""
    g = grad
    if stride > 1:  # zero-interleave back to the input's resolution
        g = grad.new_zeros(shape, dtype=dtype).contiguous(memory_format=_format(grad))
        g[:, :, ::stride, ::stride] = grad
    grad_x = F.conv2d(g, weight.flip(-1, -2), None, 1, padding, dilation, shape[1])
    return grad_x[:, :, : shape[2], : shape[3]]


class _DepthwisePointwise(torch.autograd.Function):
    """pointwise(depthwise(x)), keeping only x for backward: the depthwise output is
    recomputed there (a depthwise forward is cheap; its output is a full activation)."""

    @staticmethod
    @_amp_forward
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
    @_amp_backward
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_dw, w_pw = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        need_x, need_dw, need_pw = (_wanted(ctx, i) for i in range(3))
        if not (need_x or need_dw or need_pw):
            return None, None, None, None, None, None
        grad_pw = None
        if need_pw:  # the 1x1's weight gradient takes the depthwise output: recomputed
            h = F.conv2d(x, w_dw, None, stride, padding, dilation, x.shape[1])
            grad_h, grad_pw = _pointwise_backward(grad, h, w_pw, need_x or need_dw, True)
        else:  # an architecture step's backward: the input gradient needs no h
            grad_h = F.conv2d(grad, _in_dtype(w_pw, grad).transpose(0, 1))
        grad_x = grad_dw = None
        if grad_h is not None:  # need_x or need_dw
            grad_x, grad_dw = _depthwise_backward(
                grad_h, x, w_dw, stride, padding, dilation, need_x, need_dw
            )
        return grad_x, grad_dw, grad_pw, None, None, None


def _pointwise_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input and weight gradients of a plain 1x1 conv, computed in the output
    gradient's dtype: the forward ran in it (autocast hands the conv x and the weight in
    its dtype; given a float32 weight beside 16-bit tensors the kernel takes a slow
    mixed-dtype path, ~4x a 3x3's backward in bf16). The gradients are returned in x's and
    the weight's dtypes."""
    xc, w = _in_dtype(x, grad), _in_dtype(weight, grad)
    grad_x, grad_w = torch.ops.aten.convolution_backward(
        grad, xc, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [need_x, need_w, False]
    )[:2]
    return (
        None if grad_x is None else grad_x.to(x.dtype),
        None if grad_w is None else grad_w.to(weight.dtype),
    )


def _in_dtype(weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """weight in t's dtype (a float32 weight beside bf16 tensors under autocast)."""
    return weight if weight.dtype == t.dtype else weight.to(t.dtype)


def _format(t: torch.Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        else torch.contiguous_format
    )


def _leaf_edge(t: torch.Tensor) -> torch.Tensor:
    """t, through a view when it is a leaf that takes gradients (a parameter): the Functions
    below hand their parameters in this way so that their backward can ask the engine
    whether the parameter's gradient is wanted (`_wanted`), which it cannot answer for a
    leaf during torch.autograd.grad. Compiled cells take t as it is."""
    leaf = t.is_leaf and t.requires_grad and torch.is_grad_enabled()
    return t.view_as(t) if leaf and not torch.compiler.is_compiling() else t


def _wanted(ctx: Any, i: int) -> bool:
    """Whether the backward of `ctx` must compute the gradient of its i-th input: the input
    takes gradients and this backward pass will use it. An architecture step's
    torch.autograd.grad(loss, α) reaches the ops' convolutions but never their weights'
    gradients (PyTorch's own ops skip those by themselves); the engine is asked through
    the input's graph node (`_leaf_edge` puts a view before a parameter)."""
    if not ctx.needs_input_grad[i]:
        return False
    if torch.compiler.is_compiling():  # traced once for every later pass: all of them
        return True
    node = ctx.next_functions[i][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except RuntimeError:  # a leaf during torch.autograd.grad: the engine cannot tell
        return True


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
    w = _leaf_edge(m.weight)
    return _DepthwiseConv.apply(x, w, m.stride[0], m.padding[0], m.dilation[0])


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


def batch_stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased variance) per channel of y, from pairwise sums of y and y².

    PyTorch's CPU BN kernel sums a channels-last tensor over N·H·W in one running float32
    sum per channel, ~100x less accurate than its NCHW kernel; the errors reach every
    gradient (docs/engine.md). torch.sum reduces pairwise. E[y²] − E[y]² loses digits when
    |mean| ≫ std, which the supernet's BN inputs (conv and pool outputs) are not; a second
    pass over y − mean would cost ~10 % of a darts step.
    """
    c = y.shape[1]
    n = y.numel() // c
    mean = y.sum(dim=(0, 2, 3)) / n
    return mean, ((y * y).sum(dim=(0, 2, 3)) / n - mean * mean).clamp_min(0.0)


def _normalize(
    y: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-statistics BN of y with `batch_stats` (or the given ones): (out, mean, invstd).

    16-bit y (bf16 autocast) takes PyTorch's own kernel: its one float32 running sum per
    channel errs ~1e-5 relative, far below the 2^-9 of y's own rounding, and it reads y
    twice where `batch_stats` first converts y to float32 and squares it. So does y off
    the CPU formulations (`cpu_formulations`)."""
    if stats is None and _native_bn(y):
        out, mean, invstd = torch.native_batch_norm(y, weight, bias, None, None, True, 0.0, eps)
        return out, mean, invstd
    mean, var = batch_stats(y) if stats is None else stats
    # eval mode normalizes with the statistics it is given: (y − mean) / √(var + eps) · w + b
    out = torch.native_batch_norm(y, weight, bias, mean, var, False, 0.0, eps)[0]
    return out, mean, torch.rsqrt(var + eps)


def _half(y: torch.Tensor) -> bool:
    """Whether y is 16-bit (computed under bf16 or fp16 autocast)."""
    return y.dtype in (torch.bfloat16, torch.float16)


# Where the CPU formulations of this module are used (`cpu_formulations`): "auto" on CPU
# tensors only; "off" nowhere (the tests run a GPU's code path on the CPU this way); "on"
# on every device.
CPU_FORMULATIONS = "auto"


def cpu_formulations(t: torch.Tensor) -> bool:
    """Whether the engine computes t's ops with this module's CPU formulations: pairwise BN
    statistics, depthwise convolutions with their own backward, 3x3 average pools as
    depthwise convolutions, recomputed 1x1 and depthwise outputs. Each pays for itself on
    a CPU, where PyTorch's kernels for these shapes are slow or inaccurate; on a GPU,
    where PyTorch's kernels are accurate and a supernet step is bound by how fast the host
    launches kernels (measured on an H200: 15,570 kernels and 41 ms of GPU work in a
    381 ms nb201 step, docs/engine.md), each of them is extra launches, so a GPU takes
    PyTorch's own ops."""
    if CPU_FORMULATIONS == "auto":
        return t.device.type == "cpu"
    return CPU_FORMULATIONS == "on"


def _native_bn(y: torch.Tensor) -> bool:
    """Whether a batch-statistics BN of y takes PyTorch's kernel for its statistics and its
    scale gradient: 16-bit y (see `_normalize`), and y off the CPU formulations (a GPU's
    BN kernels reduce accurately)."""
    return _half(y) or not cpu_formulations(y)


def _pairwise_stats(y: torch.Tensor) -> bool:
    """Whether a batch-statistics BN of y takes `batch_stats`: 4-D channels-last y of 32 or
    64 bits on the CPU. NCHW y, 16-bit y and GPU tensors take PyTorch's kernel."""
    return y.dim() == 4 and not y.is_contiguous() and not _native_bn(y)


def _grads_of(
    recompute: Any, inputs: tuple[torch.Tensor | None, ...], needs: list[bool], grad: torch.Tensor
) -> tuple[torch.Tensor | None, ...]:
    """The input gradients of `recompute(*inputs)` (PyTorch's differentiable kernels) for a
    backward taken with create_graph=True: the hand-written backwards below are exact
    first derivatives but not differentiable themselves, so a second derivative (a
    double-backward Hessian-vector product) differentiates this recomputation instead."""
    wanted = [t for t, n in zip(inputs, needs) if n and t is not None]
    with torch.enable_grad():
        out = recompute(*inputs)
        found = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True))
    return tuple(next(found) if n and t is not None else None for t, n in zip(inputs, needs))


class _BatchNorm(torch.autograd.Function):
    """BN with batch statistics `stats` (mean, biased variance), computed by the caller."""

    @staticmethod
    @_amp_forward
    def forward(
        ctx: Any,
        y: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
        stats: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        out, mean, invstd = _normalize(y, weight, bias, eps, stats)
        ctx.save_for_backward(y, weight, bias, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    @_amp_backward
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y, weight, bias, mean, invstd = ctx.saved_tensors
        mask = [_wanted(ctx, i) for i in range(3)]
        if not any(mask):
            return None, None, None, None, None
        if torch.is_grad_enabled():  # create_graph: second derivatives wanted
            eps = ctx.eps

            def bn(y: Any, weight: Any, bias: Any) -> torch.Tensor:
                return F.batch_norm(y, None, None, weight, bias, True, 0.0, eps)

            return (*_grads_of(bn, (y, weight, bias), mask, grad), None, None)
        grads = torch.ops.aten.native_batch_norm_backward(
            grad, y, weight, None, None, mean, invstd, True, ctx.eps, mask
        )
        return (*(g if need else None for g, need in zip(grads, mask)), None, None)


def batch_norm(
    y: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """F.batch_norm(y, None, None, weight, bias, training=True, eps=eps), with NCHW-level
    float accuracy for channels-last y (PyTorch's own kernel is used for NCHW y and for
    16-bit y, see `_normalize`)."""
    if not _pairwise_stats(y):
        return F.batch_norm(y, None, None, weight, bias, True, 0.0, eps)
    with torch.no_grad():
        stats = batch_stats(y)
    return _BatchNorm.apply(y, weight, bias, eps, stats)


class BatchStatsBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose batch-statistics forward (training mode, or no running
    statistics) on channels-last input takes its statistics from `batch_stats`, and
    updates running statistics as nn.BatchNorm2d does; everything else is nn.BatchNorm2d's.
    Channels-last supernets switch their BNs to it (Supernet.set_layout)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        batch = self.training or self.running_mean is None
        if not batch or not _pairwise_stats(input):
            return super().forward(input)
        with torch.no_grad():
            mean, var = batch_stats(input)
            if self.training and self.track_running_stats and self.running_mean is not None:
                assert self.running_var is not None and self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                n = input.numel() // input.shape[1]
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                if m is None:  # cumulative moving average; m stays on the device (no sync)
                    mt = 1.0 / self.num_batches_tracked.to(self.running_mean.dtype)
                    self.running_mean.lerp_(mean.to(self.running_mean.dtype), mt)
                    self.running_var.lerp_(unbiased.to(self.running_var.dtype), mt)
                else:
                    self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                    self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return _BatchNorm.apply(input, self.weight, self.bias, self.eps, (mean, var))


def _scale_grad(
    grad: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor
) -> torch.Tensor:
    """Σ grad · (y − mean) · invstd over every element: the gradient of a BN's scalar weight.

    PyTorch's CPU BN backward reduces a channels-last tensor over N·H·W in one running float32
    sum per channel; a folded op weight (an α gradient) summed that way is ~100x less accurate
    than the NCHW reduction. torch.sum's pairwise reduction keeps float rounding at NCHW's level.
    """
    c = y.shape[1]
    per_channel = (grad * (y - mean.view(1, c, 1, 1))).sum(dim=(0, 2, 3))
    return (per_channel * invstd).sum()


def _scaled_bn_backward(
    grad: torch.Tensor,
    y: torch.Tensor,
    scale: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    eps: float,
    need_y: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients of batch_norm(y, weight=scale) (batch statistics, scale = w·1) for y
    and for the one-element w. 16-bit y and y off the CPU formulations: both from
    PyTorch's kernel in one pass (its float32 running sums err far below y's own rounding,
    as in `_normalize`); else w's from `_scale_grad`, summed pairwise."""
    native = _native_bn(y)
    mask = [need_y, need_w and native, False]
    grad_y = grad_w = None
    if any(mask):
        grad_y, grad_scale, _ = torch.ops.aten.native_batch_norm_backward(
            grad, y, scale, None, None, mean, invstd, True, eps, mask
        )
        if need_w and native:
            grad_w = grad_scale.sum()
    if need_w and not native:
        grad_w = _scale_grad(grad, y, mean, invstd)
    return grad_y, grad_w


class _ScaledBN(torch.autograd.Function):
    """batch_norm(y, weight=w·1) with batch statistics, w a one-element tensor (an op weight)."""

    @staticmethod
    @_amp_forward
    def forward(ctx: Any, y: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        # stride-0 is slow, and wrong in torch 2.13's channels-last CPU BN backward
        scale = w.reshape(1).expand(y.shape[1]).contiguous()
        out, mean, invstd = _normalize(y, scale, None, eps)
        ctx.save_for_backward(y, w, scale, mean, invstd)
        ctx.eps, ctx.w_shape = eps, w.shape
        return out

    @staticmethod
    @_amp_backward
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y, w, scale, mean, invstd = ctx.saved_tensors
        need_y, need_w = _wanted(ctx, 0), _wanted(ctx, 1)
        if torch.is_grad_enabled():  # create_graph: second derivatives wanted
            eps = ctx.eps

            def sbn(y: Any, w: Any) -> torch.Tensor:
                s = w.reshape(1).expand(y.shape[1]).contiguous()
                return F.batch_norm(y, None, None, s, None, True, 0.0, eps)

            return (*_grads_of(sbn, (y, w), [need_y, need_w], grad), None)
        grad_y, grad_w = _scaled_bn_backward(grad, y, scale, mean, invstd, ctx.eps, need_y, need_w)
        return grad_y, None if grad_w is None else grad_w.reshape(ctx.w_shape), None


def scaled_bn(y: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """w · batch_norm(y) with batch statistics and no affine parameters; w: one element."""
    return _ScaledBN.apply(y, w, eps)


class _ConvScaledBN(torch.autograd.Function):
    """batch_norm(conv(x), weight=w·1) with batch statistics, keeping only x for
    backward: the conv output is recomputed there (for cheap convs such as 1x1)."""

    @staticmethod
    @_amp_forward
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        w: torch.Tensor,
        eps: float,
    ) -> torch.Tensor:
        y = F.conv2d(x, weight)
        scale = w.reshape(1).expand(y.shape[1]).contiguous()
        out, mean, invstd = _normalize(y, scale, None, eps)
        ctx.save_for_backward(x, weight, w, scale, mean, invstd)
        ctx.eps, ctx.w_shape = eps, w.shape
        return out

    @staticmethod
    @_amp_backward
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, w, scale, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_scale = (_wanted(ctx, i) for i in range(3))
        if torch.is_grad_enabled():  # create_graph: second derivatives wanted
            eps = ctx.eps

            def cbn(x: Any, weight: Any, w: Any) -> torch.Tensor:
                y = F.conv2d(x, weight)
                s = w.reshape(1).expand(y.shape[1]).contiguous()
                return F.batch_norm(y, None, None, s, None, True, 0.0, eps)

            needs = [need_x, need_w, need_scale]
            return (*_grads_of(cbn, (x, weight, w), needs, grad), None)
        y = F.conv2d(x, weight)
        grad_x = grad_w = None
        grad_y, grad_scale = _scaled_bn_backward(
            grad, y, scale, mean, invstd, ctx.eps, need_x or need_w, need_scale
        )
        if grad_y is not None:
            grad_x, grad_w = _pointwise_backward(grad_y, x, weight, need_x, need_w)
        if grad_scale is not None:
            grad_scale = grad_scale.reshape(ctx.w_shape)
        return grad_x, grad_w, grad_scale, None


def conv1x1_scaled_bn(
    conv: nn.Conv2d, x: torch.Tensor, w: torch.Tensor, eps: float
) -> torch.Tensor:
    """w · batch_norm(conv(x)) for `pointwise_1x1(conv)`, without keeping conv(x); w: one element."""
    return _ConvScaledBN.apply(x, _leaf_edge(conv.weight), w, eps)


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
    w_dw, w_pw = _leaf_edge(dw.weight), _leaf_edge(pw.weight)
    return _DepthwisePointwise.apply(x, w_dw, w_pw, dw.stride[0], dw.padding[0], dw.dilation[0])


_INV_COUNTS: dict[tuple[int, int, int, torch.device, torch.dtype], torch.Tensor] = {}


def _scaled_by_inv_count(t: torch.Tensor, h: int, w: int, stride: int) -> torch.Tensor:
    """t (an output, or output gradient, of a 3x3 padding-1 window with `stride` over an
    h x w input) times 1 / (number of in-bounds inputs) of each output cell. The product is
    taken in float32 for 16-bit t (1/9 is not exact there) and returned in t's dtype."""
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    key = (h, w, stride, t.device, dtype)
    # compiled cells compute the map in the graph (a constant there): a lookup would make
    # the graph depend on the cache's contents, recompiling once the cache has the key
    compiling = torch.compiler.is_compiling()
    inv = None if compiling else _INV_COUNTS.get(key)
    if inv is None:
        ones = torch.ones(1, 1, h, w, device=t.device, dtype=dtype)
        box = torch.ones(1, 1, 3, 3, device=t.device, dtype=dtype)
        with torch.autocast(t.device.type, enabled=False):  # counts in `dtype`, not bf16
            inv = F.conv2d(ones, box, None, stride, 1).reciprocal()
        if not compiling:
            _INV_COUNTS[key] = inv
    if t.dtype == dtype:
        return t * inv
    return (t.to(dtype) * inv).to(t.dtype)


class _AvgPool3x3(torch.autograd.Function):
    @staticmethod
    @_amp_forward
    def forward(ctx: Any, x: torch.Tensor, stride: int) -> torch.Tensor:
        c, h, w = x.shape[1:]
        ctx.conf = (x.shape, stride)
        box = F.conv2d(x, x.new_ones(c, 1, 3, 3), None, stride, 1, 1, c)
        return _scaled_by_inv_count(box, h, w, stride)

    @staticmethod
    @_amp_backward
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        shape, stride = ctx.conf
        g = _scaled_by_inv_count(grad, shape[2], shape[3], stride)
        box = g.new_ones(shape[1], 1, 3, 3)  # the adjoint of the box sum is the box sum
        return _depthwise_input_grad(g, box, shape, g.dtype, stride, 1, 1), None


def fast_avg_pool(m: nn.Module) -> TypeGuard[nn.AvgPool2d]:
    """Whether `m` is a pool `avg_pool3x3` computes: nn.AvgPool2d(3, stride 1 or 2,
    padding=1, count_include_pad=False), no ceil mode, no divisor override."""

    return (
        isinstance(m, nn.AvgPool2d)
        and _pair(m.kernel_size) == (3, 3)
        and _pair(m.padding) == (1, 1)
        and _pair(m.stride) in ((1, 1), (2, 2))
        and not m.count_include_pad
        and not m.ceil_mode
        and m.divisor_override is None
    )


def avg_pool3x3(x: torch.Tensor, stride: int) -> torch.Tensor:
    """F.avg_pool2d(x, 3, stride, padding=1, count_include_pad=False) for 4-D x, as a
    depthwise convolution (faster on CPU, forward and backward)."""
    return _AvgPool3x3.apply(x, stride)


def avg_pool(m: nn.AvgPool2d, x: torch.Tensor) -> torch.Tensor:
    """m(x) for a pool that `fast_avg_pool` accepts."""
    return avg_pool3x3(x, _pair(m.stride)[0])


def dense_grad(x: torch.Tensor) -> torch.Tensor:
    """x, with a dense gradient in backward (see _DenseGrad)."""
    return _DenseGrad.apply(x) if x.requires_grad else x
