"""SDARTS (regularizers sdarts_rs, sdarts_adv): the weight step on perturbed op weights,
checked against computations written out here (float64, tiny nb201 supernet)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from diffnas.config import load_config
from diffnas.errors import ConfigError
from diffnas.regularizers.sdarts import simplex_clip
from diffnas.search import Searcher
from diffnas.supernet.mixed import MixWeights

TINY = [
    "space.name=nb201",
    "space.channels=4",
    "space.layers=1",
    "data.dataset=digits",
    "data.subset=0.03",
    "data.batch_size=8",
    "log.progress=false",
    "threads=1",
    "search.grad_clip=0",  # the gradient after the weight step is then the raw one
]


def _searcher(
    reg: str, *extra: str, n: int = 4
) -> tuple[Searcher, tuple[torch.Tensor, torch.Tensor]]:
    s = Searcher(load_config(["darts"], [*TINY, f"search.regularizers=[{reg}]", *extra]))
    s.model.double()
    s.arch.double()
    with torch.no_grad():  # α away from uniform, so that the edges differ
        for a in s.arch.alpha.values():
            a.copy_(torch.randn_like(a))
    x, y = next(iter(s.data.train.epoch(0)))
    return s, (x[:n].double(), y[:n])


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _hand_grads(
    s: Searcher, model: torch.nn.Module, ops: dict[str, torch.Tensor], batch: Any
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """∇w of CE of `model` on `batch` with op weights `ops`, computed here."""
    logits = model(batch[0], MixWeights(ops))
    loss = F.cross_entropy(logits, batch[1])
    params = [p for p in model.parameters()]
    return list(torch.autograd.grad(loss, params, allow_unused=False)), loss.detach()


def test_simplex_clip_is_the_official_clip_on_hand_rows() -> None:
    rows = torch.tensor(
        [[0.5, 1.5, -1.0], [-0.5, -0.2, -0.1], [0.2, 0.3, 0.5]], dtype=torch.float64
    )
    expected = torch.tensor(
        [[0.5 / 1.5, 1.0 / 1.5, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]], dtype=torch.float64
    )
    assert torch.allclose(simplex_clip(rows), expected, atol=1e-15)


def test_rs_weight_step_gradient_is_that_of_the_noisy_weights_and_alpha_is_kept() -> None:
    s, batch = _searcher("{name: sdarts_rs, epsilon: 0.3, epsilon_start: 0.03}")
    s.epoch = 25  # ε = 0.03 + 0.27 · 25/50 = 0.165
    before = copy.deepcopy(s.model)
    alpha = {k: a.detach().clone() for k, a in s.arch.alpha.items()}
    torch.manual_seed(7)
    s.weight_step(batch)
    got = _grads(s.model)
    for k, a in s.arch.alpha.items():
        assert torch.equal(a, alpha[k]), "α must be unchanged by the weight step"
    assert s.regularizers[0].metrics()["epsilon"] == pytest.approx(0.165)

    # by hand: the same uniform draw (per α key, in order) added to softmax(α), then each
    # row clamped to [0, 1] and divided by its sum (no row is all zero here)
    torch.manual_seed(7)
    eps = 0.03 + 0.27 * 25 / 50
    ops = {}
    for k, a in alpha.items():
        noise = torch.empty_like(a).uniform_(-eps, eps)
        assert float(noise.abs().max()) <= eps and float(noise.abs().max()) > 0.5 * eps
        q = (torch.softmax(a, dim=-1) + noise).clamp(0.0, 1.0)
        ops[k] = q / q.sum(dim=-1, keepdim=True)
    want, _ = _hand_grads(s, copy.deepcopy(before), ops, batch)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-12, rtol=1e-9)


def test_rs_noise_stays_within_epsilon_and_epsilon_follows_the_schedule() -> None:
    s, batch = _searcher("{name: sdarts_rs, project: none}", "search.epochs=50")
    part = s.regularizers[0]
    # official: ε_e = 0.03 + (0.3 − 0.03) · e / epochs, e from 0, set once per epoch
    for e, eps in ((0, 0.03), (10, 0.084), (49, 0.2946)):
        assert part.epsilon_at(e, 50) == pytest.approx(eps, abs=1e-12)
    s.epoch = 49
    base = s.relaxation.mix(s.arch)
    deltas = torch.cat(
        [
            (part.weight_mix(s, base, batch).ops[k] - w.detach()).flatten()
            for _ in range(20)
            for k, w in base.ops.items()
        ]
    )
    assert float(deltas.abs().max()) <= 0.2946 + 1e-12
    assert float(deltas.max()) > 0.28 and float(deltas.min()) < -0.28  # fills the interval


def test_adv_one_pgd_step_is_the_sign_of_the_finite_difference_gradient() -> None:
    # one step, no random start, no projection: p = base + clamp(2ε · sign(∇p L), ±ε)
    spec = "{name: sdarts_adv, steps: 1, random_start: false, project: none, epsilon_schedule: constant, epsilon: 0.05}"
    s, batch = _searcher(spec, n=2)
    base = s.relaxation.mix(s.arch)
    got = s.regularizers[0].weight_mix(s, base, batch).ops
    (key,) = base.ops
    w0 = base.ops[key].detach()

    def loss(w: torch.Tensor) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(s.model(batch[0], MixWeights({key: w})), batch[1]))

    # every weight moves by exactly ε, but `none`'s (never computed: no gradient)
    none = s.model.arch_specs[key].ops.index("none")
    moved = (got[key] - w0).abs()
    assert torch.allclose(moved[:, none], torch.zeros_like(moved[:, none]), atol=0)
    others = [o for o in range(w0.shape[1]) if o != none]
    assert torch.allclose(moved[:, others], torch.full_like(moved[:, others], 0.05), atol=1e-12)
    # the direction: the sign of the central finite difference, on one entry per (edge, op)
    # column pair along a diagonal (6 edges x 5 ops: 6 entries) and the `none` of edge 0
    h = 1e-6
    entries = [(e, e % w0.shape[1]) for e in range(w0.shape[0])] + [(0, none)]
    for e in entries:
        up, down = w0.clone(), w0.clone()
        up[e] += h
        down[e] -= h
        g = (loss(up) - loss(down)) / (2 * h)
        step = 0.0 if abs(g) < 1e-9 else (0.05 if g > 0 else -0.05)
        assert float(got[key][e] - w0[e]) == pytest.approx(step, abs=1e-12), e
    assert loss(got[key]) > loss(w0)


def test_adv_attack_raises_the_loss_within_the_ball_in_the_configured_steps() -> None:
    s, batch = _searcher(
        "{name: sdarts_adv, steps: 3, epsilon_schedule: constant, epsilon: 0.1, project: none}"
    )
    calls = []
    forward = s.forward

    def counting(*args: Any, **kw: Any) -> torch.Tensor:
        calls.append(1)
        return forward(*args, **kw)

    s.forward = counting  # type: ignore[method-assign]
    base = s.relaxation.mix(s.arch)
    alpha = {k: a.detach().clone() for k, a in s.arch.alpha.items()}
    adv = s.regularizers[0].weight_mix(s, base, batch)
    assert len(calls) == 3 + 2  # the loss before, one per PGD step, the loss after
    for k, w in base.ops.items():
        d = adv.ops[k] - w.detach()
        assert float(d.abs().max()) <= 0.1 + 1e-12  # projected onto the ε-ball
        assert float(d.abs().max()) > 0.09
        assert torch.equal(s.arch.alpha[k], alpha[k])

    def ce(mix: MixWeights) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(s.model(batch[0], mix), batch[1]))

    assert ce(adv) > ce(base)
    # with the official projection (clip) the weights stay a distribution per edge
    s.regularizers[0].params.project = "simplex"
    s.regularizers[0].params.steps = 1
    sim = s.regularizers[0].weight_mix(s, base, batch)
    for w in sim.ops.values():
        assert bool((w >= 0).all()) and torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))
    assert ce(sim) > ce(base)


def test_adv_then_weight_step_leaves_alpha_and_uses_the_attacked_weights() -> None:
    s, batch = _searcher("{name: sdarts_adv, steps: 2}")
    alpha = {k: a.detach().clone() for k, a in s.arch.alpha.items()}
    used: list[MixWeights] = []
    forward = s.forward

    def recording(x: torch.Tensor, mix: MixWeights, params: Any = None) -> torch.Tensor:
        used.append(mix)
        return forward(x, mix, params)

    s.forward = recording  # type: ignore[method-assign]
    s.weight_step(batch)
    assert len(used) == 2 + 2 + 1  # attack (before, 2 steps, after), then the weight step
    final = used[-1].ops
    soft = {k: torch.softmax(a, -1) for k, a in alpha.items()}
    kept = s.regularizers[0].metrics()["kept"]
    for k in final:
        assert torch.equal(s.arch.alpha[k], alpha[k])
        assert torch.allclose(final[k], soft[k]) != kept
        assert not final[k].requires_grad


@pytest.mark.parametrize(
    "spec,message",
    [
        ("{name: sdarts_rs, epsilon: -1}", "epsilon"),
        ("{name: sdarts_rs, epsilon_schedule: cosine}", "epsilon_schedule"),
        ("{name: sdarts_adv, steps: 0}", "steps"),
        ("{name: sdarts_adv, project: l2}", "project"),
    ],
)
def test_bad_settings_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(["sdarts_rs"], [f"search.regularizers=[{spec}]"])


def test_nb201_layer_sets_the_official_nb201_search() -> None:
    c = load_config(["sdarts_adv", "examples/sdarts_nb201"], [])
    assert (c.space.name, c.space.exclude_ops, c.space.layers, c.search.epochs) == (
        "nb201",
        [],
        5,
        100,
    )
    assert c.search.regularizers[0].name == "sdarts_adv" and c.search.schedule.name == "alternate"
    assert (c.search.w_weight_decay, c.search.w_nesterov, c.search.w_lr_epoch_offset) == (
        3e-4,
        False,
        1,
    )
