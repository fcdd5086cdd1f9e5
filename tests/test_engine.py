"""The search engine computes what the plain supernet computes: same loss, same gradients.

The reference is diffnas.supernet.plain: every op its own module call, NCHW, outputs
weighted and summed one at a time. Both run from the same weights and batch.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from diffnas.config import SpaceConfig, SupernetConfig
from diffnas.spaces import get_space
from diffnas.supernet import kernels
from diffnas.supernet.kernels import avg_pool3x3, depthwise_conv, fast_depthwise
from diffnas.supernet.mixed import MixWeights
from diffnas.supernet.plain import make_plain


def loss_and_grads(
    net: torch.nn.Module,
    alpha: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    active: dict | None,
    edges: dict[str, torch.Tensor] | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    a = {k: v.clone().requires_grad_() for k, v in alpha.items()}
    e = None if edges is None else {k: v.clone().requires_grad_() for k, v in edges.items()}
    mix = MixWeights({k: torch.softmax(v, -1) for k, v in a.items()}, active, e)
    loss = F.cross_entropy(net(x, mix), y)
    net.zero_grad(set_to_none=True)
    loss.backward()
    grads = {f"w:{n}": p.grad for n, p in net.named_parameters() if p.grad is not None}
    grads.update({f"alpha:{k}": v.grad for k, v in a.items()})
    if e is not None:
        grads.update({f"edge:{k}": v.grad for k, v in e.items()})
    return loss.detach(), grads


CASES = [
    ("nb201", {}, False, False),
    ("nb201", {"node_bn": True}, True, True),
    ("nb201", {"partial_channels": 2}, False, True),
    ("darts", {}, False, False),
    ("darts", {}, True, True),
    ("darts", {"partial_channels": 2}, False, True),
]


@pytest.mark.parametrize("formulations", ["auto", "off"])
@pytest.mark.parametrize(("space", "net_cfg", "sparse", "scaled"), CASES)
def test_engine_matches_the_plain_supernet(
    space, net_cfg, sparse, scaled, formulations, monkeypatch
) -> None:
    """auto: the CPU's formulations; off: a GPU's code path (PyTorch's kernels), here on
    the CPU."""
    monkeypatch.setattr(kernels, "CPU_FORMULATIONS", formulations)
    layers = 1 if space == "nb201" else 3
    sp = get_space(SpaceConfig(name=space, channels=4, layers=layers))
    engine = sp.build_supernet(SupernetConfig(**net_cfg), 3, 10, 8)
    plain = make_plain(copy.deepcopy(engine))
    specs = engine.arch_specs
    alpha = {k: torch.randn(s.shape) for k, s in specs.items()}
    # sparse: some edges compute a subset of ops (GDAS / CRB), one edge nothing at all
    active = None
    if sparse:
        active = {
            k: [[o for o in range(len(s.ops)) if (o + e) % 3] for e in range(len(s.edges))]
            for k, s in specs.items()
        }
        for rows in active.values():
            rows[-1] = []
    edges = {k: torch.rand(len(s.edges)) + 0.5 for k, s in specs.items()} if scaled else None
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))

    loss_e, grads_e = loss_and_grads(engine, alpha, x, y, active, edges)
    loss_p, grads_p = loss_and_grads(plain, alpha, x, y, active, edges)
    torch.testing.assert_close(loss_e, loss_p, rtol=1e-5, atol=1e-6)
    assert grads_e.keys() == grads_p.keys()
    assert any(k.startswith("alpha:") for k in grads_e)
    for name in grads_p:
        torch.testing.assert_close(grads_e[name], grads_p[name], rtol=1e-4, atol=1e-5, msg=name)


def test_plain_reference_runs_every_op_module_in_nchw() -> None:
    sp = get_space(SpaceConfig(name="nb201", channels=4, layers=1))
    net = make_plain(sp.build_supernet(SupernetConfig(), 3, 10, 8))
    calls: list[bool] = []
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda m, i, o: calls.append(i[0].is_contiguous()))
    w = torch.softmax(torch.randn(net.arch_specs["cell"].shape), -1)
    net(torch.randn(2, 3, 8, 8), MixWeights({"cell": w}))
    # stem + 3 cells x 6 edges x 2 convs + 2 residual blocks x 3 convs, all NCHW
    assert len(calls) == 1 + 3 * 12 + 2 * 3 and all(calls)


@pytest.mark.parametrize(("k", "d", "s"), [(3, 1, 1), (5, 1, 1), (3, 2, 1), (5, 2, 2), (3, 1, 2)])
@pytest.mark.parametrize("size", [8, 7])
def test_depthwise_kernel_matches_conv2d_gradients(k, d, s, size) -> None:
    conv = torch.nn.Conv2d(3, 3, k, s, d * (k - 1) // 2, dilation=d, groups=3, bias=False)
    conv = conv.double()
    assert fast_depthwise(conv)
    x = torch.randn(2, 3, size, size, dtype=torch.double, requires_grad=True)
    out = depthwise_conv(conv, x)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, (x, conv.weight), g)
    ref = torch.autograd.grad(conv(x), (x, conv.weight), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("k", "d", "s"), [(5, 1, 1), (3, 2, 1), (5, 2, 1), (5, 1, 2), (3, 2, 2), (5, 2, 2), (7, 3, 1)]
)
@pytest.mark.parametrize("size", [8, 7])
def test_depthwise_weight_gradient_from_fast_pieces_matches_float64(k, d, s, size) -> None:
    """A float32 5x5, dilated or strided depthwise weight gradient is a sum of undilated
    ones at most 3 taps wide, the shapes oneDNN's fast kernel takes (it runs 5-30x slower
    per tap on the others). Against float64 (NCHW, PyTorch's kernel), and with every
    convolution the gradient dispatches of that kind."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: list[tuple[list[int], int]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func is torch.ops.aten.convolution_backward.default:
                calls.append((list(args[6]), args[2].shape[-1]))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, k, s, d * (k - 1) // 2, dilation=d, groups=16, bias=False)
    conv.weight = torch.nn.Parameter(
        conv.weight.detach().contiguous(memory_format=torch.channels_last)
    )
    x = torch.randn(4, 16, size, size).contiguous(memory_format=torch.channels_last)
    out = depthwise_conv(conv, x.requires_grad_())
    g = torch.randn(out.shape).contiguous(memory_format=torch.channels_last)
    with Record():
        (gw,) = torch.autograd.grad(out, (conv.weight,), g)
    x64, w64 = x.detach().double().contiguous(), conv.weight.detach().double().contiguous()
    w64.requires_grad_()
    ref = torch.autograd.grad(
        F.conv2d(x64, w64, None, s, d * (k - 1) // 2, d, 16), w64, g.double()
    )[0]
    assert gw.dtype == torch.float32 and gw.shape == ref.shape
    assert _rel_err(gw, ref) < 1e-5
    assert calls and all(dil == [1, 1] and width <= 3 for dil, width in calls), calls


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.detach().double() - ref.detach()).abs().max() / ref.detach().abs().max())


