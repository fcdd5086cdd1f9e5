"""DrNAS: the Dirichlet relaxation's pathwise gradient, the anchor regularizer, and the
progressive schedule, each against a reference computation (closed forms, finite
differences, the official code's rules written out by hand)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from diffnas.config import load_config
from diffnas.errors import ConfigError
from diffnas.regularizers.dirichlet_anchor import DirichletAnchor
from diffnas.relaxations.dirichlet import Dirichlet
from diffnas.search import Searcher
from diffnas.supernet.mixed import PartialChannelEdges

TINY = [
    "data.dataset=digits",
    "data.subset=0.03",
    "data.batch_size=8",
    "log.progress=false",
    "threads=1",
    "space.channels=4",
    "space.layers=1",
]


# --------------------------------------------------------------------------- relaxation
def _per_sample_grads(alpha: torch.Tensor, f: Any, n: int, relax: Dirichlet, key: str = "k"):
    """n independent samples' gradients of f(w) w.r.t. α (one row of α per sample)."""
    rows = alpha.detach().expand(n, -1).clone().requires_grad_(True)
    f(relax.weights(rows, key)).sum().backward()
    assert rows.grad is not None
    return rows.grad


@pytest.mark.parametrize("moment", [1, 2])
def test_pathwise_gradient_matches_the_gradient_of_the_exact_expectation(moment: int) -> None:
    """E[w_i] = c_i / c₀ and E[w_i²] = c_i (c_i + 1) / (c₀ (c₀ + 1)), c = elu(α) + 1: the
    mean of the sampled gradients of Σ v_i w_i^m is the exact gradient within 5 s.e."""
    torch.manual_seed(0)
    alpha = torch.tensor([0.7, -0.4, 0.1, 1.3, -1.1], dtype=torch.float64)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64)
    g = _per_sample_grads(alpha, lambda w: (w**moment) @ v, 50_000, Dirichlet())
    a = alpha.clone().requires_grad_(True)
    c = F.elu(a) + 1
    c0 = c.sum()
    mean = c / c0 if moment == 1 else c * (c + 1) / (c0 * (c0 + 1))
    (exact,) = torch.autograd.grad(mean @ v, a)
    se = g.std(dim=0) / math.sqrt(g.shape[0])
    assert torch.all((g.mean(dim=0) - exact).abs() < 5 * se), (g.mean(0), exact, se)
    assert float((g.mean(dim=0) - exact).abs().max()) < 0.02 * float(exact.abs().max())


def test_pruned_ops_get_weight_zero_and_the_sample_follows_the_kept_concentrations() -> None:
    """After pruning, the renormalised sample is Dirichlet(c_kept) (the aggregation rule):
    E[w_i] = c_i / Σ_kept c, and a pruned op's α gets no gradient from it."""
    torch.manual_seed(1)
    relax = Dirichlet()
    alpha = torch.tensor([[0.9, -0.2, 0.4, -1.0, 0.3]], dtype=torch.float64)
    arch = SimpleNamespace(alpha={"k": alpha.clone()})
    relax.keep_top_ops(arch, 3)  # type: ignore[arg-type]
    kept = torch.tensor([True, False, True, False, True])
    assert torch.equal(relax.alive["k"][0], kept)
    assert torch.equal(arch.alpha["k"][0], torch.where(kept, alpha[0], 0.0))  # utils.prune
    assert relax.active(alpha, "k", alpha) == [[0, 2, 4]]  # pruned ops are not computed
    v = torch.tensor([1.0, 5.0, -2.0, 7.0, 0.5], dtype=torch.float64)
    a = arch.alpha["k"][0]
    g = _per_sample_grads(a, lambda w: w @ v, 50_000, relax)
    w = relax.weights(a.expand(4, -1), "k")
    assert torch.all(w[:, ~kept] == 0) and torch.allclose(w.sum(-1), torch.ones(4, dtype=w.dtype))
    ar = a.clone().requires_grad_(True)
    c = torch.where(kept, F.elu(ar) + 1, 0.0)
    (exact,) = torch.autograd.grad((c / c.sum()) @ v, ar)
    se = g.std(dim=0) / math.sqrt(g.shape[0])
    assert torch.all((g.mean(dim=0) - exact).abs() <= 5 * se + 1e-12)
    assert float(g[:, ~kept].abs().max()) < 1e-12
    # derivation: softmax(α) over the kept ops, renormalised (the official genotype())
    p = relax.probs(a, "k")
    ref = torch.where(kept, torch.softmax(a, -1), 0.0)
    assert torch.allclose(p, ref / ref.sum(), atol=1e-15)


