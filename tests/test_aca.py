"""ACA: importance scores, the allocation rule, ACA edges in discrete networks, the pipeline."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

import diffnas
from diffnas.cli import main
from diffnas.config import SpaceConfig, SupernetConfig, load_config
from diffnas.derive.aca import AdaptiveChannelAllocation, below_mean_fraction, taylor_importance
from diffnas.errors import ConfigError, GenotypeError
from diffnas.nasbench import nb201
from diffnas.run import RunDir
from diffnas.search import Searcher
from diffnas.spaces import get_space, load_genotype
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype
from diffnas.spaces.ops import DARTS_OPS, NB201_OPS, FactorizedReduce
from diffnas.spaces.split_edge import (
    CHANNELWISE,
    NARROW,
    ACAEdge,
    build_edge,
    edge_cost,
    split_channels,
)
from diffnas.supernet.mixed import MixWeights

from .conftest import tiny_config
from .test_spaces import conv_macs, n_params

ACA_OPS = [
    (table, name, stride)
    for table, strides in ((DARTS_OPS, (1, 2)), (NB201_OPS, (1,)))
    for name in table.names
    if name in NARROW or name in CHANNELWISE
    for stride in strides
]


def ids(case: tuple) -> str:
    return f"{case[0].space}-{case[1]}-s{case[2]}"


# --------------------------------------------------------------------------- importance
def test_taylor_importance_equals_hand_computation() -> None:
    """Tiny op (1x1 conv) + mean pool + linear + CE: y and ∂L/∂y written out by hand."""
    torch.manual_seed(0)
    b, c_in, c, h, w, k = 3, 2, 4, 3, 3, 5
    x = torch.randn(b, c_in, h, w)
    W = torch.randn(c, c_in)
    V, bias = torch.randn(k, c), torch.randn(k)
    labels = torch.tensor([0, 3, 1])
    # y = conv1x1(x) by hand
    y = torch.einsum("oi,bihw->bohw", W, x)
    pooled = y.mean(dim=(2, 3))
    logits = pooled @ V.T + bias
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(labels, k).float()
    # L = mean_n CE_n  =>  ∂L/∂y[n, c, h, w] = (p_n - onehot_n) · V[:, c] / (B · H · W)
    g_hand = ((p - onehot) @ V / (b * h * w))[:, :, None, None].expand(b, c, h, w)
    batch_hand = torch.tensor(
        [abs(sum(float(y[n, ch].mul(g_hand[n, ch]).sum()) for n in range(b))) for ch in range(c)]
    )
    sample_hand = torch.tensor(
        [sum(abs(float(y[n, ch].mul(g_hand[n, ch]).sum())) for n in range(b)) for ch in range(c)]
    )
    # the same gradient from autograd through a real module
    conv = nn.Conv2d(c_in, c, 1, bias=False)
    conv.weight.data = W[:, :, None, None].clone()
    y_mod = conv(x)
    loss = F.cross_entropy(y_mod.mean(dim=(2, 3)) @ V.T + bias, labels)
    (g,) = torch.autograd.grad(loss, [y_mod])
    torch.testing.assert_close(y_mod, y)
    torch.testing.assert_close(g, g_hand)
    torch.testing.assert_close(taylor_importance(y_mod.detach(), g, "batch"), batch_hand)
    torch.testing.assert_close(taylor_importance(y_mod.detach(), g, "sample"), sample_hand)


def test_importance_pass_matches_capture_and_backward_on_the_frozen_supernet() -> None:
    """The derivation's pass = mean over validation batches of Σ y·∂L/∂y per channel, nothing updated."""
    cfg = tiny_config("nb201", epochs=1, **{"space.exclude_ops": "[skip_connect]"})
    s = Searcher(cfg, None, [])
    aca = AdaptiveChannelAllocation(AdaptiveChannelAllocation.Params(max_batches=2))
    spec = s.model.arch_specs["cell"]
    slots = [(0, 2, spec.ops.index("nor_conv_3x3")), (2, 5, spec.ops.index("avg_pool_3x3"))]
    before = [p.detach().clone() for p in [*s.model.parameters(), *s.arch.parameters()]]
    importance, n = aca.importance(s, slots)
    after = [p.detach() for p in [*s.model.parameters(), *s.arch.parameters()]]
    assert n == 2 and all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for p in [*s.model.parameters(), *s.arch.parameters()])

    # reference: softmax(α) weights, capture + retain_grad + backward, batch by batch
    dags = [m for m in s.model.modules() if hasattr(m, "start_capture")]
    mix = MixWeights({"cell": torch.softmax(s.arch.alpha["cell"].detach(), -1)})
    ref = {slot: torch.zeros(s.model.sites[slot[0]].channels) for slot in slots}
    for step, (x, labels) in enumerate(s.data.val.epoch(0)):
        if step == 2:
            break
        for d in dags:
            d.start_capture()
        logits = s.model(x, mix)
        captured = [d.stop_capture() for d in dags]
        ys = {slot: captured[slot[0]][slot[1:]] for slot in slots}
        for y in ys.values():
            y.retain_grad()
        s.model.zero_grad()
        F.cross_entropy(logits, labels).backward()
        for slot, y in ys.items():
            ref[slot] += (y * y.grad).sum(dim=(0, 2, 3)).abs().detach() / 2
    for slot in slots:
        torch.testing.assert_close(importance[slot], ref[slot])


