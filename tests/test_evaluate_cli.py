from __future__ import annotations

import json

import pytest

from diffnas.cli import main

TINY = ["--layers", "3", "--channels", "4", "--threads", "1", "--no-progress"]
TINY += ["--set", "data.subset=0.2", "--set", "data.batch_size=32"]


def test_help_on_evaluate_commands(capsys) -> None:
    for cmd in ("train", "eval", "profile", "export"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
    assert "--imagenet" in capsys.readouterr().out


def test_train_eval_profile_export_from_cli(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "DARTS_V2", "--epochs", "1", "--out", str(run), *TINY]) == 0
    assert "test" in capsys.readouterr().out
    assert main(["eval", str(run)]) == 0
    assert "pytorch: top-1" in capsys.readouterr().out
    report = tmp_path / "profile.json"
    argv = ["profile", str(run), "DARTS_V1", "--channels", "8", "--layers", "5"]
    assert main(argv) == 2  # a trained run's network is fixed
    assert "can only be chosen for a genotype" in capsys.readouterr().err
    argv = ["profile", str(run), "--batch-sizes", "1,2", "--repeats", "2", "--json", str(report)]
    assert main(argv) == 0
    (row,) = json.loads(report.read_text())
    assert row["check"]["ok"] and row["params"] > 0 and set(row["latency_ms"]) == {"1", "2"}
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert "max |difference| vs PyTorch" in capsys.readouterr().out
    assert main(["eval", str(run), "--backend", "torchscript"]) == 0
    assert "torchscript (model.torchscript.pt): top-1" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # already finished


def test_profile_imagenet_mobile_setting(capsys) -> None:
    assert main(["profile", "DARTS_V2", "--imagenet", "--batch-sizes", ""]) == 0
    out = capsys.readouterr().out
    assert "14 cells, C=48, 3x224x224 input, 1000 classes" in out
    assert "4.719" in out and "529.9" in out  # params (M), mult-adds (M)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--no-progress"], "no genotype to train"),
        (["train", "DARTS_V3"], "is not a genotype file, run directory, zoo name"),
        (["train", "DARTS_V2", "--set", "train.epoch=3"], "did you mean 'epochs'"),
        (["profile", "NB201_OPTIMUM", "--imagenet"], "no 'imagenet' network"),
        (["profile", "DARTS_V2", "--batch-sizes", "1,x"], "--batch-sizes must be integers"),
        (["eval", "/nonexistent/run"], "does not exist"),
        (["export", "DARTS_V2", "--format", "tflite"], "unknown export format 'tflite'"),
    ],
)
def test_bad_input_gives_one_line_error(capsys, argv, message) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
