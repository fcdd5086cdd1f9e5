"""Experiment loggers (csv, tensorboard, wandb, mlflow) on one real tiny search, offline.

One 2-epoch NB201 search logs to every installed backend; each test reads one backend's
files back with that backend's own reader (or the file format) and checks them against the
run's metrics.jsonl. W&B and MLflow tests skip when their extra is not installed.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import diffnas
from diffnas.callbacks.loggers import LOGGERS, CsvLogger, check_loggers
from diffnas.cli import main
from diffnas.commands._common import LOGGER_NAMES
from diffnas.errors import ConfigError
from diffnas.run import RunDir
from diffnas.search import Meters
from diffnas.spaces.genotype import Genotype
from diffnas.spaces.render import render_genotype

from .conftest import tiny_config

EVERY = 2  # log.every_steps


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A 2-epoch search logged by csv and every installed optional backend, nothing online."""
    tmp = tmp_path_factory.mktemp("logged")
    names = ["csv"] + [n for n in ("tensorboard", "wandb", "mlflow") if installed(n)]
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(tmp / "wandb-home"))
        cfg = tiny_config(
            "nb201", epochs=2, **{"log.loggers": json.dumps(names), "log.every_steps": str(EVERY)}
        )
        run = tmp / "run"
        diffnas.search(cfg, out=run)
    return run, RunDir(run).read_metrics()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- csv
def test_csv_logger_writes_epoch_and_step_rows(logged_run) -> None:
    run, records = logged_run
    epochs = read_csv(run / "metrics.csv")
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    for row, rec in zip(epochs, records):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "param_free_share"):
            assert float(row[key]) == pytest.approx(rec[key], rel=1e-12), key
    steps = read_csv(run / "steps.csv")
    per_epoch = len(steps) // 2
    assert [int(r["step"]) for r in steps] == [EVERY * (i + 1) for i in range(len(steps))]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(steps[0])
    # the windows of an epoch (equal batches) average to the epoch's own running mean
    for e, rec in enumerate(records):
        window = steps[e * per_epoch : (e + 1) * per_epoch]
        assert {int(r["epoch"]) for r in window} == {e}
        mean = sum(float(r["train_loss"]) for r in window) / len(window)
        assert mean == pytest.approx(rec["train_loss"], rel=1e-9)


def test_csv_logger_drops_rows_after_the_checkpoint_on_resume(tmp_path) -> None:
    """A run killed after logging epoch 2 but before its checkpoint resumes at epoch 2."""
    (tmp_path / "metrics.csv").write_text("epoch,step,train_loss\n0,4,2.0\n1,8,1.5\n2,12,1.2\n")
    (tmp_path / "steps.csv").write_text(
        "epoch,step,train_loss\n" + "".join(f"{(s - 1) // 4},{s},1.0\n" for s in range(2, 13, 2))
    )
    loop = SimpleNamespace(run=RunDir(tmp_path), epoch=2, global_step=8, meters=Meters())
    loop.current_genotype = None
    logger = CsvLogger(every_steps=2)
    logger.on_search_start(loop)
    assert [r["epoch"] for r in read_csv(tmp_path / "metrics.csv")] == ["0", "1"]
    assert [r["step"] for r in read_csv(tmp_path / "steps.csv")] == ["2", "4", "6", "8"]
    # a new column later on rewrites the file with the wider header, old rows kept
    logger.scalars("epoch", {"train_loss": 1.1, "new_metric": 3.0}, 12, 2)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["new_metric"] == "" and rows[2]["new_metric"] == "3.0"


class Recorder(CsvLogger):
    """The step points a logger emits, without a backend."""

    def open(self, s, resumed) -> None:
        self.points: list[tuple[int, dict[str, float]]] = []

    def scalars(self, kind, values, step, epoch) -> None:
        self.points.append((step, values))


def test_step_points_average_their_window_within_one_epoch(tmp_path) -> None:
    """Batches of 2 images with losses 1, 2, 3 | 4, 5, 6 (3 steps an epoch), a point every 2."""
    import torch

    loop = SimpleNamespace(run=RunDir(tmp_path), epoch=0, global_step=0, meters=Meters())
    loop.current_genotype, loop.w_lr = None, 0.1
    rec = Recorder(every_steps=2)
    rec.on_search_start(loop)
    labels = torch.tensor([0, 1])
    right, wrong = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    for step, loss in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], start=1):
        if step == 4:  # the loop resets the meters at each epoch's start
            loop.meters.reset()
            loop.epoch = 1
        logits = right if step % 2 else wrong
        loop.meters.add("train", torch.tensor(loss), logits, labels)
        loop.global_step = step
        rec.on_step_end(loop)
    # step 2: steps 1-2; step 4: epoch 1's first step only; step 6: steps 5-6
    assert [p[0] for p in rec.points] == [2, 4, 6]
    assert [p[1]["train_loss"] for p in rec.points] == [1.5, 4.0, 5.5]
    assert [p[1]["train_acc"] for p in rec.points] == [50.0, 0.0, 50.0]
    assert all(p[1]["lr"] == 0.1 and "val_loss" not in p[1] for p in rec.points)


