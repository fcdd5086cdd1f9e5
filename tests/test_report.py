"""`diffnas report`: a self-contained HTML page from a real (tiny) run, finished or not."""

from __future__ import annotations

import base64
import json
import re

import pytest

import diffnas
from diffnas.callbacks.base import Callback
from diffnas.cli import main
from diffnas.config import dump_config
from diffnas.nasbench import nb201
from diffnas.report import collect_series, write_report
from diffnas.run import RunDir
from diffnas.spaces.nb201 import to_nb201_string
from diffnas.spaces.render import render_genotype

from .conftest import Kill, tiny_config
from .test_rdarts import rdarts_config

IMG = re.compile(r"<img alt='([^']*)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>")


class Extra(Callback):
    """Another method's metrics: a scalar and a mapping of scalars, unknown to the report."""

    name = "extra"

    def collect(self, s, metrics) -> None:
        metrics["my_temperature"] = 10.0 - s.epoch
        metrics["my_edge_scores"] = {"a": 0.5 + s.epoch, "b": 0.25}


def images(text: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(data) for alt, data in IMG.findall(text)}


def test_report_of_a_finished_nb201_run(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    result = diffnas.search(tiny_config("nb201", epochs=2), out=run, callbacks=[Extra()])
    assert main(["report", str(run)]) == 0
    assert "report written to" in capsys.readouterr().out
    text = (run / "report.html").read_text()
    imgs = images(text)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in imgs.values())
    for alt in ("Loss", "Accuracy", "Share of parameter-free ops in the derived genotype"):
        assert alt in imgs
    assert "alpha cell" in imgs  # the op-weight evolution of the run's α key
    assert "alpha cell per edge" in imgs and "derived cells" in imgs  # each edge; the cell drawn
    assert "my_temperature" in imgs and "my_edge_scores" in imgs  # generic: no edit needed
    if nb201.available():
        assert "NAS-Bench-201 lookup accuracy" in imgs
    assert to_nb201_string(result.genotype) in text  # the genotype, named in text
    assert "final genotype" in text and "finished (2 epochs)" in text
    assert "http" not in text.replace("http-equiv", "")  # self-contained: nothing to fetch


def test_report_of_a_five_cell_rdarts_run(tmp_path) -> None:
    run = tmp_path / "run"
    result = diffnas.search(rdarts_config(epochs=1), out=run)
    path = write_report(run)
    text = path.read_text()
    imgs = images(text)
    for alt in (
        "RDARTS λ",
        "RDARTS expected parameters per cell (own width)",
        "alpha cell4",
        "alpha cell4 per edge",
        "derived cells",
    ):
        assert alt in imgs, sorted(imgs)
    for line in render_genotype(result.genotype).splitlines():
        assert line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in text
    assert "normal cell (stage 2)" in text and "reduce cell (reduction 1)" in text


def test_report_of_a_run_in_progress(tmp_path) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        diffnas.search(tiny_config("nb201", epochs=3), out=run, callbacks=[Kill(after_epoch=0)])
    with open(RunDir(run).metrics_path, "a") as fh:
        fh.write('{"epoch": 1, "train_lo')  # a line cut by the kill
    text = write_report(run).read_text()
    assert "in progress or stopped: 1/3 epochs" in text
    assert "genotype of the last finished epoch" in text
    assert "Loss" in images(text)

    # a run whose first epoch has not finished: no metrics, no genotype, still a page
    cfg = tiny_config("nb201", epochs=3)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text(dump_config(cfg))
    text = write_report(fresh, tmp_path / "out.html").read_text()
    assert "No epoch has finished yet" in text and "No genotype yet" in text
    assert not images(text)


def test_collect_series_tolerates_gaps_and_odd_values() -> None:
    records = [
        {"epoch": 0, "train_loss": 2.0, "val_loss": None, "x": {"a": 1, "b": "text"}, "flag": True},
        {"epoch": 1, "train_loss": 1.5, "val_loss": 1.7, "y": 3, "genotype": {}, "alpha": {}},
    ]
    series = {s.key: s for s in collect_series(records)}
    loss = series["train_loss"].lines
    assert loss["train_loss"] == [2.0, 1.5]
    assert loss["val_loss"][1] == 1.7 and loss["val_loss"][0] != loss["val_loss"][0]  # NaN gap
    assert list(series["x"].lines) == ["a"]  # non-numeric inner values are left out
    assert series["y"].lines["y"][1] == 3.0
    assert "flag" not in series and "genotype" not in series and "alpha" not in series
    json.dumps([s.lines for s in series.values()])  # plain data