# --------------------------------------------------------------------------- regularizer
def _kl_by_hand(c: list[float], prior: float) -> float:
    """KL(Dir(c) ‖ Dir(prior·1)) = ln Γ(c₀) − Σ ln Γ(c_i) − ln Γ(K·p) + K ln Γ(p)
    + Σ (c_i − p)(ψ(c_i) − ψ(c₀))."""
    c0, k = sum(c), len(c)

    def psi(x: float) -> float:
        return float(torch.special.digamma(torch.tensor(x, dtype=torch.float64)))

    out = math.lgamma(c0) - sum(math.lgamma(x) for x in c)
    out += -math.lgamma(k * prior) + k * math.lgamma(prior)
    return out + sum((x - prior) * (psi(x) - psi(c0)) for x in c)


def _ctx(alpha: dict[str, torch.Tensor]) -> Any:
    return SimpleNamespace(arch=SimpleNamespace(alpha=alpha))


@pytest.mark.parametrize("anchor", [1.0, 0.5])
def test_kl_anchor_is_the_closed_form_dirichlet_kl_and_its_gradient_matches_fd(
    anchor: float,
) -> None:
    torch.manual_seed(2)
    alpha = {"normal": torch.randn(3, 4, dtype=torch.float64), "reduce": torch.randn(2, 4).double()}
    reg = DirichletAnchor(DirichletAnchor.Params(kind="kl", scale=0.3, anchor=anchor))
    value = float(reg.loss(_ctx(alpha)))

    def conc(x: float) -> float:
        return x + 1 if x > 0 else math.exp(x)  # elu(x) + 1

    ref = sum(
        _kl_by_hand([conc(float(x)) for x in row], anchor) for a in alpha.values() for row in a
    )
    assert value == pytest.approx(0.3 * ref, rel=1e-12)
    leaf = {k: a.clone().requires_grad_(True) for k, a in alpha.items()}
    reg.loss(_ctx(leaf)).backward()
    h = 1e-6
    for key, a in alpha.items():
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                up = {k: t.clone() for k, t in alpha.items()}
                dn = {k: t.clone() for k, t in alpha.items()}
                up[key][i, j] += h
                dn[key][i, j] -= h
                fd = (float(reg.loss(_ctx(up))) - float(reg.loss(_ctx(dn)))) / (2 * h)
                grad = leaf[key].grad
                assert grad is not None
                assert float(grad[i, j]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_l2_anchor_steps_adam_exactly_as_the_official_adam_weight_decay() -> None:
    """The official l2 is Adam(weight_decay=reg_scale) on α; the regularizer adds the
    same gradient scale·α, so three Adam steps end at the same α."""
    torch.manual_seed(3)
    start = torch.randn(4, 5, dtype=torch.float64)
    grads = [torch.randn(4, 5, dtype=torch.float64) for _ in range(3)]
    reg = DirichletAnchor(DirichletAnchor.Params(kind="l2", scale=1e-3))
    ours = start.clone().requires_grad_(True)
    theirs = start.clone().requires_grad_(True)
    opt_ours = torch.optim.Adam([ours], lr=0.01, betas=(0.5, 0.999), weight_decay=0.0)
    opt_theirs = torch.optim.Adam([theirs], lr=0.01, betas=(0.5, 0.999), weight_decay=1e-3)
    for g in grads:
        opt_ours.zero_grad()
        ((ours * g).sum() + reg.loss(_ctx({"normal": ours}))).backward()
        opt_ours.step()
        opt_theirs.zero_grad()
        (theirs * g).sum().backward()
        opt_theirs.step()
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-15)
    assert float(reg.loss(_ctx({"normal": start}))) == pytest.approx(
        0.5e-3 * float((start**2).sum()), rel=1e-14
    )


