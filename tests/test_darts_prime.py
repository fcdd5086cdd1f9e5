"""DARTS-PRIME's parts: CRB relaxation, informed / every_k schedules, prox / admm regularizers."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

import diffnas
from diffnas.config import SpaceConfig, load_config
from diffnas.errors import ConfigError, GenotypeError
from diffnas.parts import RegContext
from diffnas.regularizers.admm import ADMM
from diffnas.regularizers.prox import Proximity
from diffnas.relaxations.crb import ClampedReLU
from diffnas.run import RunDir
from diffnas.schedules.every_k import EveryK
from diffnas.schedules.informed import Informed
from diffnas.search import Searcher
from diffnas.spaces import get_space
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype
from diffnas.spaces.zoo import get as zoo_get
from diffnas.supernet.base import Architecture
from diffnas.supernet.dag import SearchDAG
from diffnas.supernet.mixed import MixWeights

from .conftest import Kill, tiny_overrides

NB201_NO_NONE = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def prime_config(space: str = "nb201", epochs: int = 2, **extra: str) -> Any:
    """The darts_prime_crb preset (CRB, node BN, no `none`) on the budget of conftest's
    tiny_config."""
    overrides = tiny_overrides(space, epochs)
    return load_config(["darts_prime_crb"], overrides + [f"{k}={v}" for k, v in extra.items()])


def nb201_space() -> Any:
    return get_space(SpaceConfig(name="nb201", exclude_ops=["none"]))


# =========================================================================== CRB
def test_crb_weights_clamp_and_gradient_passes_on_the_closed_interval() -> None:
    crb = ClampedReLU()
    alpha = torch.tensor([[-0.5, 0.0, 0.3, 1.0, 1.7]], requires_grad=True)
    w = crb.weights(alpha, "cell")
    assert w.tolist() == [[0.0, 0.0, pytest.approx(0.3), 1.0, 1.0]]
    w.sum().backward()
    # the public code's torch.clamp: gradient 1 on [0, 1] (both ends included), 0 outside
    assert alpha.grad.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0]]


def test_crb_init_is_one_over_ops_plus_small_noise() -> None:
    a = ClampedReLU().init_alpha((2000, 7))
    assert abs(float(a.mean()) - 1 / 7) < 1e-5
    assert 0.9e-4 < float(a.std()) < 1.1e-4


def test_crb_refuses_an_op_set_with_none() -> None:
    specs = get_space("nb201").arch_specs()  # `none` not excluded
    searcher = SimpleNamespace(arch=Architecture(specs, ClampedReLU().init_alpha))
    with pytest.raises(ConfigError, match=r"'none'.*space\.exclude_ops: \[none\]"):
        ClampedReLU().setup(searcher)  # type: ignore[arg-type]


def test_pruned_ops_stay_pruned_and_zero_through_later_steps() -> None:
    cfg = prime_config("nb201", 1, **{"search.arch_lr": "0.05"})
    s = Searcher(cfg)
    crb = s.relaxation
    alpha = s.arch.alpha["cell"]
    with torch.no_grad():
        alpha[0, 1] = -0.01  # as if a step had pushed it below 0
        alpha[3, 2] = 0.0
    crb.after_arch_step(s.arch)
    assert alpha[0, 1] == 0 and alpha[3, 2] == 0
    assert crb.op_mask("cell")[0, 1].item() is False and crb.metrics()["pruned_ops"] == 2
    # an optimizer moving a pruned α back up does not revive it
    with torch.no_grad():
        alpha[0, 1] = 0.4
    crb.after_arch_step(s.arch)
    assert alpha[0, 1] == 0
    # real architecture steps (large lr, Adam momentum) keep them at 0 and masked
    train, val = s.data.train.epoch(0), s.val_stream
    for _ in range(4):
        s.arch_step(next(iter(train)), val.next())
        assert alpha[0, 1] == 0 and alpha[3, 2] == 0
        assert not crb.op_mask("cell")[0, 1] and not crb.op_mask("cell")[3, 2]
    assert bool((alpha[crb.op_mask("cell")] > 0).all())  # everything alive is positive


class Counted(nn.Module):
    """An op that counts its forward calls (a stand-in for any candidate op)."""

    calls: ClassVar[dict[str, int]] = {}

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Counted.calls[self.name] = Counted.calls.get(self.name, 0) + 1
        return x * 2.0


def test_masked_op_is_never_called_in_the_search_cell() -> None:
    edges = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    dag = SearchDAG(1, 4, edges, list(NB201_NO_NONE), 4, lambda s: 1, lambda n, c, s: Counted(n))
    arch = Architecture(nb201_space().arch_specs(), ClampedReLU().init_alpha)
    crb = ClampedReLU()
    crb.alive = {"cell": torch.ones(6, 4, dtype=torch.bool)}
    with torch.no_grad():
        arch.alpha["cell"][:, 2] = -1.0  # nor_conv_3x3 pruned on every edge
        arch.alpha["cell"][4, 0] = 0.0  # skip_connect pruned on edge 1->3
    crb.prune(arch)
    mix = crb.mix(arch)
    Counted.calls = {}
    dag([torch.randn(2, 4, 5, 5)], mix.ops["cell"], mix.active_for("cell"))
    assert Counted.calls == {"skip_connect": 5, "nor_conv_1x1": 6, "avg_pool_3x3": 6}


def test_supernet_skips_pruned_ops_end_to_end() -> None:
    s = Searcher(prime_config("nb201", 1))
    with torch.no_grad():
        s.arch.alpha["cell"][1, 3] = -1.0
        s.arch.alpha["cell"][5, :2] = -1.0
    s.relaxation.after_arch_step(s.arch)
    cells = [m for m in s.model.modules() if isinstance(m, SearchDAG)]
    for c in cells:
        c.start_capture()
    with torch.no_grad():
        s.model(next(iter(s.data.train.epoch(0)))[0], s.relaxation.mix(s.arch))
    for c in cells:
        computed = set(c.stop_capture())
        everything = {(e, o) for e in range(6) for o in range(4)}
        assert computed == everything - {(1, 3), (5, 0), (5, 1)}


def test_node_bn_normalizes_each_intermediate_node_without_parameters() -> None:
    edges = [(0, 1), (0, 2), (1, 2)]

    def make(bn: bool) -> SearchDAG:
        torch.manual_seed(0)
        return SearchDAG(
            1, 3, edges, ["skip_connect"], 3, lambda s: 1, lambda n, c, s: nn.Identity(), 1, bn
        )

    x = 3.0 + 2.0 * torch.randn(8, 3, 4, 4)
    w = torch.full((3, 1), 0.7)
    on, off = make(True), make(False)
    assert sum(p.numel() for p in on.parameters()) == 0  # no affine BN parameters
    nodes = on([x], w)
    for j in (1, 2):
        mean = nodes[j].mean(dim=(0, 2, 3))
        var = nodes[j].var(dim=(0, 2, 3), unbiased=False)
        assert torch.allclose(mean, torch.zeros(3), atol=1e-5)
        assert torch.allclose(var, torch.ones(3), atol=1e-3)
    raw = off([x], w)
    assert torch.allclose(raw[1], 0.7 * x)  # without node_bn: the plain weighted sum
    assert load_config(["darts_prime_crb"]).supernet.node_bn is True


# =========================================================================== schedules
def run_schedule(schedule: Any, fis: list[float]) -> tuple[list[bool], list[float], list[Any]]:
    """Drive a schedule like the search loop: decide, then report the weight step's FI."""
    steps, taus, ewmas = [], [], []
    for fi in fis:
        steps.append(schedule.arch_step_due())
        taus.append(schedule.threshold)
        schedule.after_weight_step(fi)
        ewmas.append(schedule.fi_ewma)
    return steps, taus, ewmas


