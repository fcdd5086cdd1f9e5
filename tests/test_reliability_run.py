"""Run directories under hostile and careless use: pickled code in checkpoints and data,
two writers on one directory, user files in the way, damaged metrics, changed options on
resume, and the smaller failures of issue 20 (one test per item)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffnas
from diffnas.bench.quality import Job, MethodSpec, plan, run_job
from diffnas.cli import main
from diffnas.data import load_dataset
from diffnas.errors import CheckpointError, ConfigError, DatasetError, NumericalError
from diffnas.run import LOCK, MARKER, DirLock, RunDir
from diffnas.utils import atomic_torch_save, atomic_write_text, load_checkpoint

from .conftest import Poison, tiny_config


class Planted:
    """An object whose unpickling creates a file: the stand-in for any code."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-epoch nb201 search, copied by tests that damage it."""
    path = tmp_path_factory.mktemp("finished") / "run"
    diffnas.search(tiny_config("nb201", epochs=2), out=path)
    return path


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


# ----------------------------------------------------------------------------- item 1
def test_a_checkpoint_with_a_pickle_payload_is_refused_without_running_it(
    tmp_path, finished_run, capsys
) -> None:
    # what diffnas writes loads as plain data (RNG states included)
    assert (
        torch.serialization.get_unsafe_globals_in_checkpoint(finished_run / "checkpoint.pt") == []
    )
    run = _copy(finished_run, tmp_path / "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    planted = tmp_path / "code-ran"
    state["meters"] = Planted(planted)
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"not plain data \(io.open\)"):
        diffnas.resume(run)
    for argv in (["derive", str(run)], ["search", "--resume", str(run), "--print-config"]):
        assert main(argv) == 2
        assert "refuses to load it" in capsys.readouterr().err
    assert not planted.exists()
    # a checkpoint of an older diffnas (numpy RNG state as an array) still loads, as data
    legacy = tmp_path / "legacy.pt"
    torch.save({"rng": {"numpy": ("MT19937", np.arange(4, dtype=np.uint32), 0, 0, 0.0)}}, legacy)
    assert load_checkpoint(legacy)["rng"]["numpy"][1].tolist() == [0, 1, 2, 3]