def test_anchor_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match="kind must be one of"):
        DirichletAnchor.Params(kind="l1")
    with pytest.raises(ConfigError, match="anchor"):
        DirichletAnchor.Params(anchor=0.0)


# --------------------------------------------------------------------------- progressive
@pytest.fixture(scope="module")
def official() -> Searcher:
    """drnas_nb201 as preset (stages [50, 50], K 4 -> 2, ops 5 -> 3, warm-up 10 per
    stage), on a tiny nb201 supernet (C=4: the mixed ops see 1 channel, then 2)."""
    torch.manual_seed(0)
    return Searcher(load_config(["drnas_nb201"], TINY))


def test_progressive_warmup_restarts_with_each_stage(official: Searcher) -> None:
    """The official train(..., e) gets the stage's own epoch and steps α iff e >= 10."""
    due = []
    for epoch in range(100):
        official.epoch = epoch
        due.append(official.schedule.arch_step_due())
    official.epoch = 0
    expected = [e % 50 >= 10 for e in range(100)]
    assert due == expected


def test_progressive_stage_boundary_prunes_and_grows_the_mixed_ops(official: Searcher) -> None:
    s = official
    sched: Any = s.schedule
    last = s.steps_per_epoch - 1
    # one weight step so that SGD has momentum buffers to carry over
    s.weight_step(next(iter(s.data.train.epoch(0))))
    groups = [m for m in s.model.modules() if isinstance(m, PartialChannelEdges)]
    parts = [g.part for g in groups]  # C/4 of each stage's cells
    conv = groups[0].inner.edges[0][2][1]  # edge 0, nor_conv_1x1's conv (1 -> 1 channel)
    w_before = conv.weight.detach().clone()
    buf_before = s.w_opt.state[conv.weight]["momentum_buffer"].clone()
    key = next(iter(s.arch.alpha))
    with torch.no_grad():
        s.arch.alpha[key].copy_(torch.randn(6, 5))
    alpha = s.arch.alpha[key].detach().clone()
    # not at the boundary: the last step of epoch 48, the first step of epoch 49
    for epoch, step in ((48, last), (49, 0)):
        s.epoch, s.step = epoch, step
        sched.after_weight_step(None)
        assert sched.stage == 0 and groups[0].k == 4
    s.epoch, s.step = 49, last  # after the last weight step of the 50th epoch
    sched.after_weight_step(None)
    assert sched.stage == 1
    # utils.prune by hand: the 3 largest α of each edge keep their values, the rest are 0
    for e, row in enumerate(alpha.tolist()):
        top = sorted(range(5), key=lambda o: -row[o])[:3]
        keep = [o in top for o in range(5)]
        assert s.relaxation.op_mask(key)[e].tolist() == keep
        assert s.arch.alpha[key][e].tolist() == [row[o] if keep[o] else 0.0 for o in range(5)]
    # model.wider(2): every op 1 -> 2 channels, the old weights kept, new ones copies
    assert [(g.k, g.part) for g in groups] == [(2, 2 * p) for p in parts]
    w = conv.weight.detach()
    assert w.shape == (2, 2, 1, 1) and conv.in_channels == conv.out_channels == 2
    assert torch.equal(w[:1, :1], w_before) and torch.all(w == w_before.flatten()[0])
    buf = s.w_opt.state[conv.weight]["momentum_buffer"]
    assert buf.shape == w.shape and torch.all(buf == buf_before.flatten()[0])
    # the grown, pruned supernet runs: pruned ops weigh 0, each edge's weights sum to 1
    s.epoch, s.step = 50, 0
    mix = s.relaxation.mix(s.arch)
    assert torch.all(mix.ops[key][~s.relaxation.op_mask(key)] == 0)
    s.search_step(next(iter(s.data.train.epoch(50))))
    # at the last stage's end nothing more happens
    s.epoch, s.step = 99, last
    sched.after_weight_step(None)
    assert sched.stage == 1