def test_informed_schedule_follows_the_rule_on_a_scripted_sequence() -> None:
    params = Informed.Params(f=2, multiplier=2.0, threshold=1.0, ewma=0.5)
    steps, taus, ewmas = run_schedule(Informed(params), [4, 2, 1, 0, 1, 1, 3, 0, 5])
    # hand trace: step iff 0 < ewma < τ (ewma before this step's FI), then τ·2^-2, else τ·2;
    # the first FI seeds the EWMA; ewma = 0.5·FI + 0.5·ewma afterwards
    assert steps == [False, False, True, False, True, False, False, False, True]
    assert taus == [2.0, 4.0, 1.0, 2.0, 0.5, 1.0, 2.0, 4.0, 1.0]
    assert ewmas == [4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 2.0, 1.0, 3.0]


def test_informed_schedule_can_start_the_threshold_at_the_first_energy() -> None:
    params = Informed.Params(f=2, multiplier=2.0, threshold=None, ewma=0.5)
    steps, taus, ewmas = run_schedule(Informed(params), [4, 2, 6, 1])
    # τ unset (no step) until the first FI = 4; then 4 < 4 no -> 8; 3 < 8 step -> 2; 4.5 < 2 no
    assert steps == [False, False, True, False]
    assert taus == [None, 8.0, 2.0, 4.0]
    assert ewmas == [4.0, 3.0, 4.5, 2.75]


