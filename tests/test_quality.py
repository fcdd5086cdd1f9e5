"""The quality bench: protocol layering, random search, the runner (resume/skip) and its table."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

from diffnas.bench.quality import MethodSpec, execute, plan, read_row, run_dir_for, run_job
from diffnas.cli import main
from diffnas.config import load_config
from diffnas.derive.random_search import RandomSearch, pick_best, sample_cells
from diffnas.errors import ConfigError
from diffnas.nasbench import nb201
from diffnas.search import Searcher
from diffnas.spaces import get_space
from diffnas.spaces.nb201 import from_nb201_string
from diffnas.supernet.mixed import MixWeights

PROTOCOL = "protocols/nb201_cpu"

TINY_PROTOCOL = """\
space: {name: nb201, channels: 4, layers: 1}
data: {dataset: digits, subset: 0.3}
search: {epochs: 1}
threads: 1
"""


@pytest.fixture
def tiny_protocol(tmp_path):
    path = tmp_path / "tiny_protocol.yaml"
    path.write_text(TINY_PROTOCOL)
    return str(path)


# --------------------------------------------------------------------------- protocol
def test_protocol_sets_the_budget_and_keeps_each_methods_settings() -> None:
    pc = load_config(["pc_darts", PROTOCOL])
    assert (pc.space.name, pc.space.channels, pc.space.layers) == ("nb201", 8, 1)
    assert pc.search.epochs == 8 and pc.data.resolution == 32 and pc.data.subset == 0.3
    # the method's own optimizer, batch and supernet settings survive the protocol
    assert pc.search.w_lr == pytest.approx(0.1) and pc.search.arch_lr == pytest.approx(6e-4)
    assert pc.data.batch_size == 256 and pc.supernet.partial_channels == 4
    # 15 warm-up epochs of 50 keep their share: 2 of 8
    assert pc.search.warmup_epochs == 2
    prime = load_config(["darts_prime_crb", PROTOCOL])
    assert prime.space.exclude_ops == ["none"] and prime.supernet.node_bn
    aca = load_config(["darts", "aca", PROTOCOL])
    assert aca.space.exclude_ops == ["skip_connect"] and aca.search.derive.name == "aca"
    rd = load_config(["rdarts", PROTOCOL])  # the darts-only per-cell layout is dropped
    assert rd.space.cells is None and rd.search.regularizers[0].name == "rdarts"
    gdas = load_config(["gdas", PROTOCOL])
    assert gdas.search.relaxation.name == "gumbel" and gdas.search.epochs == 40


def test_protocol_v3_deepens_the_supernet_and_scales_every_methods_schedule() -> None:
    from diffnas.schedules.progressive import scale_stages

    v3 = "protocols/nb201_cpu_v3"
    beta = load_config(["beta_darts", v3])
    assert (beta.space.name, beta.space.channels, beta.space.layers) == ("nb201", 8, 5)
    assert beta.search.epochs == 10 and beta.data.subset == 0.3  # 50 * 0.2
    assert load_config(["gdas", v3]).search.epochs == 50  # 250 * 0.2
    pc = load_config(["pc_darts", v3]).search
    assert (pc.epochs, pc.warmup_epochs) == (10, 3)  # 15 of 50 -> 3 of 10
    drnas = load_config(["drnas_nb201", v3])
    assert drnas.search.epochs == 20 and drnas.space.layers == 5  # 100 * 0.2
    # its two stages of 50 with 10 warm-up epochs each become 10 + 10 with 2
    assert scale_stages([50, 50], 10, 20) == ([10, 10], 2)
    minus = load_config(["darts_minus", v3])
    assert minus.space.name == "nb201" and minus.supernet.aux_skip and minus.search.epochs == 10
    rs = load_config(["sdarts_rs", "examples/sdarts_nb201", v3])
    assert rs.search.epochs == 20 and rs.search.regularizers[0].name == "sdarts_rs"


def test_new_epochs_rescale_an_inherited_warmup_only() -> None:
    assert load_config(["pc_darts"], ["search.epochs=20"]).search.warmup_epochs == 6
    assert load_config(["pc_darts"], ["search.epochs=2"]).search.warmup_epochs == 1
    assert load_config(["pc_darts"], ["search.epochs=1"]).search.warmup_epochs == 0
    both = load_config(["pc_darts"], ["search.epochs=20", "search.warmup_epochs=9"])
    assert both.search.warmup_epochs == 9
    assert load_config(["darts"], ["search.epochs=20"]).search.warmup_epochs == 0


def test_epochs_scale_compresses_each_methods_own_schedule() -> None:
    # DARTS 50 and GDAS 250 epochs keep their ratio: 50 * 0.16 = 8, 250 * 0.16 = 40
    assert load_config(["darts"], ["search.epochs_scale=0.16"]).search.epochs == 8
    assert load_config(["gdas"], ["search.epochs_scale=0.16"]).search.epochs == 40
    # the warm-up follows the new length: PC-DARTS 15 of 50 -> round(15 * 8 / 50) = 2 of 8
    pc = load_config(["pc_darts"], ["search.epochs_scale=0.16"]).search
    assert (pc.epochs, pc.warmup_epochs) == (8, 2)
    # a later layer naming epochs sets them exactly; the scale never reaches the config
    exact = load_config(["gdas"], ["search.epochs_scale=0.16", "search.epochs=5"])
    assert exact.search.epochs == 5 and not hasattr(exact.search, "epochs_scale")
    assert load_config(["darts"], ["search.epochs_scale=0.001"]).search.epochs == 1
    with pytest.raises(ConfigError, match="epochs_scale must be a positive number"):
        load_config(["darts"], ["search.epochs_scale=0"])
    with pytest.raises(ConfigError, match="not both"):
        load_config(["darts"], ["search={epochs: 3, epochs_scale: 0.5}"])


# --------------------------------------------------------------------------- random search
def test_pick_best_is_the_argmax_first_on_ties() -> None:
    cells = sample_cells(get_space("nb201"), 5, seed=3)
    assert pick_best(cells, [1.0, 7.0, 3.0, 7.0, 2.0]) == (1, cells[1])
    assert pick_best(cells, [9.0, 1.0, 1.0, 1.0, 1.0])[0] == 0


def test_sampled_cells_are_uniform_over_ops() -> None:
    cells = sample_cells(get_space("nb201"), 500, seed=0)
    counts = Counter(e.op for g in cells for e in g.cells[0].edges)
    assert set(counts) == {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"}
    # 3000 draws, 600 expected per op; 5 standard deviations ≈ 110
    assert all(490 <= n <= 710 for n in counts.values()), counts
    assert sample_cells(get_space("nb201"), 4, seed=1) == sample_cells(
        get_space("nb201"), 4, seed=1
    )


def tiny_random_search(samples: int, eval_images: int):
    """Random search under the protocol, shrunk to a digits-sized supernet."""
    derive = f"{{name: random_search, samples: {samples}, eval_images: {eval_images}}}"
    return load_config(
        ["random_search", "protocols/nb201_cpu"],
        [
            "space.channels=4",
            "data.dataset=digits",
            "data.resolution=8",
            "log.progress=false",
            f"search.derive={derive}",
        ],
    )


def test_random_search_returns_the_candidate_with_the_best_score(monkeypatch) -> None:
    cfg = tiny_random_search(samples=6, eval_images=64)
    s = Searcher(cfg)
    d = s.derivation
    assert isinstance(d, RandomSearch)
    cands = d._candidates(s)
    scores = {str(g.to_json()): v for g, v in zip(cands, [5.0, 2.0, 9.0, 9.0, 1.0, 0.0])}
    monkeypatch.setattr(RandomSearch, "score", lambda self, s, g: scores[str(g.to_json())])
    s.global_step = 1
    assert d.derive(s) == cands[2] and d.best_index == 2 and d.best_score == 9.0


def test_random_search_score_is_the_discrete_path_accuracy() -> None:
    """Reference: the supernet with hand-built one-hot weights of the cell's ops."""
    cfg = tiny_random_search(samples=2, eval_images=100)
    s = Searcher(cfg)
    cell = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    g = from_nb201_string(cell)
    ops = list(s.space.ops)
    w = torch.zeros(6, len(ops))
    active = []
    for i, name in enumerate(
        ["nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1", "none"]
    ):
        w[i, ops.index(name)] = 1.0
        active.append([ops.index(name)])
    val = s.data.val
    x = (val.images[:100].float() / 255.0 - val.mean) / val.std
    with torch.no_grad():
        s.model.eval()
        logits = s.model(x, MixWeights({"cell": w}, {"cell": active}))
        s.model.train()
    expected = 100.0 * float((logits.argmax(1) == val.labels[:100]).float().mean())
    assert s.derivation.score(s, g) == pytest.approx(expected)