def test_progressive_stages_keep_their_share_of_a_shorter_search() -> None:
    """nb201_cpu's 16 % of 100 epochs: stages [8, 8] with 2 warm-up epochs each (10 of 50,
    rounded), the way search.warmup_epochs is rescaled; by hand for other splits."""
    from diffnas.schedules.progressive import scale_stages

    s = Searcher(load_config(["drnas_nb201"], [*TINY, "search.epochs=16"]))
    sched: Any = s.schedule
    assert sched.ends == [8, 16] and sched.warmup == 2
    due = []
    for epoch in range(16):
        s.epoch = epoch
        due.append(sched.arch_step_due())
    assert due == [e % 8 >= 2 for e in range(16)]
    assert scale_stages([25, 25], 10, 50) == ([25, 25], 10)
    assert scale_stages([30, 10, 10], 5, 10) == ([6, 2, 2], 1)
    assert scale_stages([1, 8], 0, 3) == ([1, 2], 0)
    with pytest.raises(ConfigError, match="2 stages need at least 2 epochs"):
        scale_stages([50, 50], 10, 1)


def test_progressive_refuses_stages_that_do_not_fit_the_search() -> None:
    with pytest.raises(ConfigError, match="keep_ops starts at 5"):
        Searcher(load_config(["drnas_nb201"], [*TINY, "space.exclude_ops=[none]"]))
    with pytest.raises(ConfigError, match="keeps an op mask"):
        Searcher(load_config(["drnas_nb201"], [*TINY, "search.relaxation=softmax"]))


def test_widened_sep_conv_copies_existing_channels_as_net2wider() -> None:
    """DilConv.wider: the depthwise conv's new filters copy random old ones, the pointwise
    conv's new inputs copy the same ones, its new outputs other random old ones."""
    from diffnas.spaces.ops import SepConv
    from diffnas.supernet.widen import widen_op

    torch.manual_seed(4)
    op = SepConv(3, 3, 3, 1, 1, affine=False, track=False)
    old = [m.weight.detach().clone() for m in op.modules() if isinstance(m, torch.nn.Conv2d)]
    edits = widen_op(op, 3, 6)
    assert len(edits) == 6  # per half: dw out, pw in, pw out
    from diffnas.supernet.widen import _apply

    _apply(edits, None)
    y = op(torch.randn(2, 6, 5, 5))
    assert y.shape == (2, 6, 5, 5)
    convs = [m for m in op.modules() if isinstance(m, torch.nn.Conv2d)]
    for half in range(2):
        dw, pw = convs[2 * half], convs[2 * half + 1]
        dw0, pw0 = old[2 * half], old[2 * half + 1]
        assert dw.groups == dw.in_channels == 6 and dw.weight.shape == (6, 1, 3, 3)
        assert torch.equal(dw.weight[:3], dw0) and torch.equal(pw.weight[:3, :3], pw0)
        # which old filter each new depthwise filter copies: the same old input column
        src = [next(i for i in range(3) if torch.equal(dw.weight[j], dw0[i])) for j in (3, 4, 5)]
        for j, i in zip((3, 4, 5), src):
            assert torch.equal(pw.weight[:3, j], pw0[:, i])
        for r in (3, 4, 5):  # new output rows: copies of old rows (over the grown inputs)
            assert any(torch.equal(pw.weight[r], pw.weight[i]) for i in range(3))


def test_nb201_steps_match_the_official_progressive_loop() -> None:
    """Two loop iterations of drnas_nb201 in its second stage (K = 2, 3 ops kept) against
    the numbers DrNAS's 201-space train_search_progressive.py computed on the same inputs and
    Dirichlet draws (tests/golden/drnas_nb201_stage2.json, benchmarks/parity/drnas_nb201_ref.py)."""
    import json
    from pathlib import Path

    from benchmarks.parity import drnas_nb201_ref as ref

    data = json.loads((Path(__file__).parent / "golden" / "drnas_nb201_stage2.json").read_text())
    assert data["reference"]["repository"] == "xiangning-chen/DrNAS"
    old = torch.get_default_dtype()
    ref.xc.set_float64()
    try:
        case = ref.xc.Case.from_json(data["case"])
        ours, inputs = ref.diffnas_steps(case, data["keep_ops"])
    finally:
        torch.set_default_dtype(old)
    got = ref.xc.summarize(case.seed, ours, inputs["weights"])
    diffs = ref.xc.compare(got, data["official"])
    assert set(diffs) == {"alpha_grad", "alpha", "weights", "buffers"}
    assert all(v <= ref.xc.TOLERANCE for v in diffs.values()), diffs