def test_informed_schedule_defaults_and_zero_energy() -> None:
    s = Informed()
    assert s.train_portion == pytest.approx(10 / 11)
    s.after_weight_step(0.5)
    assert s.arch_step_due() is True
    assert s.threshold == pytest.approx(1.05**-10) == pytest.approx(0.6139132535407591)
    z = Informed()
    steps, taus, _ = run_schedule(z, [0.0] * 5)  # FI_ewma = 0 is not "0 < FI_ewma"
    assert steps == [False] * 5 and taus[-1] == pytest.approx(1.05**5)
    with pytest.raises(ConfigError, match="multiplier must be > 1"):
        Informed(Informed.Params(multiplier=1.0))


def test_every_k_schedule_and_split() -> None:
    s = EveryK(EveryK.Params(k=3))
    # the public code: before the weight step of epoch step s when (s + 1) % k == 0; the
    # count restarts with each epoch (here 5 steps long)
    steps = [0, 1, 2, 3, 4, 0, 1]
    assert [s.arch_step_due(i) for i in steps] == [False, False, True, False, False, False, False]
    assert s.train_portion == 0.75
    assert s.metrics() == {"arch_step_ratio": round(1 / 7, 6)}


def test_loop_gives_the_schedule_the_unclipped_gradient_energy_and_its_split() -> None:
    s = Searcher(prime_config("nb201", 1, **{"search.grad_clip": "0"}))
    n_train, n_val = len(s.data.train.labels), len(s.data.val.labels)
    assert n_train / (n_train + n_val) == pytest.approx(10 / 11, abs=0.01)
    s.weight_step(next(iter(s.data.train.epoch(0))))
    energy = sum(float((p.grad**2).sum()) for p in s.model.parameters() if p.grad is not None)
    assert s.schedule.fi == pytest.approx(energy, rel=1e-5)


# =========================================================================== space one-hot
def test_one_hot_and_discretize_follow_the_standard_derivation() -> None:
    space = nb201_space()
    w = torch.tensor(
        [
            [0.1, 0.2, 0.9, 0.0],
            [0.5, 0.1, 0.0, 0.2],
            [0.0, 0.0, 0.0, 0.3],
            [0.2, 0.8, 0.1, 0.1],
            [0.3, 0.2, 0.1, 0.0],
            [0.0, 0.1, 0.6, 0.2],
        ]
    )
    expected = torch.zeros(6, 4)
    for row, col in enumerate([2, 0, 3, 1, 0, 2]):
        expected[row, col] = 1.0
    assert torch.equal(space.discretize({"cell": w})["cell"], expected)
    # darts: top-2 incoming edges per node, best op on each; a known genotype round-trips
    darts = get_space("darts")
    g = zoo_get("DARTS_V2")
    hot = darts.one_hot(g)
    assert set(hot) == {"normal", "reduce"}
    assert [int(hot[k].sum()) for k in hot] == [8, 8]
    assert all(float(hot[k].sum(dim=1).max()) == 1.0 for k in hot)
    again = darts.derive(hot)
    assert [set(c.edges) for c in again.cells] == [set(c.edges) for c in g.cells]
    bad = Genotype("nb201", (CellGenotype("normal", (Edge("none", 0, 1),)),))
    with pytest.raises(GenotypeError, match="'none' is not in this search's op set"):
        space.one_hot(bad)


# =========================================================================== regularizers
def hand_alpha() -> torch.Tensor:
    return torch.tensor(
        [
            [0.30, 0.10, 0.20, 0.05],
            [1.40, 0.20, 0.10, 0.00],  # above 1: clamped, no gradient there
            [0.05, 0.25, 0.35, 0.15],
            [0.10, 0.60, 0.20, 0.15],
            [0.00, 0.05, 0.50, 0.45],
            [0.40, 0.30, 0.10, 0.45],
        ]
    )


def reg_context(alpha: torch.Tensor, progress: float, searcher: Any) -> RegContext:
    w = torch.clamp(alpha, 0.0, 1.0)
    return RegContext(None, MixWeights({"cell": w}), torch.tensor(1.0), progress, searcher)  # type: ignore[arg-type]