# --------------------------------------------------------------------------- allocation
def test_below_mean_channels_become_identity() -> None:
    assert below_mean_fraction(torch.tensor([1.0, 2.0, 3.0, 10.0])) == 0.75  # mean 4
    assert below_mean_fraction(torch.tensor([5.0, 1.0, 5.0, 5.0])) == 0.25  # mean 4
    assert below_mean_fraction(torch.full((6,), 0.3)) == 0.0  # nothing below an equal mean
    assert below_mean_fraction(torch.tensor([0.0, 0.0, 0.0, 1.0])) == 0.75


def test_allocation_on_given_scores_averages_over_cells_sharing_an_alpha(monkeypatch) -> None:
    """Given importances per supernet cell, each edge's s = mean of its cells' below-mean shares."""
    cfg = tiny_config(
        "nb201", epochs=1, **{"space.exclude_ops": "[skip_connect]", "search.derive": "aca"}
    )
    s = Searcher(cfg, None, [])
    spec = s.model.arch_specs["cell"]
    w = torch.zeros(spec.shape)
    w[:, spec.ops.index("nor_conv_3x3")] = 1.0
    w[5, spec.ops.index("none")] = 2.0  # edge 2->3 is `none`: no fraction
    w[1, spec.ops.index("avg_pool_3x3")] = 3.0  # edge 0->2 is a pool
    with torch.no_grad():
        s.arch.alpha["cell"].copy_(w * 10)
    base = s.derivation.base.derive(s)
    assert [e.op for e in base.cells[0].edges][5] == "none"
    sizes = [site.channels for site in s.model.sites]  # 4, 8, 16: three stages of one cell

    def given(self, searcher, slots):
        out = {}
        for i, row, o in slots:
            c = sizes[i]
            scores = torch.ones(c)
            # cell i: edge `row` has (row + i) % c channels below the mean (if any)
            below = (row + i) % c
            scores[:below] = 0.0
            out[(i, row, o)] = scores
        return out, 1

    monkeypatch.setattr(AdaptiveChannelAllocation, "importance", given)
    g = s.derivation.derive(s, final=True)
    edges = g.cells[0].edges
    for row, e in enumerate(edges):
        if e.op == "none":
            assert e.skip_fraction == 0.0
            continue
        expect = sum(((row + i) % c) / c for i, c in enumerate(sizes)) / len(sizes)
        assert e.skip_fraction == pytest.approx(expect, abs=1e-6), (row, e)
    assert g.info["aca"]["eval_params"] < g.info["aca"]["eval_params_without_aca"]