def test_uniform_relaxation_trains_one_uniform_path_and_never_alpha(tmp_path) -> None:
    from diffnas.registry import RELAXATIONS

    relax = RELAXATIONS.get("uniform")()
    alpha = torch.zeros(6, 5)
    counts = torch.zeros(5)
    for _ in range(400):
        w = relax.weights(alpha, "cell")
        assert (w.sum(1) == 1).all() and relax.active(alpha, "cell", w) == [
            [int(i)] for i in w.argmax(1)
        ]
        counts += w.sum(0)
    assert ((counts / counts.sum() - 0.2).abs() < 0.03).all()  # 2400 draws: 1/5 each


# --------------------------------------------------------------------------- the runner
def test_method_specs_parse() -> None:
    assert MethodSpec.parse("aca") == MethodSpec("aca", ("aca",))
    spec = MethodSpec.parse("darts_long:darts+search.epochs=40")
    assert spec == MethodSpec("darts_long", ("darts",), ("search.epochs=40",))
    assert MethodSpec.parse("darts+aca").label == "darts+aca"
    from diffnas.errors import ConfigError

    with pytest.raises(ConfigError, match="LABEL"):
        MethodSpec.parse("darts+")


def test_only_plans_the_named_runs_of_the_grid(tmp_path, tiny_protocol) -> None:
    from diffnas.errors import ConfigError

    methods = [MethodSpec.parse("darts"), MethodSpec.parse("gdas")]
    out = tmp_path / "bench"
    full = plan(methods, [0, 1], out, tiny_protocol, jobs=1)
    assert [(j.method, j.seed) for j in full.jobs] == [
        ("darts", 0), ("gdas", 0), ("darts", 1), ("gdas", 1)
    ]  # fmt: skip
    part = plan(methods, [0, 1], out, tiny_protocol, jobs=1, only=["gdas-s1", "darts-s0"])
    assert [(j.method, j.seed) for j in part.jobs] == [("darts", 0), ("gdas", 1)]
    assert part.skipped == []
    with pytest.raises(ConfigError, match=r"not in it: gdas-s2 .*darts-s0, gdas-s0"):
        plan(methods, [0, 1], out, tiny_protocol, jobs=1, only=["gdas-s2"])