# --------------------------------------------------------------------------- tensorboard
def test_tensorboard_logger_writes_scalars_histograms_images_text(logged_run) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, records = logged_run
    acc = EventAccumulator(
        str(run / "tensorboard"), size_guidance={"images": 0, "tensors": 0, "histograms": 0}
    )
    acc.Reload()
    tags = acc.Tags()
    for tag in ("step/train_loss", "step/val_acc", "step/lr", "epoch/train_loss", "epoch/val_acc"):
        assert tag in tags["scalars"], tags["scalars"]
    steps = [e.step for e in acc.Scalars("step/train_loss")]
    assert steps == [EVERY * (i + 1) for i in range(len(steps))] and len(steps) >= 4
    epoch_loss = acc.Scalars("epoch/val_loss")
    assert [e.value for e in epoch_loss] == pytest.approx([r["val_loss"] for r in records])
    assert tags["histograms"] == ["alpha/cell"]
    hist = acc.Histograms("alpha/cell")
    assert len(hist) == 2
    n_weights = sum(len(row) for row in records[-1]["alpha"]["cell"])  # 6 edges x 5 ops
    assert hist[-1].histogram_value.num == n_weights
    assert hist[-1].histogram_value.sum == pytest.approx(
        sum(map(sum, records[-1]["alpha"]["cell"])), abs=1e-3
    )
    assert "cell" in tags["images"] and "alpha_heatmap/cell" in tags["images"]
    assert len(acc.Images("alpha_heatmap/cell")) == 2
    png = acc.Images("cell")[0].encoded_image_string
    assert png.startswith(b"\x89PNG")
    text_tags = [t for t in tags["tensors"] if t.startswith("genotype")]
    assert text_tags, tags["tensors"]
    last = acc.Tensors(text_tags[0])[-1].tensor_proto.string_val[0].decode()
    expected = render_genotype(Genotype.from_json(records[-1]["genotype"]))
    assert last == "\n".join("    " + line for line in expected.splitlines())


# --------------------------------------------------------------------------- wandb
def test_wandb_logger_writes_an_offline_run(logged_run) -> None:
    pytest.importorskip("wandb")
    run, _ = logged_run
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, "one offline run, nothing synced"
    data = next(offline[0].glob("run-*.wandb")).read_bytes()
    for tag in (b"step/train_loss", b"epoch/val_acc", b"alpha/cell", b"genotype", b"cell"):
        assert tag in data, tag
    media = offline[0] / "files" / "media" / "images"
    assert any(p.name.startswith("cell_") for p in media.glob("*.png"))
    assert len(list((media / "alpha_heatmap").glob("cell_*.png"))) == 2  # one per epoch


# --------------------------------------------------------------------------- mlflow
def test_mlflow_logger_writes_a_file_store_run(logged_run) -> None:
    pytest.importorskip("mlflow")
    run, records = logged_run
    runs = [p for p in (run / "mlruns").glob("*/*") if (p / "meta.yaml").exists()]
    assert len(runs) == 1
    r = runs[0]
    lines = (r / "metrics" / "epoch" / "train_acc").read_text().split("\n")
    values = [float(line.split()[1]) for line in lines if line]
    assert values == pytest.approx([rec["train_acc"] for rec in records])
    step_lines = (r / "metrics" / "step" / "train_loss").read_text().split("\n")
    assert [int(line.split()[2]) for line in step_lines if line][:2] == [EVERY, 2 * EVERY]
    assert (r / "params" / "search.epochs").read_text() == "2"
    text = (r / "artifacts" / "genotype" / "epoch_002.txt").read_text()
    assert text == render_genotype(Genotype.from_json(records[-1]["genotype"]))
    assert (r / "artifacts" / "cell" / "epoch_000.png").read_bytes().startswith(b"\x89PNG")
    assert (
        json.loads((r / "artifacts" / "alpha" / "epoch_002.json").read_text())
        == records[-1]["alpha"]
    )
    assert "status: 3" in (r / "meta.yaml").read_text()  # FINISHED


# --------------------------------------------------------------------------- choosing
def test_logger_names_and_missing_packages_fail_clearly(monkeypatch) -> None:
    assert tuple(LOGGERS) == LOGGER_NAMES  # the CLI offers every registered logger
    with pytest.raises(
        ConfigError, match="unknown logger 'tensorbord'.*did you mean 'tensorboard'"
    ):
        check_loggers(["csv", "tensorbord"])
    with pytest.raises(ConfigError, match="listed twice"):
        check_loggers(["csv", "csv"])
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r'pip install "diffnas\[wandb\]"'):
        tiny_config("nb201", **{"log.loggers": "[csv, wandb]"})


def test_cli_logger_flag_adds_to_the_config(capsys) -> None:
    args = ["search", "--set", "log.loggers=[csv]", "--logger", "tensorboard", "--print-config"]
    args += ["--logger", "csv"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "loggers:\n  - csv\n  - tensorboard\n" in out
    with pytest.raises(SystemExit):
        main(["search", "--logger", "nope", "--print-config"])


def test_epoch_scalars_keep_numbers_and_flatten_mappings() -> None:
    from diffnas.callbacks.loggers import epoch_scalars

    out = epoch_scalars(
        {"epoch": 3, "a": 1, "b": True, "c": None, "d": {"x": 2.5, "y": "no"}, "alpha": {}}
    )
    assert out == {"a": 1.0, "d/x": 2.5}
    assert all(math.isfinite(v) for v in out.values())
