"""RDARTS: the Reg distance against a NumPy reference, the λ rules, a 5-cell search."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diffnas
from diffnas.cli import main
from diffnas.config import SpaceConfig, load_config
from diffnas.errors import ConfigError
from diffnas.parts import RegContext, Relaxation
from diffnas.regularizers.rdarts import RdartsReg
from diffnas.run import RunDir
from diffnas.search import Searcher
from diffnas.spaces import Genotype, get_space, load_genotype
from diffnas.spaces.darts import DartsNetwork
from diffnas.spaces.genotype import CellGenotype, Edge
from diffnas.spaces.ops import DARTS_OPS
from diffnas.supernet.mixed import MixWeights

from .conftest import tiny_config

C = 4  # supernet width of the tests: cells NRNRN have widths 4, 8, 8, 16, 16
TYPES = ["normal", "reduce", "normal", "reduce", "normal"]
WIDTHS = [4, 8, 8, 16, 16]


def rdarts_config(epochs: int = 1, **reg: object):
    return tiny_config(
        "darts",
        epochs=epochs,
        **{
            "space.layers": "null",
            "space.cells": "NRNRN",
            "data.subset": "0.1",
            "search.regularizers": json.dumps([{"name": "rdarts", **reg}]),
        },
    )


def rdarts_searcher(**reg: object) -> tuple[Searcher, RdartsReg]:
    s = Searcher(rdarts_config(**reg))
    part = s.regularizers[0]
    assert isinstance(part, RdartsReg)
    return s, part


def set_alpha(s: Searcher, seed: int = 1, scale: float = 0.7) -> dict[str, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for k, a in s.arch.alpha.items():
            a.copy_(scale * torch.randn(a.shape, generator=gen))
            out[k] = a.detach().double().numpy().copy()
    return out


# --------------------------------------------------------------------------- NumPy reference
@functools.cache
def _tables(widths: tuple[int, ...]) -> dict[str, np.ndarray]:
    ops = get_space("darts").ops
    edges = [(i, j) for j in range(2, 6) for i in range(j)]
    tables = {}
    for k, (t, width) in enumerate(zip(TYPES, widths)):
        table = np.zeros((len(edges), len(ops)))
        for e, (src, _) in enumerate(edges):
            stride = 2 if t == "reduce" and src < 2 else 1
            for o, op in enumerate(ops):
                module = DARTS_OPS[op].build(width, stride, True, False)
                table[e, o] = sum(p.numel() for p in module.parameters())
        tables[f"cell{k}"] = table
    return tables


def reference_tables(widths: list[int]) -> dict[str, np.ndarray]:
    """Parameters of each (edge, op) counted on the built discrete-network modules."""
    return _tables(tuple(widths))


def np_softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_reg(
    alpha: dict[str, np.ndarray],
    tables: dict[str, np.ndarray] | None,
    distance: str,
    c_bar: dict[str, float] | None = None,
) -> tuple[float, float, float, dict[str, float], dict[str, float]]:
    """Reg = mean over same-type pairs of d + (c_i − c_j)²/c̄², by explicit loops."""
    p = {k: np_softmax(a) for k, a in alpha.items()}
    n_edges, n_ops = next(iter(p.values())).shape
    costs: dict[str, float] = {}
    if tables is not None:
        for k in p:
            costs[k] = sum(
                p[k][e, o] * tables[k][e, o] for e in range(n_edges) for o in range(n_ops)
            )
    bars = {}
    d_terms, r_terms = [], []
    for t in ("normal", "reduce"):
        keys = [f"cell{i}" for i, ti in enumerate(TYPES) if ti == t]
        if tables is not None:
            bars[t] = c_bar[t] if c_bar else float(np.mean([costs[k] for k in keys]))
        for i in range(len(keys)):
            for j in range(i + 1, len(keys)):
                a, b = p[keys[i]], p[keys[j]]
                per_edge = []
                for e in range(n_edges):
                    if distance == "l2":
                        per_edge.append(sum((a[e, o] - b[e, o]) ** 2 for o in range(n_ops)))
                    else:
                        m = [(a[e, o] + b[e, o]) / 2 for o in range(n_ops)]
                        per_edge.append(
                            sum(
                                0.5 * a[e, o] * np.log(a[e, o] / m[o])
                                + 0.5 * b[e, o] * np.log(b[e, o] / m[o])
                                for o in range(n_ops)
                            )
                        )
                d_terms.append(sum(per_edge) / n_edges)
                if tables is not None:
                    r_terms.append((costs[keys[i]] - costs[keys[j]]) ** 2 / bars[t] ** 2)
    d = float(np.mean(d_terms))
    r = float(np.mean(r_terms)) if r_terms else 0.0
    return d + r, d, r, costs, bars


@pytest.mark.parametrize(
    "distance,resource,width",
    [("l2", True, "reference"), ("js", True, "actual"), ("l2", False, "reference")],
)
def test_reg_value_and_gradient_match_numpy_reference(distance, resource, width) -> None:
    s, reg = rdarts_searcher(distance=distance, resource=resource, resource_width=width)
    alpha = set_alpha(s)
    tables = reference_tables([C] * 5 if width == "reference" else WIDTHS) if resource else None
    want, want_d, want_r, want_costs, bars = np_reg(alpha, tables, distance)

    terms = reg.terms(s, s.arch)
    assert float(terms.reg.detach()) == pytest.approx(want, rel=1e-5)
    assert float(terms.d.detach()) == pytest.approx(want_d, rel=1e-5)
    assert float(terms.r.detach()) == pytest.approx(want_r, rel=1e-4, abs=1e-12)
    if resource:
        assert want_r > 1e-6  # the hand-built cells differ in cost: the term is exercised
        for k, c in want_costs.items():
            assert float(terms.costs[k].detach()) == pytest.approx(c, rel=1e-5)

    # gradient: central differences of the float64 reference (c̄ held constant, as documented)
    # on 60 random entries spread over the five cells
    keys = list(alpha)
    grads = dict(zip(keys, torch.autograd.grad(terms.reg, [s.arch.alpha[k] for k in keys])))
    rng = np.random.default_rng(0)
    h = 1e-6
    for _ in range(60):
        k = keys[rng.integers(len(keys))]
        idx = tuple(int(rng.integers(n)) for n in alpha[k].shape)
        plus = {kk: v.copy() for kk, v in alpha.items()}
        minus = {kk: v.copy() for kk, v in alpha.items()}
        plus[k][idx] += h
        minus[k][idx] -= h
        fd = (
            np_reg(plus, tables, distance, bars)[0] - np_reg(minus, tables, distance, bars)[0]
        ) / (2 * h)
        assert float(grads[k][idx]) == pytest.approx(fd, rel=2e-3, abs=1e-7), (k, idx)


def test_logged_costs_are_expected_parameters_at_actual_and_reference_width() -> None:
    s, reg = rdarts_searcher()
    alpha = set_alpha(s, seed=3)
    m = reg.metrics()
    for tables, logged in (
        (reference_tables(WIDTHS), "cost"),
        (reference_tables([C] * 5), "cost_ref"),
    ):
        want = np_reg(alpha, tables, "l2")[3]
        assert list(m[logged]) == [f"cell{i}" for i in range(5)]
        for k, c in want.items():
            assert m[logged][k] == pytest.approx(c, abs=0.06)


# --------------------------------------------------------------------------- λ rules
def ctx_for(s: Searcher, ce: float) -> RegContext:
    mix = s.relaxation.mix(s.arch)
    return RegContext(s.arch, mix, torch.tensor(ce), 0.0, s)


def test_share_rule_keeps_rho_share_of_the_cross_entropy() -> None:
    s, reg = rdarts_searcher(rho=0.1)
    alpha = set_alpha(s)
    want_reg = np_reg(alpha, reference_tables([C] * 5), "l2")[0]
    assert want_reg > reg.params.min_reg
    ce = 2.3
    loss = reg.loss(ctx_for(s, ce))
    assert float(loss.detach()) == pytest.approx(0.1 * ce, rel=1e-6)  # λ·Reg = ρ·CE in value
    # λ is a constant: the gradient is (ρ·CE/Reg)·∇Reg
    params = list(s.arch.alpha.values())
    g_loss = torch.autograd.grad(loss, params)
    g_reg = torch.autograd.grad(reg.terms(s, s.arch).reg, params)
    for a, b in zip(g_loss, g_reg):
        torch.testing.assert_close(a, 0.1 * ce / want_reg * b, rtol=1e-4, atol=1e-9)
    assert reg.metrics()["lambda"] == pytest.approx(0.1 * ce / want_reg, rel=1e-5)


def test_share_rule_caps_lambda_below_min_reg() -> None:
    s, reg = rdarts_searcher(rho=0.2, min_reg=0.5)
    alpha = set_alpha(s, scale=0.05)  # nearly identical cells: Reg << min_reg
    want_reg = np_reg(alpha, reference_tables([C] * 5), "l2")[0]
    assert want_reg < 0.5
    loss = reg.loss(ctx_for(s, 1.5))
    assert float(loss.detach()) == pytest.approx(0.2 * 1.5 / 0.5 * want_reg, rel=1e-5)


def test_dual_ascent_update_and_checkpointed_lambda() -> None:
    s, reg = rdarts_searcher(weight="dual", eta=2.0, tau=0.3, lam=0.25)
    lam = 0.25
    for seed, scale in ((1, 0.7), (2, 1.5), (3, 0.05), (4, 0.05), (5, 0.05)):
        alpha = set_alpha(s, seed=seed, scale=scale)
        value = np_reg(alpha, reference_tables([C] * 5), "l2")[0]
        loss = reg.loss(ctx_for(s, 2.0))
        assert float(loss.detach()) == pytest.approx(
            lam * value, rel=1e-5, abs=1e-12
        )  # λ before the step
        reg.after_arch_step(s.arch)
        lam = max(0.0, lam + 2.0 * (value - 0.3))
        assert reg.lam == pytest.approx(lam, rel=1e-5, abs=1e-9)
    assert reg.lam == 0.0  # small Reg drove λ down to the clamp
    state = reg.state_dict()
    fresh = RdartsReg(reg.params)
    fresh.load_state_dict(state)
    assert fresh.lam == reg.lam and fresh.state_dict() == state


def test_fixed_zero_weight_adds_nothing_but_logs() -> None:
    s, reg = rdarts_searcher(weight="fixed", lam=0.0)
    set_alpha(s)
    loss = reg.loss(ctx_for(s, 2.0))
    assert float(loss.detach()) == 0.0
    m = reg.metrics()
    assert m["lambda"] == 0.0 and m["reg"] > 0


def test_any_relaxation_sigmoid_weights_are_normalized_per_edge() -> None:
    class Sigmoid(Relaxation):
        def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
            return torch.sigmoid(alpha)

    s, reg = rdarts_searcher(resource=False)
    alpha = set_alpha(s)
    s.relaxation = Sigmoid()
    sig = {k: 1 / (1 + np.exp(-a)) for k, a in alpha.items()}
    # log of the normalized sigmoid weights: np_reg's softmax then returns exactly them
    logp = {k: np.log(v / v.sum(axis=-1, keepdims=True)) for k, v in sig.items()}
    assert float(reg.terms(s, s.arch).reg.detach()) == pytest.approx(
        np_reg(logp, None, "l2")[0], rel=1e-5
    )


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_rdarts_needs_per_cell_alpha(space) -> None:
    # classic darts (shared normal/reduce) and nb201 (one cell): no two cells to compare
    with pytest.raises(ConfigError, match="one α per type.*space.cells=NRNRN"):
        Searcher(tiny_config(space, **{"search.regularizers": "[rdarts]"}))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["search.regularizers=[{name: rdarts, distance: cosine}]"],
            "distance must be one of l2, js",
        ),
        (["search.regularizers=[{name: rdarts, weight: adaptive}]"], "weight must be one of"),
        (["search.regularizers=[{name: rdarts, rho: -1}]"], "rho must be >= 0"),
        (["space.layers=8"], "space.cells 'NRNRN' gives the supernet 5 cells"),
    ],
)
def test_bad_rdarts_config_fails_at_load(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(["rdarts"], overrides)
    with pytest.raises(ConfigError, match="no R cells"):
        tiny_config("nb201", **{"space.cells": "NRN"})
    with pytest.raises(ConfigError, match="takes 'NNN'"):
        tiny_config("nb201", **{"space.cells": "NN"})


# --------------------------------------------------------------------------- end to end
def test_five_cell_search_writes_a_per_cell_genotype_the_network_accepts(tmp_path) -> None:
    result = diffnas.search(rdarts_config(epochs=1, weight="dual"), out=tmp_path / "run")
    g = load_genotype(tmp_path / "run")
    assert g == result.genotype
    assert [(c.type, c.stage) for c in g.cells] == [
        ("normal", 0),
        ("reduce", 0),
        ("normal", 1),
        ("reduce", 1),
        ("normal", 2),
    ]
    assert all(len(c.edges) == 8 for c in g.cells)
    record = RunDir(tmp_path / "run").read_metrics()[-1]
    assert record["rdarts/reg"] > 0 and record["rdarts/lambda"] is not None
    assert set(record["rdarts/cost"]) == set(record["alpha"]) == {f"cell{i}" for i in range(5)}
    assert json.loads((tmp_path / "run" / "genotype.json").read_text())["cells"][4]["stage"] == 2
    assert RunDir(tmp_path / "run").load_checkpoint()["parts"][3]["lam"] >= 0.0  # λ checkpointed

    # `diffnas derive` re-derives the same 5 cells from the checkpoint
    assert main(["derive", str(tmp_path / "run"), "--out", str(tmp_path / "d.json")]) == 0
    assert load_genotype(tmp_path / "d.json").cells == g.cells

    space = get_space("darts")
    # an eval net of the search's depth uses searched cell i at position i
    net = space.build_network(g, num_classes=10, channels=4, layers=5)
    assert isinstance(net, DartsNetwork)
    for cell, searched in zip(net.cells, g.cells):
        assert [type(m) for m in cell.ops] == [
            type(
                DARTS_OPS[e.op].build(
                    4, 2 if searched.type == "reduce" and e.src < 2 else 1, True, False
                )
            )
            for e in searched.edges
        ]
    deep = space.build_network(g, num_classes=10, channels=4, layers=11, auxiliary=True)
    deep.train()
    logits, aux = deep(torch.randn(2, 3, 16, 16))
    assert logits.shape == aux.shape == (2, 10)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_classic_two_cell_shared_genotype_still_works_everywhere(tmp_path) -> None:
    # search + derive on the classic supernet: two shared cells, stage None
    result = diffnas.search(
        tiny_config("darts", epochs=1, **{"data.subset": "0.1"}), out=tmp_path / "run"
    )
    g = load_genotype(tmp_path / "run")
    assert g.is_shared and [c.type for c in g.cells] == ["normal", "reduce"]
    assert g == result.genotype
    # file round trip, then networks of several depths: every normal cell is the shared one
    g.save(tmp_path / "g.json")
    back = load_genotype(tmp_path / "g.json")
    assert back == g
    space = get_space("darts")
    for layers in (3, 8, 14):
        net = space.build_network(back, num_classes=10, channels=4, layers=layers)
        assert isinstance(net, DartsNetwork)
        for cell in net.cells:
            src = back.cells[1] if cell.reduction else back.cells[0]
            assert cell.edges == [(e.src, e.dst) for e in src.edges]
        net.eval()
        assert F.softmax(net(torch.randn(1, 3, 16, 16)), -1).shape == (1, 10)  # type: ignore[arg-type]


def test_per_cell_genotype_round_trip_and_nearest_stage_fallback(tmp_path) -> None:
    """A 3-cell N R N search in an 8-layer net (N N R N N R N N): missing stages reuse the nearest."""

    def cell(op: str, t: str, stage: int) -> CellGenotype:
        return CellGenotype(
            t, tuple(Edge(op, s, d) for d in range(2, 6) for s in (0, 1)), stage, (2, 3, 4, 5)
        )

    g = Genotype(
        "darts",
        (
            cell("sep_conv_3x3", "normal", 0),
            cell("max_pool_3x3", "reduce", 0),
            cell("dil_conv_5x5", "normal", 1),
        ),
    )
    g.save(tmp_path / "g.json")
    back = load_genotype(tmp_path / "g.json")
    assert back == g and [c.stage for c in back.cells] == [0, 0, 1]
    net = get_space("darts").build_network(back, num_classes=10, channels=4, layers=8)
    first = [type(c.ops[0]).__name__ for c in net.cells]
    assert first == [
        "SepConv",
        "SepConv",
        "PoolBN",
        "DilConv",
        "DilConv",
        "PoolBN",
        "DilConv",
        "DilConv",
    ]
    # a pattern that starts with a reduction has no stage-0 normal cell: stage 1's is used
    g2 = Genotype("darts", (cell("max_pool_3x3", "reduce", 0), cell("sep_conv_5x5", "normal", 1)))
    assert g2.cell_for("normal", 0).ops()[0] == "sep_conv_5x5"
    assert g2.cell_for("reduce", 1).ops()[0] == "max_pool_3x3"


# --------------------------------------------------------------------------- nb201 per stage
def test_nb201_per_stage_alpha_each_stage_reads_its_own_weights() -> None:
    space = get_space(SpaceConfig(name="nb201", channels=4, layers=2, cells="NNN"))
    specs = space.arch_specs()
    assert list(specs) == ["cell0", "cell1", "cell2"]
    assert [s.stage for s in specs.values()] == [0, 1, 2]
    net = space.build_supernet(load_config(["darts"]).supernet, 3, 10, 8)
    assert [k for k in net.keys if k] == ["cell0", "cell0", "cell1", "cell1", "cell2", "cell2"]
    x = torch.randn(2, 3, 8, 8)
    n_ops = len(space.ops)
    uniform = {k: torch.full((6, n_ops), 1 / n_ops) for k in specs}
    base = net(x, MixWeights(uniform))
    # changing stage 1's α changes the output; a key the net does not read would not
    changed = dict(uniform, cell1=torch.softmax(torch.randn(6, n_ops), -1))
    assert not torch.allclose(net(x, MixWeights(changed)), base)
    # the same α under every key is the shared-α supernet: same output as one "cell" key
    shared = get_space(SpaceConfig(name="nb201", channels=4, layers=2))
    net1 = shared.build_supernet(load_config(["darts"]).supernet, 3, 10, 8)
    net1.load_state_dict(net.state_dict())
    torch.testing.assert_close(net1(x, MixWeights({"cell": uniform["cell0"]})), base)


def test_nb201_per_stage_derivation_averages_normalized_weights() -> None:
    space = get_space(SpaceConfig(name="nb201", cells="NNN"))
    ops = space.ops
    conv, pool = ops.index("nor_conv_3x3"), ops.index("avg_pool_3x3")
    w = {k: torch.full((6, len(ops)), 0.1) for k in ("cell0", "cell1", "cell2")}
    # edge 0: two stages prefer pool a little, one prefers conv strongly -> mean picks conv
    w["cell0"][0, pool] = w["cell1"][0, pool] = 0.3
    w["cell2"][0, conv] = 5.0  # unnormalized: 5.0 / 5.4 after normalizing
    g = space.derive(w)
    mean0 = (0.3 / 0.7 + 0.3 / 0.7 + 0.1 / 5.4) / 3, (0.1 / 0.7 + 0.1 / 0.7 + 5.0 / 5.4) / 3
    assert mean0[1] > mean0[0]  # the hand computation behind the expectation
    assert g.cells[0].edges[0].op == "nor_conv_3x3"
    assert len(g.cells) == 1 and g.space == "nb201"


def test_rdarts_searches_nb201_with_per_stage_alpha(tmp_path) -> None:
    cfg = tiny_config(
        "nb201", epochs=1, **{"space.cells": "NNN", "search.regularizers": "[rdarts]"}
    )
    s = Searcher(cfg)
    part = s.regularizers[0]
    assert isinstance(part, RdartsReg)
    assert part.groups == [["cell0", "cell1", "cell2"]]
    result = diffnas.search(cfg, out=tmp_path / "run")
    assert result.genotype.space == "nb201" and len(result.genotype.cells) == 1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert metrics[-1]["rdarts/reg"] is not None and metrics[-1]["rdarts/reg"] > 0


def test_per_alpha_derivations_refuse_nb201_per_stage_alpha() -> None:
    # threshold and top_k read each α as its own genotype cell; nb201 merges the stages
    from diffnas.derive.threshold import Threshold
    from diffnas.derive.top_k import top_k_blocks

    space = get_space(SpaceConfig(name="nb201", cells="NNN"))
    w = {k: torch.softmax(torch.randn(6, 5), -1) for k in space.arch_specs()}
    with pytest.raises(ConfigError, match="averages the α"):
        Threshold().derive_weights(space, w)
    with pytest.raises(ConfigError, match="averages the α"):
        top_k_blocks(space, w, None, 2)
    # one shared α: both still work
    shared = get_space("nb201")
    one = {"cell": w["cell0"]}
    assert Threshold().derive_weights(shared, one).space == "nb201"
    assert len(top_k_blocks(shared, one, None, 2)) == 2