def test_bench_runs_skips_finished_and_resumes_killed_runs(tmp_path, tiny_protocol) -> None:
    methods = [MethodSpec.parse("darts"), MethodSpec.parse("random_search")]
    extra = ["search.derive={name: random_search, samples: 4, eval_images: 50}"]
    methods[1] = MethodSpec("random_search", ("random_search",), tuple(extra))
    out = tmp_path / "bench"
    first = plan(methods, [0], out, tiny_protocol, jobs=1)
    assert [(j.method, j.seed) for j in first.jobs] == [("darts", 0), ("random_search", 0)]
    records = execute(first)
    assert [r["status"] for r in records] == ["done", "done"]
    again = plan(methods, [0], out, tiny_protocol, jobs=1)
    assert again.jobs == [] and len(again.skipped) == 2

    # a killed run: a checkpoint after epoch 1 of 2, no bench.json -> resumed to the end
    killed = plan(
        [MethodSpec("darts2", ("darts",), ("search.epochs=2",))], [0], out, tiny_protocol, jobs=1
    ).jobs[0]
    from diffnas.config import Config, from_dict
    from diffnas.run import RunDir
    from diffnas.search import default_callbacks

    cfg = from_dict(Config, killed.config)
    run = RunDir.create(cfg, killed.run_dir)
    Searcher(cfg, run, default_callbacks(cfg, False)).run_epoch()
    run.release()  # as the killed process's exit would
    assert (killed.run_dir / "checkpoint.pt").exists()
    rec = run_job(killed)
    assert rec["status"] == "done" and rec["resumed"]
    # the machine is on record: a table completed over sittings may mix CPUs
    from diffnas.bench.speed import cpu_model

    assert rec["cpu"] == cpu_model() and rec["torch"] == torch.__version__
    row = read_row(killed.run_dir, "darts2", 0)
    assert row.status == "done" and row.epochs_done == 2 and len(row.curve) == 2
    # killed without a record of its start (an older bench): its wall time is unknown
    assert rec["total_wall_s"] is None and row.wall_s is None

    # killed with the record a running bench job keeps: the resumption adds the killed
    # invocation's wall time up to its last checkpoint to its own
    import json
    import os
    import time

    again = plan([MethodSpec("darts3", ("darts",), ("search.epochs=2",))], [0], out, tiny_protocol)
    job = again.jobs[0]
    run = RunDir.create(from_dict(Config, job.config), job.run_dir)
    Searcher(from_dict(Config, job.config), run, default_callbacks(cfg, False)).run_epoch()
    run.release()
    started = time.time() - 1000.0  # the killed invocation started 1000 s ago ...
    checkpointed = started + 700.0  # ... and wrote its last checkpoint 700 s later
    os.utime(run.checkpoint_path, (checkpointed, checkpointed))
    record = {"method": "darts3", "seed": 0, "status": "running", "started_unix": started}
    (job.run_dir / "bench.json").write_text(json.dumps(record | {"prior_wall_s": 50.0}))
    rec = run_job(job)
    assert rec["total_wall_s"] == pytest.approx(50.0 + 700.0 + rec["wall_s"], abs=0.02)
    assert read_row(job.run_dir, "darts3", 0).wall_s == rec["total_wall_s"]
    assert json.loads((job.run_dir / "bench.json").read_text())["status"] == "done"


