"""Enhanced-gradient relaxation and the top-K block derivation (arXiv 2103.12529, stage 1)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn

from diffnas.config import SpaceConfig, SupernetConfig, load_config
from diffnas.derive.top_k import load_blocks, top_k_blocks
from diffnas.errors import ConfigError
from diffnas.relaxations.enhanced import Enhanced, EnhancedSoftmax, relative_cost
from diffnas.relaxations.softmax import Softmax
from diffnas.search import Searcher
from diffnas.spaces import get_space
from diffnas.supernet.base import Architecture

from .conftest import tiny_config


def _tiny_mixed_op() -> tuple[torch.Tensor, list[nn.Module], torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
    pool = nn.AvgPool2d(3, 1, 1)
    ops: list[nn.Module] = [nn.Identity(), conv, pool, nn.Conv2d(3, 3, 1, bias=False)]
    costs = torch.tensor([0.0, 81.0, 0.0, 9.0])  # parameter counts of the four ops
    return x, ops, costs


@pytest.mark.parametrize("mu", [0.0, 0.3])
def test_enhanced_gradient_equals_the_formula_on_a_tiny_mixed_op(mu: float) -> None:
    x, ops, costs = _tiny_mixed_op()
    target = torch.randn(2, 3, 4, 4)
    alpha = torch.randn(1, 4, requires_grad=True)
    rel = relative_cost(costs.unsqueeze(0))
    p = EnhancedSoftmax.apply(alpha, rel, mu)
    outs = [op(x).detach() for op in ops]
    y = sum(p[0, o] * outs[o] for o in range(4))
    loss = ((y - target) ** 2).sum() + y.mean()
    (grad,) = torch.autograd.grad(loss, alpha)

    # reference: ĝ_o = ⟨g, o(x) − y⟩ + μ (c_o − Σ p c) / max c, with g = ∂L/∂y by autograd
    with torch.no_grad():
        probs = torch.softmax(alpha, -1)[0]
    y_ref = sum(probs[o] * outs[o] for o in range(4)).requires_grad_(True)
    loss_ref = ((y_ref - target) ** 2).sum() + y_ref.mean()
    (g,) = torch.autograd.grad(loss_ref, y_ref)
    mean_cost = float((probs * costs).sum())
    expected = torch.tensor(
        [
            float((g * (outs[o] - y_ref.detach())).sum()) + mu * (costs[o] - mean_cost) / 81.0
            for o in range(4)
        ]
    )
    torch.testing.assert_close(grad[0], expected, rtol=1e-5, atol=1e-6)
    # the forward is exactly the softmax
    torch.testing.assert_close(p.detach(), torch.softmax(alpha, -1).detach())


def test_mu_zero_differs_from_softmax_only_by_the_p_factor_on_a_supernet() -> None:
    space = get_space(SpaceConfig(channels=4, layers=3))
    torch.manual_seed(1)
    net = space.build_supernet(SupernetConfig(), 3, 10, 8)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    grads = {}
    arch0 = Architecture(net.arch_specs, lambda s: 0.5 * torch.randn(s))
    for name, relax in (("softmax", Softmax()), ("enhanced", Enhanced(Enhanced.Params(mu=0.0)))):
        arch = Architecture(net.arch_specs, lambda s: torch.zeros(s))
        arch.load_state_dict(arch0.state_dict())
        if isinstance(relax, Enhanced):
            relax.rel_cost = {k: relative_cost(t) for k, t in net.cost_tables("params").items()}
        loss = nn.functional.cross_entropy(net(x, relax.mix(arch)), y)
        grads[name] = torch.autograd.grad(loss, list(arch.alpha.values()))
    for key, g_soft, g_enh in zip(arch0.alpha, grads["softmax"], grads["enhanced"]):
        p = torch.softmax(arch0.alpha[key].detach(), -1)
        torch.testing.assert_close(g_soft, p * g_enh, rtol=1e-4, atol=1e-8)
        assert g_enh.abs().max() > g_soft.abs().max()  # weak ops keep their signal


def test_complexity_pull_pushes_costly_ops_down() -> None:
    """With no loss signal, one Adam-free gradient step lowers α of the costliest op."""
    table = torch.tensor([[0.0, 0.0, 100.0, 10.0]])
    alpha = torch.zeros(1, 4, requires_grad=True)
    p = EnhancedSoftmax.apply(alpha, relative_cost(table), 1.0)
    (grad,) = torch.autograd.grad((p * 0).sum(), alpha)
    # p = 1/4 each: mean relative cost = 0.275; gradient = r - 0.275
    torch.testing.assert_close(grad[0], torch.tensor([-0.275, -0.275, 0.725, -0.175]))


def test_enhanced_search_runs_and_rejects_bad_params(tmp_path) -> None:
    extra = {"search.relaxation": "{name: enhanced, mu: 0.2}", "data.subset": "0.1"}
    config = tiny_config("darts", epochs=1, **extra)
    s = Searcher(config)
    assert set(s.relaxation.rel_cost) == {"normal", "reduce"}
    result = s.run_search()
    assert result.genotype.space == "darts"
    with pytest.raises(ConfigError, match="mu must be >= 0"):
        load_config(["darts"], ["search.relaxation={name: enhanced, mu: -1}"])


# --------------------------------------------------------------------------- top-K
def _brute_force(space, weights) -> list[float]:
    """Scores of every derivable genotype (2 edges per node, a non-none op on each)."""
    per_slot = []
    for key, spec in space.arch_specs().items():
        logw = torch.log(weights[key].double())
        cands = [o for o, n in enumerate(spec.ops) if n != "none"]
        for rows in spec.incoming().values():
            scores = []
            for pair in itertools.combinations(rows, 2):
                for o1, o2 in itertools.product(cands, cands):
                    scores.append(float(logw[pair[0], o1] + logw[pair[1], o2]))
            per_slot.append(scores)
    return sorted((sum(c) for c in itertools.product(*per_slot)), reverse=True)


def test_top_k_matches_brute_force_and_rank_one_is_the_default_rule() -> None:
    space = get_space(
        SpaceConfig(
            channels=4,
            nodes=2,
            exclude_ops=[
                "max_pool_3x3",
                "avg_pool_3x3",
                "sep_conv_5x5",
                "dil_conv_3x3",
                "dil_conv_5x5",
            ],
        )
    )
    torch.manual_seed(3)
    weights = {k: torch.softmax(torch.randn(s.shape), -1) for k, s in space.arch_specs().items()}
    blocks = top_k_blocks(space, weights, None, 12)
    reference = _brute_force(space, weights)[:12]
    assert [round(s, 9) for s, _ in blocks] == [round(s, 9) for s in reference]
    assert blocks[0][1] == space.derive(weights)
    assert len({g for _, g in blocks}) == 12  # distinct genotypes
    for score, g in blocks:  # each score is the genotype's own log-probability
        spec_of = space.arch_specs()
        total = 0.0
        for (key, spec), cell in zip(spec_of.items(), g.cells):
            for e in cell.edges:
                r, o = spec.edges.index((e.src, e.dst)), spec.ops.index(e.op)
                total += math.log(float(weights[key][r, o]))
        assert total == pytest.approx(score, abs=1e-9)
        space.validate(g)


def test_top_k_derivation_saves_blocks_with_the_run(tmp_path) -> None:
    import diffnas

    config = tiny_config("darts", epochs=1, **{"search.derive": "{name: top_k, k: 3}"})
    result = diffnas.search(config, out=tmp_path / "run")
    data = json.loads((tmp_path / "run" / "blocks.json").read_text())
    assert [b["rank"] for b in data["blocks"]] == [1, 2, 3]
    scores = [b["log_prob"] for b in data["blocks"]]
    assert scores == sorted(scores, reverse=True)
    blocks = load_blocks(tmp_path / "run")
    assert len(blocks) == 3 and blocks[0].cells == result.genotype.cells