def test_prox_value_and_gradient_match_the_formula() -> None:
    alpha = hand_alpha().requires_grad_(True)
    reg = Proximity(Proximity.Params(rho=0.1))
    # progress 0.3 before the 4th of 10 steps: t/T = 0.4, the current step counted as done
    # (the public code advances its clock before the step)
    searcher = SimpleNamespace(space=nb201_space(), total_steps=10)
    value = reg.loss(reg_context(alpha, 0.3, searcher))
    value.backward()
    a = torch.clamp(hand_alpha(), 0, 1)
    d = torch.zeros(6, 4)
    for row, col in enumerate([0, 0, 2, 1, 2, 3]):  # argmax per edge, by hand
        d[row, col] = 1.0
    norm = math.sqrt(float(((a - d) ** 2).sum()))
    assert value.item() == pytest.approx(0.4 * 0.05 * norm, rel=1e-6)  # the norm, not squared
    inside = ((hand_alpha() >= 0) & (hand_alpha() <= 1)).float()
    expected = 0.4 * 0.05 * (a - d) / norm * inside
    assert torch.allclose(alpha.grad, expected, atol=1e-7)
    assert reg.metrics()["value"] == pytest.approx(value.item())


def admm_fixture(every: int = 2) -> tuple[ADMM, Any, torch.Tensor]:
    space = nb201_space()
    alpha0 = hand_alpha()
    arch = Architecture(space.arch_specs(), lambda shape: alpha0.clone())
    crb = ClampedReLU()
    searcher = SimpleNamespace(space=space, arch=arch, relaxation=crb)
    crb.setup(searcher)  # type: ignore[arg-type]
    reg = ADMM(ADMM.Params(rho=0.1, every=every, decay=0.2))
    reg.setup(searcher)  # type: ignore[arg-type]
    return reg, searcher, alpha0


def test_admm_value_and_gradient_match_the_formula() -> None:
    reg, searcher, alpha0 = admm_fixture()
    alive = alpha0 > 0  # CRB pruned the α = 0 entries at setup
    assert torch.equal(searcher.relaxation.op_mask("cell"), alive)
    z = torch.zeros(6, 4)
    z[:, 1] = 1.0
    u = 0.1 * torch.arange(24, dtype=torch.float32).reshape(6, 4) - 1.0
    reg.Z, reg.U = {"cell": z}, {"cell": u}
    alpha = alpha0.clone().requires_grad_(True)
    value = reg.loss(reg_context(alpha, 0.0, searcher))
    value.backward()
    a = torch.clamp(alpha0, 0, 1)
    r = (a - z + u) * alive.float()
    norm = math.sqrt(float((r**2).sum()))
    assert value.item() == pytest.approx(0.05 * norm, rel=1e-6)
    inside = ((alpha0 >= 0) & (alpha0 <= 1)).float()
    assert torch.allclose(alpha.grad, 0.05 * r / norm * inside, atol=1e-7)


def test_admm_updates_z_and_u_every_k_architecture_steps() -> None:
    reg, searcher, alpha0 = admm_fixture(every=2)
    alive = (alpha0 > 0).float()
    u0 = torch.zeros(6, 4)
    u0[0, 3] = 0.5  # moves edge 0's pick from op 0 to op 3: Z uses a(α + U)
    u0[2, 2] = -0.3  # and edge 2's from op 2 to op 1
    reg.U = {"cell": u0.clone()}
    z_before = reg.Z["cell"].clone()
    reg.after_arch_step(searcher.arch)  # 1 step: nothing yet
    assert torch.equal(reg.Z["cell"], z_before) and torch.equal(reg.U["cell"], u0)
    reg.after_arch_step(searcher.arch)  # 2nd step: Z ← D(a(α + U)), U ← 0.2 U + α − Z
    z = torch.zeros(6, 4)
    for row, col in enumerate([3, 0, 1, 1, 2, 3]):  # argmax of clamp(α + U) by hand
        z[row, col] = 1.0
    assert torch.equal(reg.Z["cell"], z)
    expected_u = (0.2 * u0 + alpha0 - z) * alive
    assert torch.allclose(reg.U["cell"], expected_u)
    assert reg.metrics()["updates"] == 1


