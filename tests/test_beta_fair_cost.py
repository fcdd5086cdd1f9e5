"""β-DARTS beta decay, FairDARTS (sigmoid, zero-one loss, threshold derivation), cost regularizer."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffnas.config import SpaceConfig
from diffnas.derive.threshold import Threshold
from diffnas.errors import ConfigError
from diffnas.parts import RegContext
from diffnas.regularizers.beta_decay import BetaDecay
from diffnas.regularizers.cost import Cost
from diffnas.regularizers.zero_one import ZeroOne
from diffnas.relaxations.sigmoid import Sigmoid
from diffnas.search import Searcher
from diffnas.spaces import get_space
from diffnas.supernet.mixed import MixWeights

from .conftest import tiny_config


class FakeArch:
    def __init__(self, alpha: dict[str, torch.Tensor]) -> None:
        self.alpha = alpha


def ctx(alpha: dict[str, torch.Tensor], progress: float, mix: MixWeights | None = None):
    mix = mix or MixWeights({k: torch.softmax(a, -1) for k, a in alpha.items()})
    return RegContext(FakeArch(alpha), mix, torch.tensor(1.0), progress, None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- beta decay
def test_beta_decay_value_schedule_and_gradient_match_the_formula() -> None:
    rows = {"normal": [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], "reduce": [[1.0, 3.0, -2.0]]}
    alpha = {k: torch.tensor(v, requires_grad=True) for k, v in rows.items()}
    all_rows = [r for v in rows.values() for r in v]
    lse = [math.log(sum(math.exp(a) for a in r)) for r in all_rows]
    mean_lse = sum(lse) / len(lse)  # mean over the 3 edges of both keys

    reg = BetaDecay(BetaDecay.Params(lambda_max=50.0))
    for t, lam in ((0.0, 0.0), (0.3, 15.0), (1.0, 50.0)):
        assert reg.loss(ctx(alpha, t)).item() == pytest.approx(lam * mean_lse, rel=1e-6)
        assert reg.metrics()["lambda"] == pytest.approx(lam)

    reg.loss(ctx(alpha, 0.3)).backward()
    for key, r in rows.items():  # ∂/∂α_e = λ / E · softmax(α_e)
        expected = [
            [15.0 / 3 * math.exp(a) / sum(math.exp(b) for b in row) for a in row] for row in r
        ]
        torch.testing.assert_close(alpha[key].grad, torch.tensor(expected))


def test_beta_decay_per_epoch_lambda_is_the_official_50_epoch_over_100() -> None:
    """lambda_per_epoch 0.5: λ = 50·epoch/100 (optimizers/darts/architect.py), whatever the
    progress within the epoch or the search's length."""
    from types import SimpleNamespace

    alpha = {"normal": torch.tensor([[0.5, -1.0, 2.0]])}
    lse = math.log(math.exp(0.5) + math.exp(-1.0) + math.exp(2.0))
    reg = BetaDecay(BetaDecay.Params(lambda_per_epoch=0.5))
    for epoch, progress in ((0, 0.01), (7, 0.15), (7, 0.19), (49, 0.999)):
        c = ctx(alpha, progress)
        c.searcher = SimpleNamespace(epoch=epoch)  # type: ignore[assignment]
        assert reg.loss(c).item() == pytest.approx(50 * epoch / 100 * lse, rel=1e-6)
    with pytest.raises(ConfigError, match="lambda_per_epoch"):
        BetaDecay.Params(lambda_per_epoch=-1.0)


# --------------------------------------------------------------------------- FairDARTS
def test_zero_one_loss_value_and_gradient_match_the_formula() -> None:
    values = [[0.0, 2.0, -1.0], [0.5, -3.0, 1.5]]
    alpha = torch.tensor(values, requires_grad=True)
    sig = [[1 / (1 + math.exp(-a)) for a in row] for row in values]
    n = 6
    expected = -10.0 * sum((s - 0.5) ** 2 for row in sig for s in row) / n
    loss = ZeroOne().loss(ctx({"cell": alpha}, 0.5))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dα of −w/N (σ − 0.5)² = −w/N · 2(σ − 0.5) · σ(1 − σ): pushes σ away from 0.5
    grad = [[-10.0 / n * 2 * (s - 0.5) * s * (1 - s) for s in row] for row in sig]
    torch.testing.assert_close(alpha.grad, torch.tensor(grad))
    assert alpha.grad[0, 0] == 0 and alpha.grad[0, 1] < 0 and alpha.grad[0, 2] > 0