def test_cifar_batches_load_with_an_unpickler_that_runs_nothing(tmp_path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    planted = tmp_path / "code-ran"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [Planted(planted), 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match=r"data_batch_1.*names io.open"):
        load_dataset("cifar10", str(tmp_path))
    assert not planted.exists()


# ----------------------------------------------------------------------------- item 2
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""


def _hold(directory: Path) -> subprocess.Popen:
    """Another process holding the directory's lock, as a running diffnas does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory / LOCK)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_one_writer_per_run_directory_and_a_killed_holder_releases_it(tmp_path, capsys) -> None:
    cfg = tiny_config("nb201", epochs=1)
    run = tmp_path / "run"
    RunDir.create(cfg, run).release()
    holder = _hold(run)
    try:
        busy = f"in use by diffnas process {holder.pid}.*kill {holder.pid}"
        with pytest.raises(CheckpointError, match=busy):
            diffnas.search(cfg, out=run)
        (run / "checkpoint.pt").write_bytes(b"")  # refused before reading it
        for start in (lambda: diffnas.resume(run), lambda: diffnas.search(cfg, out=run)):
            with pytest.raises(CheckpointError, match=busy):  # busy, not "--resume it"
                start()
        (run / "checkpoint.pt").unlink()
        with pytest.raises(CheckpointError, match=busy):
            diffnas.train("DARTS_V2", overrides=["log.progress=false"], out=run)
        # two benches into one --out would mix their rows
        out = tmp_path / "bench"
        quality_args = ["bench", "quality", "--methods", "darts", "--seeds", "0", "--out", str(out)]
        main([*quality_args, "--table-only"])
        holder.kill()
        holder.wait()
        holder = _hold(out)
        assert main(quality_args) == 2
        assert f"in use by diffnas process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)  # as `kill -9`: the OS drops the lock
        holder.wait()
    RunDir.create(cfg, run).release()  # the next writer proceeds
    # the lock is per open file, so it holds within one process too (a library user)
    first = RunDir.create(cfg, tmp_path / "lib")
    with pytest.raises(CheckpointError, match=f"process {os.getpid()}"):
        DirLock(tmp_path / "lib").acquire()
    first.release()


def test_default_run_names_are_unique_within_a_second(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config("nb201", epochs=1)
    a, b = RunDir.create(cfg), RunDir.create(cfg)
    assert a.path != b.path and b.path.name == a.path.name + "-2"
    assert a.config_path.exists() and b.config_path.exists()
    a.release(), b.release()


# ----------------------------------------------------------------------------- item 3
def test_user_directories_are_never_written_into_nor_deleted(tmp_path, monkeypatch) -> None:
    cfg = tiny_config("nb201", epochs=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: own config\n")
    (mine / "genotype.json").write_text("{}\n")
    with pytest.raises(CheckpointError, match="not made by diffnas.*config.yaml, genotype.json"):
        diffnas.search(cfg, out=mine)
    assert sorted(os.listdir(mine)) == ["config.yaml", "genotype.json"]
    assert (mine / "config.yaml").read_text() == "my: own config\n"
    monkeypatch.chdir(mine)
    with pytest.raises(ConfigError, match="empty string"):
        diffnas.search(cfg, out="")
    assert sorted(os.listdir(mine)) == ["config.yaml", "genotype.json"]
    # bench quality: a run directory holding someone's files is a failed row, kept as is
    out = tmp_path / "bench"
    (job,) = plan([MethodSpec.parse("darts")], [0], out, None, ["data.subset=0.1"], jobs=1).jobs
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "notes.txt").write_text("keep me")
    rec = run_job(Job(job.method, job.seed, job.run_dir, job.config))
    assert rec["status"] == "failed" and "not made by diffnas" in rec["error"]
    assert os.listdir(job.run_dir) == ["notes.txt"]


# ----------------------------------------------------------------------------- item 5
def test_resume_rebuilds_metrics_from_the_checkpoint(tmp_path, finished_run) -> None:
    run = _copy(finished_run, tmp_path / "run")
    original = RunDir(run).read_metrics()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    # a corrupt first line and a cut last one: read_metrics sees nothing
    (run / "metrics.jsonl").write_text("{not json\n" + lines[1][: len(lines[1]) // 2])
    assert RunDir(run).read_metrics() == []
    diffnas.resume(run)  # a finished run: nothing to search, history restored
    assert RunDir(run).read_metrics() == original


# ----------------------------------------------------------------------------- item 6
def test_resume_applies_allowed_changes_and_refuses_the_rest(
    tmp_path, finished_run, capsys
) -> None:
    run = _copy(finished_run, tmp_path / "run")
    ckpt = (run / "checkpoint.pt").read_bytes()
    # --print-config shows the resumed config and runs nothing
    argv = ["search", "--resume", str(run), "--print-config", "--set", "search.w_lr=0.01"]
    assert main(argv) == 0
    assert "w_lr: 0.01" in capsys.readouterr().out
    # --dry-run probes the resumed config and runs nothing either
    assert main(["search", "--resume", str(run), "--dry-run", "--epochs", "3"]) == 0
    assert "per epoch" in capsys.readouterr().out
    assert (run / "checkpoint.pt").read_bytes() == ckpt
    assert RunDir(run).load_config() == RunDir(finished_run).load_config()
    # a changed relaxation (by option or by editing config.yaml) is refused with the diff
    for argv in (
        ["search", "--resume", str(run), "--set", "search.relaxation=gumbel"],
        ["search", "--resume", str(run), "--seed", "1"],
        ["search", "--resume", str(run), "--config", "gdas"],
    ):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "search.relaxation: 'softmax' -> 'gumbel'" in err and "seed: 0 -> 1" in err
    assert "drop --config" in err
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("relaxation: softmax", "relaxation: gumbel"))
    with pytest.raises(CheckpointError, match="search.relaxation: 'softmax' -> 'gumbel'"):
        diffnas.resume(run)
    (run / "config.yaml").write_text(text)
    # allowed: more epochs and a lower lr; applied, and config.yaml says so
    assert main(["search", "--resume", str(run), "--epochs", "3", "--set", "search.w_lr=0.01"]) == 0
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [0, 1, 2]
    cfg = RunDir(run).load_config()
    assert cfg.search.epochs == 3 and cfg.search.w_lr == 0.01
    state = RunDir(run).load_checkpoint()
    assert state["config"]["search"]["w_lr"] == 0.01 and state["epoch"] == 3


# ----------------------------------------------------------------------------- item 11
def test_failed_starts_leave_nothing_and_nan_advice_is_true(tmp_path, finished_run) -> None:
    # with a checkpoint: the advice (resume with a lower lr) is one resume accepts (a resume
    # with a changed lr running on is tested above)
    from diffnas.search import resume_config

    run = _copy(finished_run, tmp_path / "run")
    with pytest.raises(NumericalError, match="intact.*--resume .* --set search.w_lr=0.0125"):
        diffnas.resume(run, overrides=["search.epochs=3"], callbacks=[Poison(at_epoch=2)])
    assert resume_config(run, ["search.epochs=3", "search.w_lr=0.0125"]).search.w_lr == 0.0125
    cfg = tiny_config("nb201", epochs=1)
    with pytest.raises(NumericalError) as info:
        diffnas.search(cfg, out=tmp_path / "nan", callbacks=[Poison(at_epoch=0)])
    assert "intact" not in str(info.value) and "No checkpoint was written" in str(info.value)
    assert not (tmp_path / "nan").exists()
    # a dataset that cannot load: the start fails before any training
    bad = tiny_config("nb201", epochs=1, **{"data.dataset": "imagefolder"})
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty):
        with pytest.raises(DatasetError, match="needs --data-root"):
            diffnas.search(bad, out=out)
    assert not (tmp_path / "new").exists()
    assert [n for n in os.listdir(empty) if not n.startswith(".")] == []


def test_corrupt_checkpoint_advice_leads_to_a_new_start(tmp_path, finished_run, capsys) -> None:
    run = _copy(finished_run, tmp_path / "run")
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    assert main(["search", "--resume", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"rm '{ckpt}'" in err and f"--config {run}/config.yaml --out {run}" in err
    ckpt.unlink()  # following the advice works
    assert (
        main(["search", "--config", f"{run}/config.yaml", "--out", str(run), "--epochs", "1"]) == 0
    )
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [0]


def test_files_are_readable_by_others_as_the_umask_allows(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.yaml", "x: 1\n")
        atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    for name in ("a.yaml", "b.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_imagefolder_with_one_class_or_an_empty_class_folder_warns(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (tmp_path / "t" / split / "ant").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(
            tmp_path / "t" / split / "ant" / "0.png"
        )
    (tmp_path / "t" / "train" / "bee").mkdir()  # forgotten images
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("imagefolder", str(tmp_path / "t"), str(tmp_path / "cache"))
        load_dataset("imagefolder", str(tmp_path / "t"), str(tmp_path / "cache"))  # cached
    assert ds.num_classes == 1
    text = [str(w.message) for w in caught]
    assert sum("train/bee" in t and "no images" in t for t in text) == 2
    assert sum("single class ('ant')" in t for t in text) == 2


def test_run_directory_marker_and_lock_files(tmp_path) -> None:
    run = RunDir.create(tiny_config("nb201", epochs=1), tmp_path / "run")
    assert json.loads((tmp_path / "run" / MARKER).read_text())["kind"] == "search"
    assert (tmp_path / "run" / LOCK).read_text().strip() == str(os.getpid())
    run.release()


def test_training_resume_applies_allowed_changes_and_refuses_the_rest(tmp_path, capsys) -> None:
    from diffnas.config import to_dict
    from diffnas.retrain import load_train_config
    from diffnas.retrain.train import resume_training_config

    cfg = load_train_config(["train/digits"], ["model.channels=4", "train.epochs=2"])
    run = RunDir.create(cfg, tmp_path / "train")
    run.save_checkpoint({"kind": "train", "config": to_dict(cfg), "epoch": 1})
    run.release()
    new = resume_training_config(run.path, ["train.lr=0.01", "train.epochs=4", "threads=1"])
    assert (new.train.lr, new.train.epochs, new.threads) == (0.01, 4, 1)
    with pytest.raises(CheckpointError, match="model.channels: 4 -> 8.*train.epochs"):
        resume_training_config(run.path, ["model.channels=8"])
    argv = ["train", "--resume", str(run.path), "--print-config", "--set", "train.lr=0.01"]
    assert main(argv) == 0 and "lr: 0.01" in capsys.readouterr().out
    assert main(["train", "--resume", str(run.path), "--batch-size", "8"]) == 2
    assert "data.batch_size" in capsys.readouterr().err
    assert RunDir(run.path).load_config(type(cfg)) == cfg  # nothing was written


def test_netsearch_never_writes_into_a_user_directory_and_locks_its_own(tmp_path: Path) -> None:
    from diffnas.config import load_config
    from diffnas.network_search.evolution import netsearch, resume_netsearch

    config = load_config(["darts"], ["data.dataset=digits"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="notes.txt"):
        netsearch(config, out=mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # a network search directory in use (here: a lock this process holds) is refused
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "config.yaml").write_text("method: darts\n")  # an older diffnas's, no marker
    held = DirLock(ours).acquire()
    try:
        with pytest.raises(CheckpointError, match=f"in use by diffnas process {os.getpid()}"):
            resume_netsearch(ours)
    finally:
        held.release()