@pytest.mark.parametrize(
    ("k", "d", "s"), [(3, 1, 1), (5, 1, 1), (3, 2, 1), (5, 2, 1), (5, 1, 2), (3, 2, 2)]
)
def test_depthwise_kernel_bf16_gradients_match_float64(k, d, s) -> None:
    """bf16 depthwise convs (search.precision=bf16) against float64 on the bf16 values.

    The shape is a darts search's first stage (channels-last, 32x32), where PyTorch 2.13's
    own bfloat16 weight gradient for dilated kernels is wrong on CPUs with AMX (relative
    error 1e+17 and more, measured on an AMX Xeon; exact elsewhere): the engine computes
    that gradient in float32. Each value carries bfloat16's 2^-9 rounding: bound 2e-2."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, k, s, d * (k - 1) // 2, dilation=d, groups=16, bias=False)
    x = torch.randn(8, 16, 32, 32).contiguous(memory_format=torch.channels_last).bfloat16()
    w = conv.weight.detach().bfloat16()
    x16, w16 = x.clone().requires_grad_(), w.clone().requires_grad_()
    conv.weight = torch.nn.Parameter(w16)
    out = depthwise_conv(conv, x16)
    g = torch.randn(out.shape).contiguous(memory_format=torch.channels_last).bfloat16()
    gx, gw = torch.autograd.grad(out, (x16, conv.weight), g)
    assert out.dtype == gx.dtype == gw.dtype == torch.bfloat16
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    ref = F.conv2d(x64, w64, None, s, d * (k - 1) // 2, d, 16)
    rx, rw = torch.autograd.grad(ref, (x64, w64), g.double())
    assert _rel_err(out, ref) < 2e-2
    assert _rel_err(gx, rx) < 2e-2
    assert _rel_err(gw, rw) < 2e-2


def test_16_bit_batch_norm_takes_pytorch_kernel_and_matches_float64(monkeypatch) -> None:
    """bf16 BN inputs (search.precision=bf16) skip the pairwise statistics (converting y to
    float32 and squaring it costs more than bfloat16's rounding is worth) and take
    PyTorch's kernel, forward and backward; the op weight's gradient comes out of its
    backward too. Against float64 on the same bf16 values: within bfloat16's rounding."""
    from diffnas.supernet.kernels import (
        BatchStatsBatchNorm2d,
        batch_norm,
        conv1x1_scaled_bn,
        scaled_bn,
    )

    def no_pairwise(y: torch.Tensor) -> None:
        raise AssertionError(f"batch_stats called on {y.dtype}")

    monkeypatch.setattr(kernels, "batch_stats", no_pairwise)
    torch.manual_seed(0)
    x = (1.0 + torch.randn(16, 8, 16, 16)).contiguous(memory_format=torch.channels_last)
    x = x.bfloat16()
    g = torch.randn(x.shape).contiguous(memory_format=torch.channels_last).bfloat16()
    conv = torch.nn.Conv2d(8, 8, 1, bias=False)
    cw = conv.weight.detach().bfloat16()  # the values the bf16 conv computes with
    w = torch.tensor(0.3)

    def with_conv(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if t.dtype == torch.float64:
            t = F.conv2d(t, cw.double())
            return F.batch_norm(t, None, None, s.reshape(1).expand(8), None, True)
        return conv1x1_scaled_bn(conv, t, s, 1e-5)

    for fn in (lambda t, s: batch_norm(t) * s, lambda t, s: scaled_bn(t, s, 1e-5), with_conv):
        # the reference in NCHW: PyTorch 2.13's float64 BN backward after a channels-last
        # conv returned values of 1e+175 on these tensors
        xd, wd = x.double().contiguous().requires_grad_(), w.double().requires_grad_()
        ref_out = (
            fn(xd, wd) if fn is with_conv else F.batch_norm(xd, None, None, training=True) * wd
        )
        ref = torch.autograd.grad(ref_out, (xd, wd), g.double().contiguous())
        xb, wb = x.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as a bf16 search step runs
            out = fn(xb, wb)
            got = torch.autograd.grad(out, (xb, wb), g)
        assert out.dtype == got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
        assert _rel_err(out, ref_out) < 1e-2
        assert _rel_err(got[0], ref[0]) < 2e-2
        assert abs(float(got[1]) - float(ref[1])) < 1e-2 * abs(float(ref[1]))
    # the module: running statistics as nn.BatchNorm2d's in float64
    ref_bn = torch.nn.BatchNorm2d(8, momentum=0.3).double()
    bn = copy.deepcopy(ref_bn).float()
    bn.__class__ = BatchStatsBatchNorm2d
    for _ in range(2):
        assert _rel_err(bn(x), ref_bn(x.double())) < 1e-2
    torch.testing.assert_close(bn.running_mean.double(), ref_bn.running_mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), ref_bn.running_var, rtol=0, atol=1e-5)


@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("size", [(8, 8), (7, 6)])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_avg_pool_kernel_matches_avg_pool2d(s, size, fmt) -> None:
    x = torch.randn(2, 3, *size, dtype=torch.double).contiguous(memory_format=fmt)
    x.requires_grad_()
    out = avg_pool3x3(x, s)
    ref = F.avg_pool2d(x, 3, s, 1, count_include_pad=False)  # border cells average 4 or 6
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    # differentiable backward: second derivatives (exact Hessian-vector products) pass it
    assert torch.autograd.gradgradcheck(lambda t: avg_pool3x3(t, s), (x,))


def test_engine_pools_through_the_kernel_and_16_bit_outputs_stay_unbiased(monkeypatch) -> None:
    calls: list[int] = []
    real = kernels.avg_pool3x3
    monkeypatch.setattr(
        "diffnas.supernet.mixed.avg_pool",
        lambda m, x: (calls.append(m.stride), real(x, m.stride))[1],
    )
    sp = get_space(SpaceConfig(name="darts", channels=4, layers=3))
    net = sp.build_supernet(SupernetConfig(), 3, 10, 8)
    w = {k: torch.softmax(torch.randn(s.shape), -1) for k, s in net.arch_specs.items()}
    net(torch.randn(2, 3, 8, 8), MixWeights(w))
    # 3 cells x 5 source nodes (the shared pool runs once per source node: 2 inputs + 3
    # nodes feed edges): stride-2 pools in the reduction cell, stride 1 elsewhere
    assert sorted(set(calls)) == [1, 2] and len(calls) == 3 * 5
    # in bfloat16 the sum of nine inputs times 1/9 (not exact in bfloat16) stays unbiased:
    # the mean ratio to the float64 average is 1 within bfloat16's rounding, not 1 + 2^-9
    x = torch.rand(4, 8, 16, 16, dtype=torch.double) + 1
    ref = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    ratio = avg_pool3x3(x.bfloat16(), 1).double() / ref
    assert abs(ratio.mean().item() - 1) < 3e-4
    # and so under autocast (search.precision=bf16), where the counts are first computed
    kernels._INV_COUNTS.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = avg_pool3x3(F.conv2d(x.float(), torch.eye(8).view(8, 8, 1, 1)), 1)
    assert out.dtype == torch.bfloat16
    assert abs((out.double() / ref).mean().item() - 1) < 3e-4


class _WeightGradCount(TorchDispatchMode):
    """Counts the convolution backwards that compute a weight gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.weight_grads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default and args[10][1]:
            self.weight_grads += 1
        return func(*args, **(kwargs or {}))


def test_an_alpha_gradient_computes_no_weight_gradient_and_a_weight_gradient_still_does() -> None:
    # An architecture step takes torch.autograd.grad(loss, α): PyTorch's own ops skip the
    # weights' gradients then; the engine's Functions used to compute them anyway (a
    # quarter of a darts architecture step). Reference: the plain supernet's gradients.
    torch.manual_seed(0)
    sp = get_space(SpaceConfig(name="darts", channels=4, layers=3))
    engine = sp.build_supernet(SupernetConfig(), 3, 10, 8)
    plain = make_plain(copy.deepcopy(engine))
    alpha = {k: torch.randn(s.shape) for k, s in engine.arch_specs.items()}
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))

    def loss_of(net, a):
        return F.cross_entropy(
            net(x, MixWeights({k: torch.softmax(v, -1) for k, v in a.items()})), y
        )

    a_e = {k: v.clone().requires_grad_() for k, v in alpha.items()}
    a_p = {k: v.clone().requires_grad_() for k, v in alpha.items()}
    count = _WeightGradCount()
    with count:
        g_e = torch.autograd.grad(loss_of(engine, a_e), list(a_e.values()))
    g_p = torch.autograd.grad(loss_of(plain, a_p), list(a_p.values()))
    assert count.weight_grads == 0
    for e, p in zip(g_e, g_p, strict=True):
        torch.testing.assert_close(e, p, rtol=1e-4, atol=1e-5)

    # the weights' gradients alone (as the second-order updater asks): the engine's
    # depthwise and 1x1 weights get theirs
    names = [n for n, p in engine.named_parameters() if p.dim() == 4 and p.shape[1] == 1][:3]
    names += [n for n, p in engine.named_parameters() if p.shape[-2:] == (1, 1)][:3]
    w_e = [engine.get_parameter(n) for n in names]
    w_p = [plain.get_parameter(n) for n in names]
    count = _WeightGradCount()
    with count:
        gw_e = torch.autograd.grad(loss_of(engine, alpha), w_e)
    gw_p = torch.autograd.grad(loss_of(plain, alpha), w_p)
    assert count.weight_grads > 0
    for name, e, p in zip(names, gw_e, gw_p, strict=True):
        assert e.abs().sum() > 0, name
        torch.testing.assert_close(e, p, rtol=1e-4, atol=1e-5, msg=name)


def alpha_grad(
    net: torch.nn.Module, alpha: dict, x: torch.Tensor, y: torch.Tensor, dtype
) -> torch.Tensor:
    """∇α of the cross-entropy, all α keys flattened, computed in `dtype`."""
    net = copy.deepcopy(net).to(dtype)
    a = {k: v.to(dtype).requires_grad_() for k, v in alpha.items()}
    loss = F.cross_entropy(
        net(x.to(dtype), MixWeights({k: torch.softmax(v, -1) for k, v in a.items()})), y
    )
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(a.values()))]).double()


def test_engine_float32_alpha_gradient_is_as_accurate_as_the_plain_supernet() -> None:
    # float32 ∇α against float64, engine (channels-last) and plain (NCHW) from the same weights
    # and batches. PyTorch's CPU BatchNorm sums channels-last tensors in one running float32
    # sum per channel; with its statistics and the folded op-weight gradient the engine's error
    # was 5-20x the plain supernet's here. Errors are pooled over seeds (their ratio is noisy).
    sp = get_space(SpaceConfig(name="nb201", channels=4, layers=1))
    err_engine = err_plain = 0.0
    for seed in range(4):
        torch.manual_seed(seed)
        engine = sp.build_supernet(SupernetConfig(), 3, 10, 16)
        plain = make_plain(copy.deepcopy(engine))
        alpha = {k: 1e-3 * torch.randn(s.shape) for k, s in engine.arch_specs.items()}
        x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
        exact = alpha_grad(plain, alpha, x, y, torch.float64)
        err_engine += float(((alpha_grad(engine, alpha, x, y, torch.float32) - exact) ** 2).sum())
        err_plain += float(((alpha_grad(plain, alpha, x, y, torch.float32) - exact) ** 2).sum())
    assert err_engine**0.5 <= 2 * err_plain**0.5, (err_engine**0.5, err_plain**0.5)


def test_channels_last_batch_norm_matches_float64() -> None:
    # the engine's BN (statistics by pairwise sums) against float64, beside PyTorch's own
    from diffnas.supernet.kernels import BatchStatsBatchNorm2d, batch_norm, scaled_bn

    torch.manual_seed(0)
    x = (3.0 + 2.0 * torch.randn(16, 8, 16, 16)).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    w = torch.tensor(0.3)
    exact_out = F.batch_norm(x.double(), None, None, training=True) * 0.3
    for fn in (lambda t, s: batch_norm(t) * s, lambda t, s: scaled_bn(t, s, 1e-5)):
        xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
        ref = torch.autograd.grad(fn(xd, wd), (xd, wd), g.double())
        xf, wf = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = fn(xf, wf)
        assert (out.double() - exact_out).abs().max() < 2e-6
        got = torch.autograd.grad(out, (xf, wf), g)
        assert (got[0].double() - ref[0]).abs().max() < 1e-6
        assert abs(float(got[1]) - float(ref[1])) < 1e-6 * float(g.abs().sum())
    # modules: running statistics updated as nn.BatchNorm2d updates them (float64 here)
    ref_bn = torch.nn.BatchNorm2d(8, momentum=0.3).double()
    bn = copy.deepcopy(ref_bn)
    bn.__class__ = BatchStatsBatchNorm2d
    xd = x.double()
    for _ in range(2):
        torch.testing.assert_close(bn(xd), ref_bn(xd.contiguous()), rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var, rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, rtol=0, atol=1e-12)
    bn.eval(), ref_bn.eval()
    torch.testing.assert_close(bn(xd), ref_bn(xd), rtol=0, atol=1e-12)
    stock = F.batch_norm(x, None, None, training=True) * 0.3  # PyTorch's channels-last kernel
    ours = scaled_bn(x, w, 1e-5)
    assert (ours.double() - exact_out).abs().max() < (stock.double() - exact_out).abs().max()


@pytest.mark.slow
def test_bench_speed_prints_every_measure() -> None:
    from diffnas.bench.speed import run

    lines: list[str] = []
    extra = ["space.channels=4", "space.layers=1"]
    rows = run(
        ["nb201"], steps=1, rounds=1, batch_size=4, threads=1, extra=extra, echo=lines.append
    )
    text = "\n".join(lines)
    for needed in (
        *("CPU:", "matmul rate", "GFLOP/step", "% matmul", "peak RSS", "steps peak"),
        *("speedup", "over the timed steps"),
    ):
        assert needed in text
    assert [r.impl for r in rows] == ["plain", "engine", "bf16", "bf16w"]
    assert "bf16 engine" in text and "bf16w engine" in text and "the fp32 engine's speed" in text
    assert rows[0].flops > 0 and all(r.step_s > 0 and r.peak_rss_mb > 0 for r in rows)
    assert all(0 < r.steps_peak_rss_mb <= r.peak_rss_mb for r in rows)


def test_peak_rss_resets_to_what_follows() -> None:
    """The timed steps' peak of bench speed: a freed 400 MB block counts in the process's
    peak until reset_peak_rss(), and not after it."""
    import numpy as np

    from diffnas.utils import reset_peak_rss, rss_mb

    if not reset_peak_rss():
        pytest.skip("this system cannot reset a process's peak resident memory")
    base = rss_mb(peak=True)
    block = np.ones(400 * 2**20 // 8)  # touched: resident
    del block
    assert rss_mb(peak=True) > base + 350
    assert reset_peak_rss()
    assert rss_mb(peak=True) < base + 50


class _UserConv(torch.nn.Sequential):
    """A user op the engine has never heard of: ReLU, 3x3 conv, stateless BN."""

    calls = 0

    def __init__(self, c: int, traits: bool) -> None:
        super().__init__(
            torch.nn.ReLU(),
            torch.nn.Conv2d(c, c, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(c, affine=False, track_running_stats=False),
        )
        self.traits = traits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().forward(x)

    def engine_body(self) -> list[torch.nn.Module] | None:
        return list(self)[1:] if self.traits else None


@pytest.mark.parametrize("traits", [True, False])
def test_engine_reads_op_traits_not_op_classes(traits) -> None:
    # an op declaring `engine_body` takes the fused path (its forward is never called) and
    # still computes Σ w·op(x); without the trait the engine calls the module
    from diffnas.supernet.mixed import SourceOps

    torch.manual_seed(0)
    src = SourceOps(["conv", "pool"], 4, 1, 2, lambda n, c, s: _UserConv(c, traits))
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    src = src.double()
    w = torch.rand(2, 2, dtype=torch.float64)
    _UserConv.calls = 0
    outs = src(x, w)
    assert _UserConv.calls == (0 if traits else 4)
    for e, ops in enumerate(src.edges):
        _UserConv.calls = 0
        want = sum(w[e, o] * ops[o](x) for o in range(2))
        assert torch.allclose(outs[e], want, atol=1e-12)


def _r64(t: torch.Tensor) -> torch.Tensor:
    """t as bf16 autocast hands it to a kernel, in float64, taking gradients."""
    return t.detach().bfloat16().double().requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", ["conv1x1_scaled_bn", "depthwise_pointwise", "depthwise_conv"])
def test_engine_functions_take_their_backward_outside_autocast(op, dtype) -> None:
    """bf16 autocast forward, backward outside autocast: how CUDA runs it (the backward on
    the device's own thread, outside the caller's autocast), here on the CPU. Before the
    Functions kept their forward's autocast for their backward, a bf16 search crashed on a
    GPU ('grad_output' bf16 against a float32 'weight'); with float32 inputs these three
    failed on the CPU too. Against float64 on the bf16-rounded values, bound 2e-2 (bf16's
    2^-9 rounding per value), as test_depthwise_kernel_bf16_gradients_match_float64."""
    torch.manual_seed(0)
    cl = torch.channels_last
    c = 8
    x = torch.randn(4, c, 12, 12).contiguous(memory_format=cl).to(dtype).requires_grad_()
    pw = torch.nn.Conv2d(c, c, 1, bias=False).to(memory_format=cl)
    dw = torch.nn.Conv2d(c, c, 5, 2, 4, dilation=2, groups=c, bias=False).to(memory_format=cl)
    w = torch.full((1,), 0.7, requires_grad=True)
    if op == "conv1x1_scaled_bn":
        params = [pw.weight, w]

        def run() -> torch.Tensor:
            return kernels.conv1x1_scaled_bn(pw, x, w, 1e-5)

        def ref(x: torch.Tensor, wp: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            # (a stride-0 BN weight, s.expand(c), makes PyTorch's channels-last CPU BN
            # backward return garbage in torch 2.13, up to 1e33: hence .contiguous())
            s = s.expand(c).contiguous()
            return F.batch_norm(F.conv2d(x, wp), None, None, s, None, True, 0.0, 1e-5)

    elif op == "depthwise_pointwise":
        params = [dw.weight, pw.weight]

        def run() -> torch.Tensor:
            return kernels.depthwise_pointwise(dw, pw, x)

        def ref(x: torch.Tensor, wd: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.conv2d(x, wd, None, 2, 4, 2, c), wp)

    else:
        params = [dw.weight]

        def run() -> torch.Tensor:
            return depthwise_conv(dw, x)

        def ref(x: torch.Tensor, wd: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, wd, None, 2, 4, 2, c)

    with torch.autocast("cpu", torch.bfloat16):
        out = run()
    g = torch.randn(out.shape).contiguous(memory_format=cl)
    assert not torch.is_autocast_enabled("cpu")
    grads = torch.autograd.grad(out, [x, *params], g.to(out.dtype))
    # the op weight w is not rounded: it scales in float32 inside the BN
    inputs = [_r64(x), *(_r64(p) if p is not w else w.detach().double() for p in params)]
    for t in inputs:
        t.requires_grad_()
    expect = torch.autograd.grad(ref(*inputs), inputs, g.double())
    assert out.dtype == torch.bfloat16  # the conv ran in bf16
    assert all(gr.dtype == t.dtype for gr, t in zip(grads, [x, *params]))
    assert _rel_err(out, ref(*inputs)) < 2e-2
    for got, want in zip(grads, expect):
        assert _rel_err(got, want) < 2e-2


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _step_ops(net: torch.nn.Module, formulations: str, monkeypatch) -> list[str]:
    monkeypatch.setattr(kernels, "CPU_FORMULATIONS", formulations)
    torch.manual_seed(0)
    alpha = {k: torch.randn(s.shape) for k, s in net.arch_specs.items()}
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    with _CountOps() as count:
        loss_and_grads(net, alpha, x, y, None, None)
    return count.ops


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_gpu_code_path_dispatches_fewer_ops_than_the_cpu_one_and_the_plain_supernet(
    space, monkeypatch
) -> None:
    """On a GPU every dispatched op is a kernel launch (or host work), and a supernet step
    is launch-bound there: an nb201 step launched 15,570 kernels for 41 ms of GPU work in
    381 ms (H200, docs/engine.md). Without the CPU formulations the engine dispatches fewer
    ops than with them and than the plain supernet; the op weights reach the ops as views
    of α's rows (one unbind per row: no select per weight, none of select's backward)."""
    sp = get_space(SpaceConfig(name=space, channels=4, layers=1 if space == "nb201" else 3))
    engine = sp.build_supernet(SupernetConfig(), 3, 10, 8)
    plain = make_plain(copy.deepcopy(engine))
    gpu = _step_ops(engine, "off", monkeypatch)
    cpu = _step_ops(engine, "auto", monkeypatch)
    ref = _step_ops(plain, "auto", monkeypatch)
    assert len(gpu) < 0.8 * len(ref) and len(gpu) < 0.8 * len(cpu), (len(gpu), len(cpu), len(ref))
    assert "aten.select_backward.default" not in gpu + cpu
    assert "aten.select_backward.default" in ref  # the plain reference indexes w[e, o]
    assert "aten.convolution_backward.default" in gpu