def test_bench_quality_cli_writes_table_csv_and_plot(tmp_path, tiny_protocol) -> None:
    out = tmp_path / "q"
    args = [
        "bench",
        "quality",
        "--methods",
        "darts",
        "gdas",
        "--seeds",
        "1",
        "--protocol",
        tiny_protocol,
        "--out",
        str(out),
        "--jobs",
        "2",
    ]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "quality.csv").open()))
    assert [(r["method"], r["seed"]) for r in rows] == [("darts", "1"), ("gdas", "1")]
    for r in rows:
        run = run_dir_for(out, r["method"], int(r["seed"]))
        genotype = json.loads((run / "genotype.json").read_text())
        edges = genotype["cells"][0]["edges"]
        # the table's cell, share and lookup are those of the run's final genotype
        assert r["status"] == "done" and r["epochs"] == "1/1"
        assert r["cell"].count("~") == 6
        free = sum(e[0] in ("none", "skip_connect", "avg_pool_3x3") for e in edges)
        kept = sum(e[0] != "none" for e in edges)
        assert float(r["param_free_share"]) == pytest.approx(
            get_space("nb201").param_free_share(from_nb201_string(r["cell"])), abs=1e-3
        )
        assert free <= 6 and kept <= 6
        assert int(r["none_edges"]) == 6 - kept
        assert float(r["wall_s"]) > 0
        if nb201.available():
            assert float(r["lookup_acc"]) == pytest.approx(
                nb201.lookup(from_nb201_string(r["cell"])), abs=0.01
            )
    md = (out / "quality.md").read_text()
    assert "| darts | 1/1 |" in md and "| gdas | 1 | done | 1/1 |" in md
    assert (out / "quality.png").stat().st_size > 1000
    assert (out / "anytime.png").stat().st_size > 1000
    assert "| method | 5 min | 15 min | 30 min | 60 min |" in md
    # a second call finds everything finished and only rebuilds the outputs
    assert main([*args[:-2], "--jobs", "1"]) == 0


def test_a_failing_run_is_a_failed_row_and_is_tried_again(tmp_path, tiny_protocol) -> None:
    # rdarts compares per-cell α, which the nb201 space does not have: it fails at setup
    methods = [MethodSpec.parse("rdarts")]
    out = tmp_path / "bench"
    (rec,) = execute(plan(methods, [0], out, tiny_protocol, jobs=1))
    assert rec["status"] == "failed" and "per-cell" in rec["error"]
    row = read_row(run_dir_for(out, "rdarts", 0), "rdarts", 0)
    assert row.status == "failed" and row.wall_s is None and row.lookup_acc is None
    assert (run_dir_for(out, "rdarts", 0) / "bench_error.txt").exists()
    assert len(plan(methods, [0], out, tiny_protocol, jobs=1).jobs) == 1