def test_admm_defaults_are_the_public_codes() -> None:
    # K = 9 (--admm_freq 10: update when count + 1 reaches 10), decay 1.0 (the model's own
    # zuewma default; the script's --zuewma is never passed), Z starting at the raw α
    p = ADMM.Params()
    assert (p.every, p.decay, p.z_init) == (9, 1.0, "alpha")
    space = nb201_space()
    alpha0 = torch.tensor([[0.3, -0.2, 1.5, 0.1]]).repeat(6, 1)
    arch = Architecture(space.arch_specs(), lambda shape: alpha0.clone())
    relax = SimpleNamespace(weights=lambda a, k: torch.softmax(a, -1), op_mask=lambda k: None)
    searcher = SimpleNamespace(space=space, arch=arch, relaxation=relax)
    for z_init, z0 in (("alpha", alpha0), ("weights", torch.softmax(alpha0, -1))):
        reg = ADMM(ADMM.Params(z_init=z_init))
        reg.setup(searcher)  # type: ignore[arg-type]
        assert torch.allclose(reg.Z["cell"], z0) and not reg.U["cell"].any()
    with pytest.raises(ConfigError, match="z_init must be one of alpha, weights"):
        ADMM(ADMM.Params(z_init="zero"))


# =========================================================================== end to end
def test_darts_prime_runs_on_the_darts_space() -> None:
    extra = {
        "search.regularizers": "[{name: prox}, {name: admm, every: 2}]",
        "search.schedule": "{name: informed, threshold: 100}",  # α steps from the start
        "data.subset": "0.15",
    }
    result = diffnas.search(prime_config("darts", 1, **extra))
    last = result.history[-1]
    keys = ("informed/threshold", "informed/fi_ewma", "informed/arch_step_ratio")
    keys += ("crb/pruned_ops", "prox/value", "admm/dual")
    for key in keys:
        assert last[key] is not None, key
    assert last["arch_steps"] >= 2 and last["admm/updates"] >= 1
    ops = {e.op for c in result.genotype.cells for e in c.edges}
    assert "none" not in ops


def test_resume_mid_run_reproduces_threshold_z_u_and_masks(tmp_path) -> None:
    cfg = prime_config(
        "nb201",
        2,
        **{
            "search.arch_lr": "0.1",  # large enough to prune within the run
            "search.schedule": "{name: informed, f: 2, threshold: 100}",
            "search.regularizers": "[{name: prox}, {name: admm, every: 2}]",
            "checkpoint.every_steps": "3",
            "log.lookup": "false",
        },
    )
    diffnas.search(cfg, out=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        diffnas.search(cfg, out=tmp_path / "b", callbacks=[Kill(after_step=8)])
    mid = RunDir(tmp_path / "b").load_checkpoint()
    assert (mid["epoch"], mid["step"]) == (0, 6)
    # the resumed searcher holds exactly the checkpoint's part states
    s = Searcher(RunDir(tmp_path / "b").load_config())
    s.load_state_dict(mid)
    crb_state, sched_state, _, _, admm_state, _ = mid["parts"]
    assert torch.equal(s.relaxation.alive["cell"], crb_state["alive"]["cell"])
    assert s.schedule.threshold == sched_state["threshold"] != 1.0
    assert torch.equal(s.regularizers[1].Z["cell"], admm_state["Z"]["cell"])
    diffnas.resume(tmp_path / "b")
    a = RunDir(tmp_path / "a").load_checkpoint()
    b = RunDir(tmp_path / "b").load_checkpoint()
    assert torch.equal(a["arch"]["alpha.cell"], b["arch"]["alpha.cell"])
    pa, pb = a["parts"], b["parts"]
    assert torch.equal(pa[0]["alive"]["cell"], pb[0]["alive"]["cell"])
    assert pa[0]["alive"]["cell"].sum() < 24  # some ops were pruned
    assert pa[1] == pb[1]  # threshold, FI_ewma, counters
    assert admm_state["updates"] >= 1
    for key in ("Z", "U"):
        assert torch.equal(pa[4][key]["cell"], pb[4][key]["cell"])
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(RunDir(tmp_path / "a").read_metrics()) == strip(
        RunDir(tmp_path / "b").read_metrics()
    )


def test_space_switch_keeps_exclude_ops_and_resets_sizes() -> None:
    cfg = load_config(["darts_prime_crb"], ["space.name=nb201"])
    assert cfg.space.exclude_ops == ["none"] and cfg.space.layers is None
    assert get_space(cfg.space).layers == 5
    back = load_config(["darts_nb201"], ["space.name=darts"])
    assert back.space.layers is None and get_space(back.space).layers == 8


def test_cli_names_the_fix_when_crb_meets_none(tmp_path, capsys) -> None:
    from diffnas.cli import main

    argv = ["search", "--config", "darts_nb201", "--set", "search.relaxation=crb"]
    argv += ["--set", "space.channels=4", "--set", "space.layers=1", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "space.exclude_ops: [none]" in capsys.readouterr().err  # brackets survive printing
