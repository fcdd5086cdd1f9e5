"""diffnas's NB201-protocol presets take XAutoDL's search step (golden fixtures).

tests/golden/<preset>.json hold what the authors' code (D-X-Y/AutoDL-Projects) computed for
two search steps from the inputs `benchmarks/parity/xautodl_cases.py` makes from a seed,
written by `benchmarks/parity/xautodl_ref.py` (the command and commit are in each file).
Here only diffnas runs, on the same inputs, and must agree to 1e-10 in float64. The options
that restore diffnas's earlier behaviour must each move the step away from the official one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from benchmarks.parity.xautodl_cases import (
    DISCONNECTED_CELL,
    TOLERANCE,
    Case,
    compare,
    diffnas_step,
    network_logits,
    summarize,
)

GOLDEN = Path(__file__).parent / "golden"


def load(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def step_diffs(fixture: dict, overrides: list[str] | None = None) -> dict[str, float]:
    case = Case.from_json(fixture["case"])
    if overrides:
        case = dataclasses.replace(case, overrides=[*case.overrides, *overrides])
    result, inputs, _ = diffnas_step(case)
    got = summarize(case.seed, result, inputs["weights"])
    return compare(got, fixture["official"])


@pytest.mark.parametrize("name", ["darts_nb201", "gdas_nb201", "gdas_darts"])
def test_search_step_matches_xautodl(name: str) -> None:
    fixture = load(name)
    assert fixture["reference"]["repository"] == "D-X-Y/AutoDL-Projects"
    diffs = step_diffs(fixture)
    assert set(diffs) >= {"alpha_grad", "alpha", "weights", "buffers"}
    assert all(v <= TOLERANCE for v in diffs.values()), diffs


@pytest.mark.parametrize(
    "overrides",
    [
        # diffnas's earlier GDAS estimator: unsampled ops add nothing
        ["search.relaxation.unsampled=skip"],
        # the DARTS code's order: the α step before the weight step
        ["search.schedule.order=arch_first"],
        # clipping the weights' gradient without α's (the official clips both: norm 6.6 > 5)
        ["search.grad_clip_alpha=false"],
        # τ moving every step: at the first step of epoch 3 of 10, 7.03 instead of 6.7
        ["search.relaxation.tau_schedule=step"],
    ],
)
def test_each_option_restoring_the_old_step_departs_from_xautodl(overrides: list[str]) -> None:
    diffs = step_diffs(load("gdas_nb201"), overrides)
    assert max(diffs.values()) > 1e-6, diffs


def test_nb201_discrete_network_matches_xautodl_for_a_disconnected_node() -> None:
    fixture = load("nb201_network")
    assert fixture["cell"] == DISCONNECTED_CELL  # node 1 receives only `none`
    sizes = fixture["sizes"]
    got = network_logits(DISCONNECTED_CELL, sizes["seed"], sizes["size"], sizes["batch"])
    diffs = compare(
        {k: {"logits": v} for k, v in got.items()},
        {k: {"logits": v} for k, v in fixture["official"].items()},
    )
    assert all(v <= TOLERANCE for v in diffs.values()), diffs


def test_the_new_options_refuse_bad_values() -> None:
    from diffnas.config import load_config
    from diffnas.errors import ConfigError

    with pytest.raises(ConfigError, match="w_nesterov needs search.w_momentum > 0"):
        load_config(["darts_nb201"], ["search.w_momentum=0"])
    with pytest.raises(ConfigError, match="order must be one of arch_first, weight_first"):
        load_config(["darts"], ["search.schedule={name: alternate, order: alpha_first}"])
    cfg = load_config(["darts"])
    assert cfg.search.schedule.params == {} and not cfg.search.grad_clip_alpha  # DARTS's code