# --------------------------------------------------------------------------- ACA edges
@pytest.mark.parametrize("case", ACA_OPS, ids=ids)
def test_aca_edge_s0_is_the_plain_op_and_s1_is_identity(case) -> None:
    table, name, stride = case
    c = 8
    x = torch.randn(2, c, 6, 6)
    plain = table[name].build(c, stride, True, False)
    zero = build_edge(table, Edge(name, 0, 2, 0.0), c, stride)
    assert type(zero) is type(plain) and n_params(zero) == n_params(plain)
    zero.load_state_dict(plain.state_dict())
    plain.eval(), zero.eval()
    torch.testing.assert_close(zero(x), plain(x), rtol=0, atol=0)

    one = build_edge(table, Edge(name, 0, 2, 1.0), c, stride)
    if stride == 1:
        assert isinstance(one, nn.Identity)
        assert torch.equal(one(x), x)
    else:
        assert isinstance(one, FactorizedReduce) and n_params(one) == c * c + 2 * c
    # a tiny fraction that rounds to no identity channel is the plain op too
    assert type(build_edge(table, Edge(name, 0, 2, 0.01), c, stride)) is type(plain)


@pytest.mark.parametrize("case", ACA_OPS, ids=ids)
def test_aca_edge_splits_channels_and_costs_match_the_module(case) -> None:
    table, name, stride = case
    c, h = 8, 6
    counts = []
    for s in (0.0, 0.25, 0.5, 0.75, 1.0):
        edge = Edge(name, 0, 2, s)
        m = build_edge(table, edge, c, stride)
        x = torch.randn(2, c, h, h)
        m.eval()
        y = m(x)
        assert y.shape == (2, c, (h + stride - 1) // stride, (h + stride - 1) // stride)
        assert edge_cost(table, "params", edge, c, stride, h, h) == n_params(m), s
        assert edge_cost(table, "macs", edge, c, stride, h, h) == conv_macs(m, x), s
        if isinstance(m, ACAEdge):
            c_op, _ = split_channels(c, s, stride)
            assert m.c_op == c_op
            if stride == 1:  # the identity part carries input channels C'..C-1 unchanged
                assert torch.equal(y[:, c_op:], x[:, c_op:])
            x2 = x.clone()
            x2[:, -1] += 1.0  # the last input channel belongs to the identity part ...
            changed = not torch.allclose(m(x2)[:, :c_op], y[:, :c_op])
            # ... and only ops with weights read it (pools are channel-wise)
            assert changed == (name in NARROW), (name, s)
        counts.append(n_params(m))
    if stride == 1 and name in NARROW:  # identity is free: every channel given to it saves
        assert all(a > b for a, b in itertools.pairwise(counts)), counts
    elif stride == 1:  # pools: no weights either way
        assert counts == [0] * 5
    elif name not in NARROW:  # stride 2: identity is a FactorizedReduce, k² + 2k for k channels
        assert counts == [0, 2 * 2 + 4, 4 * 4 + 8, 6 * 6 + 12, 8 * 8 + 16]
    else:  # ... so a stride-2 op edge is cheapest somewhere in between (checked by hand below)
        assert counts[-1] < counts[0] and min(counts) < counts[0]


def test_aca_parameter_counts_by_hand() -> None:
    c = 8
    count = lambda table, op, s, stride=1: n_params(  # noqa: E731
        build_edge(table, Edge(op, 0, 2, s), c, stride)
    )
    # nor_conv_3x3, s=0.25: C'=6 outputs from 8 inputs: 9·8·6 conv + 2·6 BN
    assert count(NB201_OPS, "nor_conv_3x3", 0.25) == 9 * 8 * 6 + 12 == 444
    # nor_conv_1x1, s=0.5: 8·4 + 2·4
    assert count(NB201_OPS, "nor_conv_1x1", 0.5) == 40
    # sep_conv_3x3, s=0.5 (C'=4): DilConv(8->8) 72+64+16, DilConv(8->4) 72+32+8
    assert count(DARTS_OPS, "sep_conv_3x3", 0.5) == 152 + 112 == 264
    # stride 2, s=0.3: identity count 2·round(0.3·8/2) = 2 -> C'=6; FactorizedReduce(2): 2+2+4
    assert split_channels(8, 0.3, 2) == (6, 2)
    assert count(DARTS_OPS, "sep_conv_3x3", 0.3, 2) == 152 + (72 + 48 + 12) + 8 == 292
    # dil_conv_5x5, s=0.75: C'=2: 8·25 dw + 8·2 pw + 2·2 BN
    assert count(DARTS_OPS, "dil_conv_5x5", 0.75) == 200 + 16 + 4 == 220
    # pools have no parameters; stride 2 pays the FactorizedReduce of the identity part
    assert count(DARTS_OPS, "max_pool_3x3", 0.5) == 0
    assert count(DARTS_OPS, "max_pool_3x3", 0.5, 2) == 4 * 4 + 2 * 4


def test_split_rounds_half_up_and_keeps_stride2_identity_even() -> None:
    assert split_channels(36, 0.0) == (36, 0)
    assert split_channels(36, 1.0) == (0, 36)
    assert split_channels(4, 0.375) == (3, 1)  # (1-0.375)·4 = 2.5 -> 3
    assert split_channels(10, 0.25) == (8, 2)  # 7.5 -> 8 (round-half-even would give 8 too)
    assert split_channels(6, 0.25) == (5, 1)  # 4.5 -> 5 (round-half-even gives 4)
    for s in (0.1, 0.3, 0.45, 0.7, 0.95):
        c_op, c_skip = split_channels(36, s, 2)
        assert c_skip % 2 == 0 and c_op + c_skip == 36


def test_narrowed_ops_at_full_width_are_the_table_ops() -> None:
    """NARROW's builders (C -> C') give the table's module at C' = C (one definition of each op)."""
    for table in (DARTS_OPS, NB201_OPS):
        for name in table.names:
            if name not in NARROW:
                continue
            for stride in (1, 2):
                ref = table[name].build(8, stride, True, False)
                mine = NARROW[name].build(8, 8, stride)
                shapes = lambda m: [(k, v.shape) for k, v in m.state_dict().items()]  # noqa: E731
                assert shapes(mine) == shapes(ref), name
                mine.load_state_dict(ref.state_dict())
                x = torch.randn(2, 8, 7, 7)
                ref.eval(), mine.eval()
                torch.testing.assert_close(mine(x), ref(x), rtol=0, atol=0)
                assert NARROW[name].params(8, 8, stride) == table[name].params(8, stride)


def test_op_transform_touches_only_the_op_channels() -> None:
    m = build_edge(NB201_OPS, Edge("nor_conv_3x3", 0, 1, 0.5), 8, 1)
    x = torch.randn(2, 8, 5, 5)
    y = m(x, lambda t: t * 0)
    assert torch.equal(y[:, :4], torch.zeros(2, 4, 5, 5)) and torch.equal(y[:, 4:], x[:, 4:])


def test_discrete_networks_count_aca_parameters_and_train() -> None:
    """DARTS net: parameters of the cells' edges = Σ analytic edge costs; drop-path trains."""
    space = get_space("darts")
    edges = lambda ops, fr: tuple(  # noqa: E731
        Edge(ops[i % len(ops)], src, dst, fr[i % len(fr)])
        for i, (src, dst) in enumerate((s, d) for d in range(2, 6) for s in (0, 1))
    )
    normal = CellGenotype("normal", edges(["sep_conv_3x3", "max_pool_3x3"], [0.5, 0.25, 0.0]))
    reduce = CellGenotype("reduce", edges(["dil_conv_5x5", "avg_pool_3x3"], [0.3, 0.0]))
    g = space.validate(Genotype("darts", (normal, reduce)))
    net = space.build_network(g, num_classes=10, channels=8, layers=5, drop_path=0.3)
    expected = 0
    for cell in net.cells:
        c = cell.preprocess1[1].out_channels
        for (src, _), e in zip(cell.edges, (normal if not cell.reduction else reduce).edges):
            stride = 2 if cell.reduction and src < 2 else 1
            expected += space.edge_cost("params", e, c, stride)
    assert sum(n_params(cell.ops) for cell in net.cells) == expected
    net.train()
    out = net(torch.randn(4, 3, 16, 16))
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    plain = Genotype(
        "darts",
        tuple(
            CellGenotype(c.type, tuple(Edge(e.op, e.src, e.dst) for e in c.edges)) for c in g.cells
        ),
    )
    assert n_params(space.build_network(plain, num_classes=10, channels=8, layers=5)) > n_params(
        net
    )


def test_aca_network_exports_to_onnx(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    g = load_genotype(
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    cell = g.cells[0]
    fr = [0.0, 0.5, 0.25, 0.0, 0.75, 1.0]
    g = Genotype(
        "nb201",
        (
            CellGenotype(
                "normal",
                tuple(
                    Edge(e.op, e.src, e.dst, f if e.op != "none" else 0.0)
                    for e, f in zip(cell.edges, fr)
                ),
            ),
        ),
    )
    net = get_space("nb201").build_network(g, num_classes=10, channels=8, layers=1).eval()
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "aca.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"])
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {n.op_type for n in model.graph.node} <= {
        "Conv",
        "Relu",
        "BatchNormalization",
        "Concat",
        "Slice",
        "AveragePool",
        "Add",
        "GlobalAveragePool",
        "ReduceMean",
        "Flatten",
        "Gemm",
        "Constant",
        "Pad",
        "Shape",
        "Gather",
        "Unsqueeze",
        "MatMul",
        "Identity",
        "Reshape",
    }
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), net(x), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- genotypes, config
def test_skip_fraction_only_on_ops_that_compute_channels(tmp_path) -> None:
    g = load_genotype("NB201_OPTIMUM")
    bad = g.to_json()
    row = next(i for i, e in enumerate(bad["cells"][0]["edges"]) if e[0] == "skip_connect")
    bad["cells"][0]["edges"][row].append(0.5)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(GenotypeError, match="only an op that computes channels"):
        load_genotype(path)
    ok = g.to_json()
    row = next(i for i, e in enumerate(ok["cells"][0]["edges"]) if e[0] == "nor_conv_3x3")
    ok["cells"][0]["edges"][row].append(0.375)
    path.write_text(json.dumps(ok))
    back = load_genotype(path)
    assert back.cells[0].edges[row].skip_fraction == 0.375 and back.to_json() == ok


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_exclude_skip_connect_removes_it_from_search_and_derivation(space) -> None:
    cfg = tiny_config(space, epochs=1, **{"space.exclude_ops": "[skip_connect]"})
    sp = get_space(cfg.space)
    assert "skip_connect" not in sp.ops
    net = sp.build_supernet(SupernetConfig(), 1, 10, 8)
    for spec in net.arch_specs.values():
        assert "skip_connect" not in spec.ops and spec.shape[1] == len(sp.op_table.names) - 1
    # even when skip would win every edge of the full op set, it cannot be derived
    weights = {k: torch.rand(spec.shape) for k, spec in net.arch_specs.items()}
    g = sp.derive(weights)
    assert all(e.op != "skip_connect" for c in g.cells for e in c.edges)
    with pytest.raises(ConfigError, match="unknown op 'skip_conect'"):
        get_space(SpaceConfig(name=space, exclude_ops=["skip_conect"]))


