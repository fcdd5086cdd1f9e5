"""Latency predictor: collect on tiny networks, fit, beat the mean, steer a search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import diffnas
from diffnas.bench.latency import LatencyDataset, LatencyPredictor, collect, encode_genotype, fit
from diffnas.cli import main
from diffnas.config import SpaceConfig
from diffnas.errors import ConfigError, DatasetError
from diffnas.parts import RegContext
from diffnas.search import Searcher
from diffnas.spaces import get_space, zoo
from diffnas.supernet.mixed import MixWeights

from .conftest import tiny_config

TINY = ["--channels", "4", "--layers", "1", "--resolution", "8", "--batch-size", "4"]


@pytest.fixture(scope="module")
def latency_files(tmp_path_factory) -> tuple[Path, Path]:
    """40 nb201 architectures timed on this machine (tiny nets), and a predictor fitted on them."""
    d = tmp_path_factory.mktemp("latency")
    data, predictor = d / "latency.json", d / "latency.pt"
    args = ["latency", "collect", "--space", "nb201", "-n", "40", "-o", str(data), *TINY]
    assert main([*args, "--repeats", "7", "--warmup", "2", "--threads", "1"]) == 0
    assert main(["latency", "fit", str(data), "-o", str(predictor), "--steps", "300"]) == 0
    return data, predictor


def test_collect_writes_distinct_one_hot_architectures(latency_files) -> None:
    ds = LatencyDataset.load(latency_files[0])
    assert len(ds.records) == 40
    assert len({json.dumps(r.genotype, sort_keys=True) for r in ds.records}) == 40
    assert ds.meta["layout"]["cell"]["ops"] == list(get_space("nb201").ops)
    assert ds.meta["input"] == [4, 3, 8, 8] and ds.meta["statistic"] == "median"
    for r in ds.records:
        enc = torch.tensor(r.encoding).view(6, 5)
        assert torch.equal(enc.sum(dim=1), torch.ones(6))  # one op per edge
        assert len(r.runs_ms) == 7 and r.latency_ms == pytest.approx(sorted(r.runs_ms)[3], abs=1e-3)


def test_predictor_beats_predicting_the_mean_on_held_out_architectures(latency_files) -> None:
    # The measured latencies of these tiny nets are sub-millisecond and at the mercy of the
    # machine's load, so the fit is checked on the collected architectures with latencies
    # that have a known structure: a seeded cost per (edge, op) plus 5 % noise. An MLP that
    # learns must beat predicting the training mean on held-out architectures.
    ds = LatencyDataset.load(latency_files[0])
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(len(ds.records[0].encoding), generator=gen, dtype=torch.float64)
    for r in ds.records:
        exact = 1.0 + float(torch.tensor(r.encoding, dtype=torch.float64) @ cost)
        r.latency_ms = exact * (1.0 + 0.05 * float(torch.randn(1, generator=gen)))
    mlp = mean = 0.0
    for seed in range(3):  # three random held-out splits of 10 architectures
        _, report = fit(ds, holdout=0.25, steps=300, seed=seed)
        assert report.n_test == 10 and report.n_train == 30
        mlp += report.mlp_rel_error
        mean += report.mean_rel_error
    assert mlp < mean


def test_latency_regularizer_lowers_predicted_latency_and_runs_in_a_search(
    latency_files, tmp_path
) -> None:
    predictor = str(latency_files[1])
    reg_spec = f"[{{name: latency, predictor: '{predictor}', weight: 1.0}}]"
    cfg = tiny_config("nb201", epochs=1, **{"search.regularizers": reg_spec})
    s = Searcher(cfg)
    reg = s.regularizers[0]
    alpha = torch.zeros(6, 5, requires_grad=True)
    opt = torch.optim.SGD([alpha], lr=0.5)
    predicted = []
    for _ in range(10):  # gradient descent on the regularizer alone
        mix = MixWeights({"cell": torch.softmax(alpha, -1)})
        loss = reg.loss(RegContext(s.arch, mix, torch.tensor(1.0), 0.0, s))
        predicted.append(reg.metrics()["predicted_ms"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert alpha.grad is not None and bool((alpha.grad != 0).any())
    assert predicted[-1] < predicted[0]

    result = diffnas.search(cfg, out=tmp_path / "run")
    assert result.history[-1]["latency/predicted_ms"] > 0

    # a predictor fitted for other ops is refused, naming the mismatch
    other = tiny_config(
        "nb201", epochs=1, **{"search.regularizers": reg_spec, "space.exclude_ops": "[none]"}
    )
    with pytest.raises(ConfigError, match="ops"):
        Searcher(other)


def test_encoding_of_a_darts_genotype_marks_dropped_edges_none() -> None:
    space = get_space(SpaceConfig(name="darts"))
    enc = encode_genotype(space, zoo.get("DARTS_V2"))
    none = space.ops.index("none")
    for key in ("normal", "reduce"):
        assert torch.equal(enc[key].sum(dim=1), torch.ones(14))
        assert int((enc[key][:, none] == 0).sum()) == 8  # 2 inputs for each of 4 nodes


def test_collect_on_the_darts_space_samples_two_inputs_per_node() -> None:
    space = get_space(SpaceConfig(name="darts"))
    ds = collect(space, 3, channels=4, layers=3, resolution=8, batch_size=2, repeats=1, warmup=0)
    none = space.ops.index("none")
    for r in ds.records:
        enc = torch.tensor(r.encoding).view(2, 14, len(space.ops))
        assert torch.equal(enc.sum(dim=2), torch.ones(2, 14))
        assert [int((e[:, none] == 0).sum()) for e in enc] == [8, 8]
        assert r.latency_ms > 0


def test_bad_latency_files_are_reported(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DatasetError, match="not a latency dataset"):
        LatencyDataset.load(bad)
    with pytest.raises(ConfigError, match="not a latency predictor"):
        LatencyPredictor.load(bad)
    with pytest.raises(ConfigError, match="predictor"):
        tiny_config("nb201", **{"search.regularizers": "[latency]"})