def test_sigmoid_relaxation_weights_are_independent() -> None:
    relax = Sigmoid()
    alpha = relax.init_alpha((3, 4))
    assert torch.equal(alpha, torch.zeros(3, 4))  # FairDARTS starts every weight at 0.5
    alpha = torch.tensor([[5.0, 5.0, -5.0, 0.0]])
    torch.testing.assert_close(relax.weights(alpha, "cell"), torch.sigmoid(alpha))
    assert float(relax.weights(alpha, "cell").sum()) > 1.5  # no competition: no normalization


def _darts_weights(space, rows: dict[int, list[float]]) -> dict[str, torch.Tensor]:
    """Per-edge op weights: row -> the weights of the first len(list) ops, 0 elsewhere."""
    out = {}
    for key, spec in space.arch_specs().items():
        w = torch.zeros(spec.shape)
        for r, vals in rows.items():
            w[r, : len(vals)] = torch.tensor(vals)
        out[key] = w
    return out


def test_threshold_derivation_on_the_darts_space() -> None:
    space = get_space(SpaceConfig(name="darts", exclude_ops=["none"]))
    ops = space.ops  # max_pool, avg_pool, skip, sep3, sep5, dil3, dil5
    # edges: node 2 <- rows 0, 1; node 3 <- 2, 3, 4; node 4 <- 5..8; node 5 <- 9..13
    rows = {
        0: [0.9, 0.1],  # node 2: both above 0.85: both kept
        1: [0.0, 0.0, 0.95],
        2: [0.0, 0.0, 0.0, 0.99],  # node 3: one above: only that edge
        3: [0.5],
        4: [0.0, 0.6],
        5: [0.0, 0.0, 0.0, 0.0, 0.3],  # node 4: none above: its strongest edge (min_edges)
        6: [0.2],
        9: [0.9],  # node 5: three above 0.85: the two strongest
        10: [0.0, 0.0, 0.0, 0.0, 0.0, 0.97],
        12: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.95],
    }
    g = Threshold().derive_weights(space, _darts_weights(space, rows))
    expected = [
        (ops[0], 0, 2),
        (ops[2], 1, 2),
        (ops[3], 0, 3),
        (ops[4], 0, 4),
        (ops[5], 1, 5),
        (ops[6], 3, 5),
    ]
    for cell in g.cells:
        assert [(e.op, e.src, e.dst) for e in cell.edges] == expected


def test_threshold_derivation_on_nb201_writes_none_for_dropped_edges() -> None:
    space = get_space(SpaceConfig(name="nb201", exclude_ops=["none"]))
    # ops: skip, conv1x1, conv3x3, avg_pool; edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3
    w = torch.tensor(
        [
            [0.1, 0.2, 0.3, 0.0],  # node 1: below the threshold, kept (its only input)
            [0.0, 0.0, 0.9, 0.0],  # node 2: 0->2 kept, 1->2 dropped
            [0.0, 0.8, 0.0, 0.0],
            [0.95, 0.0, 0.0, 0.0],  # node 3: 0->3 and 2->3 kept, 1->3 dropped
            [0.0, 0.0, 0.0, 0.5],
            [0.0, 0.0, 0.0, 0.9],
        ]
    )
    g = Threshold().derive_weights(space, {"cell": w})
    from diffnas.spaces.nb201 import to_nb201_string

    assert to_nb201_string(g) == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    )
    with pytest.raises(ConfigError, match="min_edges"):
        Threshold.Params(min_edges=-1)


