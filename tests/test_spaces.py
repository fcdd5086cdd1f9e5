from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from diffnas.config import SpaceConfig, SupernetConfig
from diffnas.errors import GenotypeError
from diffnas.spaces import Genotype, get_space, load_genotype, zoo
from diffnas.spaces.darts import DartsNetwork
from diffnas.spaces.genotype import CellGenotype, Edge
from diffnas.spaces.nb201 import from_nb201_string, to_nb201_string
from diffnas.spaces.ops import DARTS_OPS, NB201_OPS
from diffnas.supernet.mixed import MixWeights


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Reference count: for every Conv2d, output elements x (in/groups) x kernel area."""
    total = 0

    def hook(m: nn.Conv2d, inp, out) -> None:
        nonlocal total
        total += (
            out.numel()
            // out.shape[0]
            * (m.in_channels // m.groups)
            * m.kernel_size[0]
            * m.kernel_size[1]
        )

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    module.eval()
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("table,strides", [(DARTS_OPS, (1, 2)), (NB201_OPS, (1,))])
def test_op_costs_match_built_modules(table, strides) -> None:
    c, h = 8, 12
    for name in table.names:
        for stride in strides:
            op = table[name]
            module = op.build(c, stride, True, False)
            assert op.params(c, stride) == n_params(module), (name, stride)
            x = torch.randn(1, c, h, h)
            assert op.macs(c, stride, h, h) == conv_macs(module, x), (name, stride)
            assert op.parameter_free == (op.params(c, stride) == 0 or name == "skip_connect")


def test_darts_supernet_shapes_and_per_cell_specs() -> None:
    space = get_space(SpaceConfig(name="darts", channels=4, cells="NRNRN"))
    specs = space.arch_specs()
    assert list(specs) == [f"cell{i}" for i in range(5)]
    assert [s.cell_type for s in specs.values()] == [
        "normal",
        "reduce",
        "normal",
        "reduce",
        "normal",
    ]
    assert [s.stage for s in specs.values()] == [0, 0, 1, 1, 2]
    assert all(s.shape == (14, 8) for s in specs.values())
    net = space.build_supernet(SupernetConfig(), 3, 10, 16)
    weights = {k: torch.softmax(torch.randn(s.shape), -1) for k, s in specs.items()}
    assert net(torch.randn(2, 3, 16, 16), MixWeights(weights)).shape == (2, 10)


def test_nb201_supernet_forward_and_excluded_ops() -> None:
    space = get_space(SpaceConfig(name="nb201", channels=4, layers=1, exclude_ops=["none"]))
    spec = space.arch_specs()["cell"]
    assert spec.ops == ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    net = space.build_supernet(SupernetConfig(), 1, 10, 8)
    out = net(torch.randn(3, 1, 8, 8), MixWeights({"cell": torch.full(spec.shape, 0.25)}))
    assert out.shape == (3, 10)


def test_darts_derivation_keeps_top2_edges_and_best_non_none_op() -> None:
    space = get_space("darts")
    specs = space.arch_specs()
    w = torch.zeros(14, 8)
    ops = list(specs["normal"].ops)
    # node 2 (rows 0, 1): edge 1->2 strongest via sep_conv_3x3, 0->2 via max_pool; `none` ignored
    w[0, ops.index("none")] = 0.9
    w[0, ops.index("max_pool_3x3")] = 0.3
    w[1, ops.index("sep_conv_3x3")] = 0.6
    # node 3 (rows 2, 3, 4): keep 2->3 (dil_conv_5x5) and 0->3 (skip); drop 1->3
    w[2, ops.index("skip_connect")] = 0.5
    w[3, ops.index("avg_pool_3x3")] = 0.1
    w[4, ops.index("dil_conv_5x5")] = 0.7
    g = space.derive({"normal": w, "reduce": w})
    normal = g.cells_of("normal")[0]
    by_dst = {}
    for e in normal.edges:
        by_dst.setdefault(e.dst, []).append((e.op, e.src))
    assert by_dst[2] == [("max_pool_3x3", 0), ("sep_conv_3x3", 1)]
    assert by_dst[3] == [("skip_connect", 0), ("dil_conv_5x5", 2)]
    assert all(len(v) == 2 for v in by_dst.values()) and len(normal.edges) == 8


def test_nb201_derivation_is_argmax_including_none() -> None:
    space = get_space("nb201")
    w = torch.zeros(6, 5)
    w[:, 3] = 1.0  # nor_conv_3x3
    w[5, 0] = 2.0  # none on 2->3
    g = space.derive({"cell": w})
    assert to_nb201_string(g) == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|none~2|"
    )


def test_genotype_json_round_trip(tmp_path) -> None:
    g = zoo.get("DARTS_V2")
    path = tmp_path / "g.json"
    g.save(path)
    back = Genotype.load(path)
    assert back == g
    assert load_genotype(path) == g


@pytest.mark.parametrize(
    "mutate,match",
    [
        (
            lambda d: d["cells"][0]["edges"][0].__setitem__(0, "sep_conv_9x9"),
            "unknown op 'sep_conv_9x9'",
        ),
        (lambda d: d["cells"][0]["edges"][0].__setitem__(1, 7), "bad edge index 7->2"),
        (
            lambda d: d["cells"][0].__setitem__(
                "edges", [e for e in d["cells"][0]["edges"] if e[2] != 3]
            ),
            "wrong node count",
        ),
        (lambda d: d.__setitem__("space", "nb201"), "exactly one normal cell"),
        (lambda d: d["cells"][0]["edges"][0].__setitem__(1, "zero"), r"expected \[op, from, to\]"),
    ],
)
def test_malformed_genotypes_fail_clearly(tmp_path, mutate, match) -> None:
    data = zoo.get("DARTS_V1").to_json()
    mutate(data)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GenotypeError, match=match):
        load_genotype(path)


def test_genotype_for_wrong_space() -> None:
    space = get_space("darts")
    with pytest.raises(GenotypeError, match="is for the 'nb201' space"):
        space.validate(zoo.get("NB201_OPTIMUM"))


def test_nb201_string_errors() -> None:
    with pytest.raises(GenotypeError, match="node 2 needs 2 inputs"):
        from_nb201_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|none~0|none~1|none~2|")
    with pytest.raises(GenotypeError, match="unknown op 'conv_3x3'"):
        from_nb201_string("|conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|")


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_cells_build_and_run(name) -> None:
    g = zoo.get(name)
    space = get_space(g.space)
    net = space.build_network(
        g,
        num_classes=10,
        channels=8,
        layers=5 if g.space == "darts" else 1,
        auxiliary=g.space == "darts",
    )
    net.eval()
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_per_cell_genotype_maps_searched_cells_to_stages() -> None:
    def cell(op: str, t: str, stage: int | None) -> CellGenotype:
        edges = tuple(Edge(op, s, d) for d in range(2, 6) for s in (0, 1))
        return CellGenotype(t, edges, stage, (2, 3, 4, 5))

    ops = ["sep_conv_3x3", "dil_conv_3x3", "sep_conv_5x5"]
    cells = [cell(ops[s], "normal", s) for s in range(3)]
    cells += [cell("max_pool_3x3", "reduce", 0), cell("avg_pool_3x3", "reduce", 1)]
    g = get_space("darts").validate(Genotype("darts", tuple(cells)))
    net = DartsNetwork(g, 8, 10, 8, False, 0.0)  # 8 layers: N N R N N R N N
    first_ops = [c.ops[0] for c in net.cells]
    # stage s normal cells use searched normal cell s; reductions use reduction cell r
    assert [type(m).__name__ for m in first_ops] == [
        "SepConv",
        "SepConv",
        "PoolBN",
        "DilConv",
        "DilConv",
        "PoolBN",
        "SepConv",
        "SepConv",
    ]
    assert isinstance(first_ops[2][0], nn.MaxPool2d) and isinstance(first_ops[5][0], nn.AvgPool2d)
    assert first_ops[0][0][1].kernel_size == (3, 3) and first_ops[6][0][1].kernel_size == (5, 5)


def test_cost_tables_equal_the_discrete_cells_parameters() -> None:
    """Expected params of a one-hot architecture = params of the same ops in a discrete net."""
    cfg = SpaceConfig(name="darts", channels=4, layers=3)
    space = get_space(cfg)
    supernet = space.build_supernet(SupernetConfig(), 3, 10, 16)
    tables = supernet.cost_tables("params")
    gen = torch.Generator().manual_seed(0)
    cells, expected = [], 0.0
    for key, spec in supernet.arch_specs.items():
        choice = torch.randint(1, len(spec.ops), (len(spec.edges),), generator=gen)  # never 'none'
        onehot = torch.nn.functional.one_hot(choice, len(spec.ops)).float()
        expected += float((onehot * tables[key]).sum())
        edges = tuple(Edge(spec.ops[int(c)], s, d) for (s, d), c in zip(spec.edges, choice))
        cells.append(CellGenotype(spec.cell_type, edges, None, (2, 3, 4, 5)))
    net = DartsNetwork(Genotype("darts", tuple(cells)), 4, 10, 3, False, 0.0)
    actual = sum(n_params(cell.ops) for cell in net.cells)
    assert expected == actual


def test_capture_records_each_computed_op_output() -> None:
    space = get_space(SpaceConfig(name="nb201", channels=4, layers=1))
    net = space.build_supernet(SupernetConfig(), 1, 10, 8)
    spec = net.arch_specs["cell"]
    dag = net.blocks[0]
    dag.start_capture()
    active = {"cell": [[2], [3], [1], [4], [2], [0]]}  # edge 5 computes only `none`
    net(torch.randn(2, 1, 8, 8), MixWeights({"cell": torch.ones(spec.shape)}, active))
    captured = dag.stop_capture()
    assert sorted(captured) == [(0, 2), (1, 3), (2, 1), (3, 4), (4, 2)]
    assert captured[(0, 2)].shape == (2, 4, 8, 8)
    assert all(ops.capture is None for ops in dag.source_ops().values())
