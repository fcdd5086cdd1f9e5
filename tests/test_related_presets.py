"""The related-method presets run end to end, alone and combined with other parts."""

from __future__ import annotations

import pytest

import diffnas
from diffnas.config import load_config
from diffnas.nasbench import nb201

from .conftest import tiny_config

PRESETS = ["pc_darts", "gdas", "beta_darts", "fair_darts", "cost_aware"]
TINY = [
    "space.name=nb201",
    "space.channels=4",
    "space.layers=1",
    "data.subset=0.3",
    "data.batch_size=32",
    "search.epochs=2",
    "search.warmup_epochs=1",
    "log.progress=false",
    "threads=1",
]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_searches_nb201_with_the_lookup(preset: str, tmp_path) -> None:
    cfg = load_config([preset], TINY)
    assert cfg.method == preset
    result = diffnas.search(cfg, out=tmp_path / "run")
    last = result.history[-1]
    assert result.history[0]["arch_steps"] == 0  # warm-up epoch: weights only
    assert last["arch_steps"] > 0
    if nb201.available():
        assert 10.0 <= last["lookup_acc"] <= 95.0


def test_related_parts_compose_on_per_cell_darts(tmp_path) -> None:
    """GDAS sampling + PC-DARTS channels and β + per-cell α + beta decay + a cost term."""
    cfg = tiny_config(
        "darts",
        epochs=1,
        **{
            "space.cells": "NRN",
            "search.relaxation": "gumbel",
            "supernet.partial_channels": "2",
            "supernet.edge_norm": "true",
            "search.regularizers": "[beta_decay, {name: cost, metric: macs}]",
        },
    )
    result = diffnas.search(cfg, out=tmp_path / "run")
    assert [c.type for c in result.genotype.cells] == ["normal", "reduce", "normal"]
    last = result.history[-1]
    # τ is set per epoch as XAutoDL does: the one epoch of this search is epoch 0, τ = tau_max
    assert (
        last["cost/expected_macs"] > 0
        and last["beta_decay/lambda"] > 0
        and last["gumbel/tau"] == 10.0
    )