def test_threshold_min_edges_0_drops_inputless_nodes_as_fairdarts() -> None:
    space = get_space(SpaceConfig(name="darts", exclude_ops=["none"]))
    ops = space.ops
    derive = Threshold(Threshold.Params(min_edges=0)).derive_weights
    # the rows of the test above: node 4 has no input above 0.85 and goes; node 5 becomes 4
    rows = {
        0: [0.9, 0.1],
        1: [0.0, 0.0, 0.95],
        2: [0.0, 0.0, 0.0, 0.99],
        3: [0.5],
        4: [0.0, 0.6],
        5: [0.0, 0.0, 0.0, 0.0, 0.3],
        6: [0.2],
        9: [0.9],
        10: [0.0, 0.0, 0.0, 0.0, 0.0, 0.97],
        12: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.95],
    }
    g = derive(space, _darts_weights(space, rows))
    want = [(ops[0], 0, 2), (ops[2], 1, 2), (ops[3], 0, 3), (ops[5], 1, 4), (ops[6], 3, 4)]
    for cell in g.cells:
        assert [(e.op, e.src, e.dst) for e in cell.edges] == want
        assert cell.concat == (2, 3, 4)
    # node 2 has no input; node 3's only one comes from node 2: both go; 4, 5 become 2, 3
    rows = {0: [0.3], 1: [0.2], 4: [0.9], 5: [0.95], 13: [0.9]}
    g = derive(space, _darts_weights(space, rows))
    assert [(e.op, e.src, e.dst) for e in g.cells[0].edges] == [(ops[0], 0, 2), (ops[0], 2, 3)]
    assert g.cells[0].concat == (2, 3)
    net = space.build_network(g, num_classes=10, in_channels=3, channels=4, layers=3)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    # nothing above the threshold: the first node keeps its strongest edge
    g = derive(space, _darts_weights(space, {0: [0.5], 1: [0.0, 0.6]}))
    assert [(e.op, e.src, e.dst) for e in g.cells[0].edges] == [(ops[1], 1, 2)]
    assert g.cells[0].concat == (2,)


# --------------------------------------------------------------------------- cost
def test_cost_regularizer_value_is_exact_and_moves_alpha_to_cheaper_ops() -> None:
    s = Searcher(tiny_config("nb201", epochs=1, **{"search.regularizers": "[{name: cost}]"}))
    reg = s.regularizers[0]
    assert isinstance(reg, Cost)
    ops = s.space.ops  # none, skip, conv1x1, conv3x3, avg_pool; cells at C = 4, 8, 16
    conv1 = sum(c * c + 2 * c for c in (4, 8, 16))  # parameters summed over the 3 cells
    conv3 = sum(9 * c * c + 2 * c for c in (4, 8, 16))
    table = torch.zeros(6, len(ops))
    table[:, ops.index("nor_conv_1x1")] = conv1
    table[:, ops.index("nor_conv_3x3")] = conv3
    torch.testing.assert_close(reg.tables["cell"], table)
    assert reg.scale == 6 * conv3  # the costliest architecture: conv3x3 everywhere

    alpha = torch.zeros(6, len(ops), requires_grad=True)
    opt = torch.optim.SGD([alpha], lr=1.0)
    values = []
    for _ in range(20):  # gradient descent on the regularizer alone
        w = torch.softmax(alpha, -1)
        loss = reg.loss(ctx({"cell": alpha}, 0.0, MixWeights({"cell": w})))
        values.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    uniform = 0.1 * 6 * (conv1 + conv3) / len(ops) / (6 * conv3)
    assert values[0] == pytest.approx(uniform, rel=1e-5)
    assert all(b < a for a, b in itertools.pairwise(values))
    a = alpha.detach()
    free = [ops.index(o) for o in ("none", "skip_connect", "avg_pool_3x3")]
    # the costlier the op, the further its α falls; parameter-free ops gain
    assert bool((a[:, ops.index("nor_conv_3x3")] < a[:, ops.index("nor_conv_1x1")]).all())
    assert bool((a[:, ops.index("nor_conv_1x1")] < a[:, free].min(dim=1).values).all())
    assert set(a.argmax(dim=1).tolist()) <= set(free)
    with pytest.raises(ConfigError, match="metric"):
        Cost.Params(metric="flops")
