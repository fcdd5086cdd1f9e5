"""DARTS- (supernet.aux_skip): every edge outputs its mixed op plus β · skip(x), β decaying
per epoch; checked against sums written out here with the op modules (float64)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffnas.config import SupernetConfig, load_config
from diffnas.errors import ConfigError
from diffnas.search import Searcher
from diffnas.spaces.ops import FactorizedReduce
from diffnas.supernet.aux_skip import aux_beta
from diffnas.supernet.dag import SearchDAG
from diffnas.supernet.mixed import MixWeights
from diffnas.supernet.plain import make_plain

TINY = ["data.dataset=digits", "data.subset=0.03", "data.batch_size=8", "log.progress=false"]
NB201 = ["space.name=nb201", "space.channels=4", "space.layers=1"]
DARTS = ["space.name=darts", "space.channels=4", "space.layers=3", "space.nodes=2"]


def _searcher(*extra: str) -> Searcher:
    return Searcher(load_config(["darts_minus"], [*TINY, "threads=1", *extra]))


def _hand_nodes(dag: SearchDAG, inputs: list[torch.Tensor], w: torch.Tensor, beta: float):
    """Node j = Σ over its edges e = (i, j) of [Σ_o w[e, o] · op_eo(n_i) + β · skip_e(n_i)],
    each op and skip its own module call (skip: identity, or the stride-2 edge's module)."""
    nodes = list(inputs)
    for j in range(dag.n_inputs, dag.n_nodes):
        total = None
        for e, (i, dst) in enumerate(dag.edges):
            if dst != j:
                continue
            local = dag.out_edges[i].index(e)
            ops = dag.groups[str(i)].edges[local]
            names = dag.groups[str(i)].op_names
            mixed = sum(
                w[e, o] * ops[o](nodes[i]) for o, name in enumerate(names) if name != "none"
            )
            stride = dag.stride_of[i]
            skip = nodes[i] if stride == 1 else dag.aux[e](nodes[i])
            out = mixed + beta * skip
            total = out if total is None else total + out
        nodes.append(total)
    return nodes


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_nb201_edge_is_mixed_op_plus_beta_times_its_input(beta: float) -> None:
    s = _searcher(*NB201)
    dag = next(m for m in s.model.modules() if isinstance(m, SearchDAG)).double()
    assert all(isinstance(a, nn.Identity) for a in dag.aux)  # stride 1 everywhere
    dag.aux_beta = beta
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.softmax(torch.randn(len(dag.edges), 5, dtype=torch.float64), -1)
    got = dag([x], w)
    want = _hand_nodes(dag, [x], w, beta)
    for g, h in zip(got, want):
        assert torch.allclose(g, h, atol=1e-12)
    # and the skip is really there: without it the nodes differ by more than rounding
    dag.aux_beta = 0.0
    assert not torch.allclose(dag([x], w)[-1], got[-1], atol=1e-3)


@pytest.fixture(scope="module")
def darts_searcher() -> Searcher:
    return _searcher(*DARTS)


def test_darts_reduction_edges_get_a_trained_factorized_reduce_and_engine_equals_plain(
    darts_searcher: Searcher,
) -> None:
    s = darts_searcher
    cell = s.model.cells[1]  # normal, reduce, reduce
    assert cell.reduction
    dag = cell.dag
    for e, (src, _) in enumerate(dag.edges):
        assert isinstance(dag.aux[e], FactorizedReduce if src < 2 else nn.Identity)
    model = s.model.double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)  # digits: one channel
    # hand sum on the reduction cell (its stride-2 skips are the edges' own modules)
    dag.double()
    dag.aux_beta = 1.0
    c = dag.aux[0].conv_1.in_channels  # the reduction cell's width (8)
    ins = [torch.randn(2, c, 8, 8, dtype=torch.float64) for _ in range(2)]
    w = torch.softmax(torch.randn(len(dag.edges), 8, dtype=torch.float64), -1)
    for g, h in zip(dag(ins, w), _hand_nodes(dag, ins, w, 1.0)):
        assert torch.allclose(g, h, atol=1e-12)
    # the engine (channels-last, shared work) against the plain per-module computation
    for d in (m for m in model.modules() if isinstance(m, SearchDAG)):
        d.aux_beta = 0.7
    plain = make_plain(copy.deepcopy(model))
    mix = MixWeights({k: torch.softmax(a.double(), -1) for k, a in s.arch.alpha.items()})
    y = torch.tensor([1, 2])
    out, ref = model(x, mix), plain(x, mix)
    assert torch.allclose(out, ref, atol=1e-10)
    F.cross_entropy(out, y).backward()
    aux_params = [p for p in dag.aux.parameters()]
    assert aux_params and all(
        p.grad is not None and float(p.grad.abs().sum()) > 0 for p in aux_params
    )
    assert {id(p) for p in aux_params} <= {id(p) for g in s.w_opt.param_groups for p in g["params"]}


