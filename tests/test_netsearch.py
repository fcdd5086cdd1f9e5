"""Network-level search (enhanced-gradient DARTS stage 2): genome, counts, budget, NSGA-II, resume."""

from __future__ import annotations

import json

import pytest
import torch

from diffnas.cli import main
from diffnas.config import load_config
from diffnas.errors import ConfigError, GenotypeError
from diffnas.network_search import GenomeSpace, network_genotype, run_netsearch
from diffnas.network_search.evolution import dominates, read_candidates, resume_netsearch
from diffnas.network_search.genome import Candidate
from diffnas.network_search.proxy import network_params
from diffnas.retrain.network import build_model
from diffnas.retrain.profile import count_params
from diffnas.spaces import Genotype, load_genotype
from diffnas.spaces.genotype import CellGenotype, Edge

NODES = (2, 3, 4, 5)


def _cell(kind: str, op: str) -> CellGenotype:
    edges = tuple(Edge(op, src, dst) for dst in NODES for src in (0, 1))
    return CellGenotype(kind, edges, None, NODES)


# block 0: sep_conv_3x3 normal cell, max_pool reduction; block 1: skip connections everywhere
BLOCKS = [
    Genotype("darts", (_cell("normal", "sep_conv_3x3"), _cell("reduce", "max_pool_3x3"))),
    Genotype("darts", (_cell("normal", "skip_connect"), _cell("reduce", "skip_connect"))),
]


