from __future__ import annotations

import pytest

from diffnas.cli import main


def test_help_on_every_command(capsys) -> None:
    for cmd in ([], ["search"], ["derive"], ["lookup"], ["zoo"], ["report"]):
        with pytest.raises(SystemExit) as exc:
            main([*cmd, "--help"])
        assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["search", "--config", "dartz"], "neither a config file nor a preset"),
        (["search", "--set", "search.relaxation=softmx"], "did you mean 'softmax'"),
        (["search", "--dataset", "cifar10", "--data-root", "/nonexistent/dir"], "does not exist"),
        (["lookup", "|nor_conv_3x3~0|"], "node groups"),
        (["derive", "/nonexistent/run"], "does not exist"),
        (["zoo", "DARTS_V3"], "did you mean"),
    ],
)
def test_bad_input_gives_one_line_error(capsys, argv, message) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_search_and_derive_from_cli(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = [
        "search",
        "--space",
        "nb201",
        "--epochs",
        "1",
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "space.channels=4",
        "--set",
        "space.layers=1",
        "--set",
        "data.subset=0.2",
    ]
    assert main(argv) == 0
    assert "cell:" in capsys.readouterr().out
    assert main(["derive", str(run), "--out", str(tmp_path / "g.json")]) == 0
    assert (tmp_path / "g.json").exists()
    assert main(["zoo", "DARTS_V2", "--out", str(tmp_path / "z.json")]) == 0