def test_beta_follows_the_official_decay_schedules() -> None:
    def net(decay: str, epochs: int | None = None) -> SupernetConfig:
        return SupernetConfig(aux_skip=True, aux_skip_decay=decay, aux_skip_epochs=epochs)

    # DecayScheduler of DARTS- src/utils.py with T_max = T_stop = 50, T_start = 0
    assert [aux_beta(net("linear"), e, 50) for e in (0, 25, 49, 50)] == [1.0, 0.5, 0.02, 0.0]
    assert aux_beta(net("cosine"), 25, 50) == pytest.approx(0.5)
    assert aux_beta(net("cosine"), 10, 50) == pytest.approx((1 + math.cos(math.pi / 5)) / 2)
    assert aux_beta(net("slow_cosine"), 25, 50) == pytest.approx(math.cos(math.pi / 4))
    assert aux_beta(net("cosine"), 50, 50) == pytest.approx(0.0, abs=1e-15)
    assert aux_beta(net("none"), 30, 50) == 1.0
    assert aux_beta(net("linear", 4), 6, 10) == 0.0  # held at 0 after aux_skip_epochs

    s = _searcher(*NB201, "search.epochs=2", "data.batch_size=16")
    seen: list[float] = []
    dags = [m for m in s.model.modules() if isinstance(m, SearchDAG)]
    original = s.weight_step

    def recording(batch):  # the β every cell uses in each weight step
        seen.append(dags[0].aux_beta)
        assert all(d.aux_beta == dags[0].aux_beta for d in dags)
        return original(batch)

    s.weight_step = recording  # type: ignore[method-assign]
    s.run_search()
    steps = s.steps_per_epoch
    assert seen == [1.0] * steps + [0.5] * steps
    assert [m["aux_beta"] for m in s.history] == [1.0, 0.5]
    assert aux_beta(s.config.supernet, s.epoch, s.epochs) == 0.0  # the search's end


def test_aux_skip_is_never_part_of_alpha_or_the_genotype(darts_searcher: Searcher) -> None:
    s = darts_searcher
    specs = s.space.arch_specs()  # the space's α layout, which knows no auxiliary skip
    assert s.model.arch_specs == specs
    assert {k: tuple(a.shape) for k, a in s.arch.alpha.items()} == {
        k: sp.shape for k, sp in specs.items()
    }
    skip = specs["normal"].ops.index("skip_connect")
    with torch.no_grad():  # skip_connect the weakest op everywhere
        for a in s.arch.alpha.values():
            a.copy_(torch.randn_like(a))
            a[:, skip] = -10.0
    genotype = s.derivation.derive(s)
    probs = {k: torch.softmax(a.detach(), -1) for k, a in s.arch.alpha.items()}
    assert genotype == s.space.derive(probs)  # a function of α alone
    assert all(e.op != "skip_connect" for c in genotype.cells for e in c.edges)


@pytest.mark.parametrize(
    "override,message",
    [
        ("supernet.aux_skip_decay=exp", "aux_skip_decay"),
        ("supernet.aux_skip_beta=-1", "aux_skip_beta"),
        ("supernet.aux_skip_epochs=0", "aux_skip_epochs"),
    ],
)
def test_bad_aux_skip_settings_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(["darts_minus"], [override])