def _hand_count(c: Candidate, in_ch: int, classes: int) -> int:
    """Parameters of the DARTS CIFAR network of candidate `c` over BLOCKS, by hand."""

    def edge(op: str, ch: int, stride: int) -> int:
        if op == "sep_conv_3x3":
            return 2 * (ch * 9 + ch * ch + 2 * ch)  # 2 x (dw 3x3, pw 1x1, BN)
        if op == "skip_connect":
            return 0 if stride == 1 else ch * ch + 2 * ch  # FactorizedReduce: 2 halves + BN
        return 0  # max pool

    C = c.channels
    total = in_ch * 3 * C * 9 + 2 * 3 * C  # stem conv + BN
    c_pp = c_p = 3 * C
    ch, red_prev = C, False
    for stage, n in enumerate(c.stages):
        cells = [("reduce", True)] if stage > 0 else []
        cells += [("normal", False)] * n
        block = BLOCKS[c.blocks[stage]]
        for kind, red in cells:
            if red:
                ch *= 2
            op = block.cells_of(kind)[0].edges[0].op
            pre0 = 2 * c_pp * (ch // 2) + 2 * ch if red_prev else c_pp * ch + 2 * ch
            total += pre0 + c_p * ch + 2 * ch
            total += sum(edge(op, ch, 2 if red and src < 2 else 1) for src in (0, 1) * 4)
            c_pp, c_p, red_prev = c_p, 4 * ch, red
    return total + c_p * classes + classes


def test_genome_encode_decode_round_trips() -> None:
    space = GenomeSpace(3, 1, 4, (8, 12, 16), 4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = [
            int(torch.randint(lo, hi + 1, (1,), generator=gen))
            for lo, hi in zip(space.lower, space.upper)
        ]
        c = space.decode(x)
        assert space.encode(c) == x
        assert space.decode(space.encode(c)) == c
        assert len(c.stages) == 3 and c.channels in (8, 12, 16)
    with pytest.raises(GenotypeError, match="outside the search space"):
        space.decode([5, 1, 1, 0, 0, 0, 0])
    with pytest.raises(GenotypeError, match="not a choice"):
        space.encode(Candidate((1, 1, 1), 10, (0, 0, 0)))


@pytest.mark.parametrize(
    "cand",
    [
        Candidate((1, 1, 1), 8, (0, 0, 0)),
        Candidate((2, 1, 3), 12, (0, 1, 0)),
        Candidate((1, 3, 2), 16, (1, 0, 1)),
        Candidate((0, 2, 1), 8, (1, 1, 0)),
    ],
)
def test_decoded_network_builds_and_its_count_is_the_objective(cand: Candidate) -> None:
    g = network_genotype(BLOCKS, cand)
    g2 = Genotype.from_json(json.loads(g.dumps()))  # the saved form builds the same network
    assert g2 == g and g2.network is not None
    model = build_model(g2, num_classes=10, in_channels=1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    objective = network_params(g, 10, 1)
    assert objective == _hand_count(cand, 1, 10)
    assert objective == count_params(model)[0]


def test_standard_layout_gives_the_classic_darts_network() -> None:
    """stages (2, 2, 2) of one block = the 8-cell DARTS network (reductions at 1/3, 2/3)."""
    block = load_genotype("DARTS_V2")
    g = network_genotype([block], Candidate((2, 2, 2), 16, (0, 0, 0)))
    classic = build_model(block, num_classes=10, channels=16, layers=8)
    assert network_params(g, 10, 3) == count_params(classic)[0]


def _config(tmp_path, **extra):
    overrides = [
        "netsearch.generations=2",
        "netsearch.population=4",
        "netsearch.proxy_epochs=1",
        "netsearch.proxy_subset=0.3",
        "netsearch.channels=[4, 8]",
        "netsearch.blocks=[1, 2]",
        "netsearch.executor=serial",
        "netsearch.threads_per_worker=1",
        "threads=1",
        "log.progress=false",
    ]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(["enhanced_gradient"], overrides)


def test_budget_violations_are_marked_infeasible_and_not_trained(tmp_path) -> None:
    # this seed's first population: 35k, 45k and 74k parameters
    config = _config(tmp_path, **{"netsearch.budget": 40000, "netsearch.generations": 1})
    result = run_netsearch(config, BLOCKS, tmp_path / "ns")
    records = list(read_candidates(tmp_path / "ns" / "candidates.jsonl").values())
    assert {r["feasible"] for r in records} == {True, False}
    for r in records:
        assert r["feasible"] == (r["params"] <= 40000)
        assert (r["val_error"] is None) == (not r["feasible"])
        assert ("train_s" in r) == r["feasible"]
    assert all(r["params"] <= 40000 for r in result.front)


def test_tiny_nsga2_two_stages_front_and_resume(tmp_path, capsys) -> None:
    out = tmp_path / "ns"
    args = ["netsearch", "--config", "enhanced_gradient", "--out", str(out), "--no-progress"]
    args += ["--epochs", "1", "--set", "space.channels=4", "--set", "space.layers=3"]
    args += ["--set", "data.subset=0.1", "--set", "search.derive={name: top_k, k: 2}"]
    for o in _config(tmp_path).netsearch.__dict__.items():
        args += ["--set", f"netsearch.{o[0]}={json.dumps(o[1])}"]
    assert main([*args, "--set", "threads=1"]) == 0
    assert (out / "block_search" / "blocks.json").exists()
    lines = (out / "candidates.jsonl").read_text()
    records = [json.loads(line) for line in lines.splitlines()]
    done = [r for r in records if r["feasible"]]
    front = json.loads((out / "pareto.json").read_text())["front"]
    assert front and len(records) <= 8
    # non-dominated: no evaluated network beats a front member; every other one is beaten
    for f in front:
        assert not any(dominates(r, f) for r in done)
    keys = {f["key"] for f in front}
    for r in done:
        if r["key"] not in keys:
            assert any(
                dominates(f, r) or (f["val_error"] == r["val_error"] and f["params"] == r["params"])
                for f in front
            )
    # the chosen network: best error under the budget, a genotype train/profile/export accept
    chosen = load_genotype(out / "network.json")
    assert chosen.network is not None
    best = min(front, key=lambda r: (r["val_error"], r["params"]))
    assert chosen.info["params"] == best["params"]
    assert count_params(build_model(chosen, num_classes=10, in_channels=1))[0] == best["params"]
    # diffnas train builds the genotype's own network, whatever the preset's sizes say
    from diffnas.retrain.config import load_train_config
    from diffnas.retrain.train import Trainer

    trainer = Trainer(load_train_config(["train/digits"], ["threads=1"]), chosen)
    assert trainer.config.model.channels is None and trainer.config.model.layers is None
    trained_net = count_params(trainer.model)
    assert trained_net[0] == best["params"] and trained_net[1] > 0  # + the auxiliary head
    assert (out / "pareto.png").stat().st_size > 0
    assert (out / "pareto.csv").read_text().count("\n") == len(front) + 1
    assert (
        main(["profile", str(out / "network.json"), "--in-channels", "1", "--input-size", "8"]) == 0
    )

    # resuming a finished run re-evaluates nothing and gives the same front
    result = resume_netsearch(out)
    assert result.evaluated == 0
    assert (out / "candidates.jsonl").read_text() == lines
    assert [r["key"] for r in result.front] == [f["key"] for f in front]

    # a run killed after two candidates: the resumed run trains only the missing ones
    (out / "candidates.jsonl").write_text("".join(lines.splitlines(keepends=True)[:2]))
    for name in ("pareto.json", "network.json"):
        (out / name).unlink()
    result = resume_netsearch(out)
    trained_before = sum(1 for r in records[:2] if r["feasible"])
    assert result.evaluated == len(done) - trained_before
    assert [r["key"] for r in result.front] == [f["key"] for f in front]
    assert [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines()][
        :2
    ] == records[:2]


@pytest.mark.slow
def test_process_pool_gives_the_serial_results(tmp_path) -> None:
    config = _config(tmp_path, **{"netsearch.generations": 1, "netsearch.population": 2})
    serial = run_netsearch(config, BLOCKS, tmp_path / "serial")
    config = _config(
        tmp_path,
        **{
            "netsearch.generations": 1,
            "netsearch.population": 2,
            "netsearch.executor": "process",
            "netsearch.workers": 2,
        },
    )
    pool = run_netsearch(config, BLOCKS, tmp_path / "pool")
    key = lambda r: r["key"]  # noqa: E731
    strip = lambda rs: [{k: v for k, v in r.items() if k != "train_s"} for r in sorted(rs, key=key)]  # noqa: E731
    assert strip(serial.candidates) == strip(pool.candidates)


def test_netsearch_section_is_a_config_section(capsys) -> None:
    assert main(["search", "--config", "enhanced_gradient", "--print-config"]) == 0
    assert "netsearch:" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="netsearch.budgett"):
        load_config(["enhanced_gradient"], ["netsearch.budgett=5"])
    with pytest.raises(ConfigError, match="executor"):
        load_config(["enhanced_gradient"], ["netsearch.executor=threads"])


def test_train_holdout_splits_the_training_data_and_reports_validation(tmp_path) -> None:
    from diffnas.retrain.config import load_train_config
    from diffnas.retrain.train import Trainer

    def trainer(seed: int) -> Trainer:
        cfg = load_train_config(
            ["train/digits"],
            [
                "data.subset=0.2",
                "train.holdout=0.25",
                "train.split_seed=7",
                "train.epochs=1",
                f"seed={seed}",
                "model.channels=4",
                "model.layers=3",
                "threads=1",
            ],
        )
        return Trainer(cfg, load_genotype("DARTS_V2"))

    a, b = trainer(0), trainer(1)
    n = round(0.2 * len(a.dataset.train))
    assert a.val_stream is not None and b.val_stream is not None
    assert a.val_stream.num_samples == round(0.25 * n)
    assert a.train_stream.num_samples + a.val_stream.num_samples == n
    # the split follows split_seed only: other seeds hold out the same images
    assert torch.equal(a.val_stream.images, b.val_stream.images)
    result = a.run_training()
    last = result.history[-1]
    # validation on the held-out images; the test split once, after the last epoch
    assert last["test_acc"] is not None and result.val_acc == last["val_acc"]
    a.model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in a.val_stream.epoch(0):
            correct += int((a.model(x).argmax(1) == y).sum())
            total += len(y)
    assert total == a.val_stream.num_samples
    assert result.val_acc == pytest.approx(100.0 * correct / total)
    with pytest.raises(ConfigError, match="train.holdout"):
        load_train_config(["train/digits"], ["train.holdout=1.5"])