def test_aca_overlay_layers_on_any_method_preset() -> None:
    alone = load_config(["aca"])
    assert alone.space.name == "darts" and alone.search.derive.name == "aca"
    assert (
        alone.space.exclude_ops == ["skip_connect"] and alone.search.updater.name == "first_order"
    )
    on_nb201 = load_config(["darts_nb201", "aca"], ["search.updater=second_order"])
    assert on_nb201.space.name == "nb201" and on_nb201.space.channels == 16
    assert on_nb201.space.exclude_ops == ["skip_connect"] and on_nb201.search.derive.name == "aca"
    example = load_config(["examples/aca_second_order"])
    assert example.search.updater.name == "second_order" and example.search.derive.name == "aca"
    assert example.space.exclude_ops == ["skip_connect"]
    with pytest.raises(ConfigError, match="base must be another derivation"):
        load_config(["aca"], ["search.derive={name: aca, base: aca}"])
    with pytest.raises(ConfigError, match="did you mean 'default'"):
        load_config(["aca"], ["search.derive={name: aca, base: defualt}"])


# --------------------------------------------------------------------------- end to end
def test_aca_pipeline_end_to_end_nb201(tmp_path, capsys) -> None:
    """search -> importance -> allocation -> discrete net, from one CLI command (with the
    unrolled updater of the example preset: ACA composes with another method)."""
    run = tmp_path / "run"
    argv = [
        "search", "--config", "examples/aca_second_order", "--epochs", "2", "--out", str(run),
        "--no-progress", "--threads", "1", "--set", "space.channels=4", "--set", "space.layers=1",
        "--set", "data.subset=0.3", "--set", "data.batch_size=32",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ACA skip fractions" in out and "default eval network" in out
    g = load_genotype(run)
    edges = g.cells[0].edges
    assert all(e.op != "skip_connect" for e in edges)
    assert any(e.skip_fraction > 0 for e in edges)
    assert all(e.skip_fraction == 0 for e in edges if e.op == "none")
    aca = g.info["aca"]
    assert aca["val_batches"] == len(Searcher(RunDir(run).load_config(), None, []).data.val)
    assert aca["eval_params"] < aca["eval_params_without_aca"]
    records = RunDir(run).read_metrics()
    # per-epoch genotypes are the cheap base rule: no skip fractions
    assert all(len(e) == 3 for r in records for e in r["genotype"]["cells"][0]["edges"])
    if nb201.available():
        assert all("op choice only" in r["lookup_scores"] for r in records)
        assert main(["lookup", str(run)]) == 0
        assert "op choice only" in capsys.readouterr().out
    # `diffnas derive` on the finished run repeats the importance pass: same allocation
    assert main(["derive", str(run), "--out", str(tmp_path / "again.json")]) == 0
    assert Genotype.load(tmp_path / "again.json").cells == g.cells
    importance = json.loads((run / "aca_importance.json").read_text())
    assert len(importance) == 3 * sum(e.op != "none" for e in edges)  # 3 stages, 1 cell each
    net = get_space("nb201").build_network(g, num_classes=10, in_channels=1, channels=8, layers=1)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_aca_pipeline_on_the_darts_space(tmp_path) -> None:
    cfg = tiny_config(
        "darts",
        epochs=1,
        **{
            "space.exclude_ops": "[skip_connect]",
            "search.derive": "{name: aca, max_batches: 2}",
            "data.subset": "0.2",
        },
    )
    result = diffnas.search(cfg, out=tmp_path / "run")
    cells = result.genotype.cells
    assert {c.type for c in cells} == {"normal", "reduce"} and all(len(c.edges) == 8 for c in cells)
    assert any(e.skip_fraction > 0 for c in cells for e in c.edges)
    aca = result.genotype.info["aca"]
    assert aca["val_batches"] == 2 and aca["eval_params"] < aca["eval_params_without_aca"]
    console = Console(record=True, width=200)  # what the CLI prints: Rich must keep the fractions
    console.print(str(result), highlight=False)
    text = console.export_text()
    assert ", skip 0." in text and "default eval network" in text
