"""GDAS: straight-through Gumbel-softmax, only the sampled op computed, annealed temperature."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

import diffnas
from diffnas.errors import ConfigError
from diffnas.relaxations.gumbel import Gumbel
from diffnas.relaxations.softmax import Softmax
from diffnas.search import Searcher
from diffnas.spaces.ops import NB201_OPS
from diffnas.supernet.dag import SearchDAG

from .conftest import tiny_config

EDGES = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]


def recording_dag(ops: list[str], channels: int = 4) -> tuple[SearchDAG, Counter]:
    """An nb201 search cell whose op modules count their forward calls by op name."""
    calls: Counter = Counter()

    def make_op(name: str, ch: int, s: int) -> nn.Module:
        module = NB201_OPS[name].build(ch, s, False, True)
        module.register_forward_hook(lambda *_: calls.update([name]))
        return module

    return SearchDAG(1, 4, EDGES, ops, channels, lambda src: 1, make_op), calls


def test_gdas_forward_calls_exactly_the_sampled_op_of_each_edge() -> None:
    ops = list(NB201_OPS.names)  # none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    dag, calls = recording_dag(ops)
    relax = Gumbel()
    alpha = torch.zeros(len(EDGES), len(ops))
    x = torch.randn(2, 4, 6, 6)
    for _ in range(5):
        w = relax.weights(alpha, "cell")
        active = relax.active(alpha, "cell", w)
        assert active is not None and all(len(a) == 1 for a in active)
        sampled = [ops[a[0]] for a in active]
        calls.clear()
        dag([x], w, active)
        # one call per edge, of the sampled op (`none` is never computed: it outputs zeros)
        assert calls == Counter(name for name in sampled if name != "none")

    calls.clear()  # the softmax relaxation computes every op but `none` on every edge
    dag([x], Softmax().weights(alpha, "cell"), None)
    assert calls == Counter({name: len(EDGES) for name in ops if name != "none"})


def test_gdas_weights_are_one_hot_forward_and_softmax_backward() -> None:
    relax = Gumbel(Gumbel.Params(tau_schedule="step"))
    relax.set_progress(0.5)
    alpha = torch.randn(6, 5, requires_grad=True)
    c = torch.randn(6, 5)
    torch.manual_seed(3)
    w = relax.weights(alpha, "cell")
    # forward: exactly one op per edge with weight 1, the others 0
    torch.testing.assert_close(w.detach(), torch.nn.functional.one_hot(w.argmax(-1), 5).float())
    (g_hard,) = torch.autograd.grad((w * c).sum(), alpha)

    # backward: the gradient of soft = softmax((log_softmax(α) + G) / τ), same noise G
    torch.manual_seed(3)
    g = -torch.empty(6, 5).exponential_().log()
    soft = torch.softmax((torch.log_softmax(alpha, -1) + g) / relax.tau, dim=-1)
    assert torch.equal(soft.argmax(-1), w.argmax(-1))
    (g_soft,) = torch.autograd.grad((soft * c).sum(), alpha)
    torch.testing.assert_close(g_hard, g_soft)


def test_gdas_gradient_reaches_every_alpha_through_the_supernet() -> None:
    ops = ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]  # no `none`
    dag, _ = recording_dag(ops)
    relax = Gumbel()
    alpha = torch.zeros(len(EDGES), len(ops), requires_grad=True)
    w = relax.weights(alpha, "cell")
    out = dag([torch.randn(2, 4, 6, 6)], w, relax.active(alpha, "cell", w))[-1]
    (out**2).mean().backward()
    assert alpha.grad is not None
    assert bool((alpha.grad != 0).all())  # every op of every edge, sampled or not


def test_gdas_temperature_anneals_linearly_from_10_to_0_1() -> None:
    relax = Gumbel(Gumbel.Params(tau_schedule="step"))
    for t, tau in ((0.0, 10.0), (0.25, 7.525), (0.5, 5.05), (1.0, 0.1)):
        relax.set_progress(t)
        assert relax.tau == pytest.approx(tau)
    # the default, as XAutoDL's GDAS.py: τ = 10 − 9.9·e/(E − 1), set once per epoch e
    relax = Gumbel()
    relax.epochs = 5  # what setup() reads from the searcher
    steps = 4  # progress t = (e + step/steps) / E, as the search loop passes it
    for e, tau in enumerate((10.0, 7.525, 5.05, 2.575, 0.1)):
        for step in range(steps):
            relax.set_progress((e + step / steps) / 5)
            assert relax.tau == pytest.approx(tau)
    with pytest.raises(ConfigError, match="tau_min"):
        Gumbel.Params(tau_max=0.1, tau_min=1.0)
    with pytest.raises(ConfigError, match="tau_schedule"):
        Gumbel.Params(tau_schedule="cosine")


def test_gdas_search_logs_a_falling_temperature(tmp_path) -> None:
    cfg = tiny_config("nb201", epochs=2, **{"search.relaxation": "gumbel"})
    result = diffnas.search(cfg, out=tmp_path / "run")
    # per epoch, reaching tau_min on the last (XAutoDL); it used to fall per step
    assert [h["gumbel/tau"] for h in result.history] == [10.0, 0.1]


def test_gdas_scalar_estimator_gives_each_unsampled_op_the_sum_of_its_edges_gradient() -> None:
    """XAutoDL's NB201 GDAS adds each unsampled op's weight (value 0) to the edge output, so
    ∂L/∂w[e, o] = Σ ∂L/∂(node dst(e)) for every unsampled o (the chain rule through a
    broadcast scalar); the sampled op gets Σ ∂L/∂node · op(x) as before."""
    ops = list(NB201_OPS.names)
    dag, _ = recording_dag(ops)
    relax = Gumbel(Gumbel.Params(unsampled="scalar"))
    alpha = torch.randn(len(EDGES), len(ops), dtype=torch.float64)
    dag.double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    torch.manual_seed(1)
    w = relax.weights(alpha, "cell").detach().requires_grad_()
    active = relax.active(alpha, "cell", w)
    unsampled = torch.ones_like(w).scatter_(-1, w.detach().argmax(-1, keepdim=True), 0)
    bias = (w * unsampled).sum(-1)
    nodes = dag([x], w, active, None, bias, True)
    loss = (nodes[-1] ** 2).sum() + nodes[1].sum() * 0.3
    g_w, *g_nodes = torch.autograd.grad(loss, [w, nodes[1], nodes[2], nodes[3]])
    for e, (_, dst) in enumerate(EDGES):
        expected = g_nodes[dst - 1].sum()
        for o in range(len(ops)):
            if unsampled[e, o]:
                torch.testing.assert_close(g_w[e, o], expected)
    # the forward value is the sampled ops' alone: the scalars are exact zeros
    plain = dag([x], w.detach(), active, None, None, True)
    assert all(torch.equal(a, b) for a, b in zip(nodes, plain))


def test_gdas_sampled_none_keeps_its_input_in_the_graph() -> None:
    """A sampled `none` outputs x·0 (XAutoDL multiplies the Zero op's output): what feeds
    the edge gets a zero gradient, not none, so SGD's momentum and decay still apply."""
    ops = list(NB201_OPS.names)
    dag, _ = recording_dag(ops)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    w = torch.zeros(len(EDGES), len(ops))
    w[:, 0] = 1.0  # every edge samples `none`
    active = [[0] for _ in EDGES]
    out = dag([x], w, active, None, None, True)[-1]
    assert torch.equal(out, torch.zeros_like(out))
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, torch.zeros_like(x))
    # without it the cell's output does not depend on x at all (diffnas's old behaviour)
    out = dag([x], w, active)[-1]
    assert not out.requires_grad


def test_gdas_unsampled_auto_follows_each_space_reference() -> None:
    for space, scalar in (("nb201", True), ("darts", False)):
        cfg = tiny_config(space, epochs=1, **{"search.relaxation": "gumbel"})
        searcher = Searcher(cfg)
        assert searcher.relaxation.scalar_unsampled is scalar
        mix = searcher.relaxation.mix(searcher.arch)
        assert mix.connect_none and (mix.biases is not None) is scalar
    with pytest.raises(ConfigError, match="unsampled must be one of"):
        Gumbel.Params(unsampled="all")