ORPHAN_SCRIPT = """
import os, sys, time
from diffnas.network_search.executors import ProcessExecutor
if __name__ == "__main__":
    ex = ProcessExecutor(1, watch_s=0.05)  # the bench's executor
    assert list(ex.run(abs, [-1])) == [1]
    pool = ex.pool
    worker = pool.submit(os.getpid).result()
    pool.submit(time.sleep, 120)
    print(worker, flush=True)
    os.kill(os.getpid(), 9)  # the bench killed hard: no cleanup of its own
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_bench_workers_end_when_the_bench_process_is_killed(tmp_path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    worker = int(out.stdout.split()[0])
    deadline = time.monotonic() + 15
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "the worker outlived the killed bench by 15 s"


def test_a_run_on_a_node_without_the_output_is_sent_back(tmp_path, tiny_protocol) -> None:
    # a Ray worker that cannot read the driver's token in OUT searches in a directory of its
    # own and returns the run directory, which the driver unpacks where the run belongs
    from diffnas.bench.quality import STORAGE_CHECK, _unpack, run_task

    out = tmp_path / "bench"
    (job,) = plan([MethodSpec.parse("darts")], [0], out, tiny_protocol, jobs=1).jobs
    out.mkdir()
    (out / STORAGE_CHECK).write_text("the driver's token")
    rec = run_task({"job": job, "token": "another token"})
    assert rec["status"] == "done" and not job.run_dir.exists()  # nothing written to OUT
    _unpack(rec.pop("files"), job.run_dir)
    row = read_row(job.run_dir, "darts", 0)
    assert row.status == "done" and row.epochs_done == 1 and row.cell


# --------------------------------------------------------------------------- anytime
def _row(status, curve, times, final=None, seed=0, method="m"):
    from diffnas.bench.quality import Row

    return Row(
        method,
        seed,
        status,
        len(curve),
        10,
        None,
        times[-1] if times else None,
        "",
        final,
        None,
        curve,
        None,
        times,
    )


def test_anytime_takes_the_cell_derived_by_the_end_of_each_budget() -> None:
    from diffnas.bench.quality import anytime, anytime_at, anytime_markdown

    # epochs end at 4, 9, 14 minutes; the finished search's final cell scores 93.0
    done = _row("done", [90.0, 92.0, 91.0], [240.0, 540.0, 840.0], final=93.0)
    assert anytime_at(done, 3) is None  # no epoch had ended
    assert anytime_at(done, 4) == 90.0  # an epoch ending exactly at the budget counts
    assert anytime_at(done, 10) == 92.0
    assert anytime_at(done, 15) == 93.0  # finished within the budget: its final cell
    # a run killed at 9 minutes says nothing about 15, but knows 5
    killed = _row("partial", [80.0, 85.0], [240.0, 540.0], seed=1)
    assert anytime_at(killed, 5) == 80.0 and anytime_at(killed, 15) is None
    points = {p.minutes: p for p in anytime([done, killed], (5, 15))}
    assert points[5].mean == pytest.approx(85.0) and points[5].runs == 2
    assert (points[5].best, points[5].worst) == (90.0, 80.0)
    assert points[15].mean == 93.0 and points[15].runs == 1
    md = anytime_markdown([done, killed], (5, 15))
    assert "| m | 85.00 (90.00 / 80.00, 2) | 93.00 (93.00 / 93.00, 1) |" in md


def test_the_anytime_plot_shows_every_final_cell(tmp_path) -> None:
    from diffnas.bench.quality import anytime_ylim, plot_anytime

    good = _row("done", [90.0, 93.0], [240.0, 540.0], final=93.1)
    # a collapsed search ends at 73.2, under the old fixed floor of 80 %
    collapsed = _row("done", [88.0, 73.2], [240.0, 540.0], final=73.2, method="c")
    assert anytime_ylim([good, collapsed]) == (72.0, 95.0)
    assert anytime_ylim([good]) == (79.0, 95.0)  # nothing low: the floor stays near 80
    plot_anytime([good, collapsed], tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000
