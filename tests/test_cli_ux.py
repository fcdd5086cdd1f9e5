"""The CLI as a new user meets it: every --help and README example runs, --help is fast, the
lean install names its extras, flags agree across commands, epoch lines and lookups are labelled.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from diffnas.cli import build_parser, main
from diffnas.errors import ConfigError, MissingExtra

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


# --------------------------------------------------------------------------- examples
def _subparsers(parser: argparse.ArgumentParser, prefix: list[str]):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, [*prefix, name])


def _example_lines(text: str) -> list[str]:
    """`diffnas ...` command lines of a help epilog or a README code block (continuations
    joined, comments and `&&` chains split)."""
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if "diffnas " not in line or line.startswith(("import", "#", "result")):
            continue
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith("diffnas "):
                out.append(shlex.split(part, comments=True)[1:])
    return out


def help_examples() -> list[list[str]]:
    examples = []
    for prefix, parser in _subparsers(build_parser(), []):
        examples += _example_lines((parser.description or "") + "\n" + (parser.epilog or ""))
        for action in parser._actions:  # a run option's own "e.g. --set ..." must work too
            match = re.search(r"e\.g\. (--set .*)", action.help or "")
            if match and prefix[0] in RUN_CONFIG:
                examples.append([*prefix, *shlex.split(match.group(1))])
    return examples


def readme_examples() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [argv for block in blocks for argv in _example_lines(block)]


RUN_CONFIG = {"search", "train", "netsearch"}  # resolved for real with --print-config


def check_example(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)  # SystemExit (status 2) on an unknown flag or bad value
    assert getattr(args, "func", None) is not None, argv
    if argv[0] in RUN_CONFIG and not getattr(args, "resume", None):
        assert main([*argv, "--print-config"]) == 0, (argv, capsys.readouterr().err)
    elif argv[0] in ("zoo",) or (argv[0] == "lookup" and argv[1].startswith("NB201")):
        assert main(argv) == 0, (argv, capsys.readouterr().err)


def test_every_help_example_parses_and_resolves(capsys) -> None:
    examples = help_examples()
    commands = {a[0] for a in examples}
    # the examples cover the main commands (a deleted epilog would pass vacuously otherwise)
    assert {"search", "train", "profile", "export", "netsearch", "bench", "lookup"} <= commands
    assert ["train", "--set", "train.lr=0.05", "--set", "data.subset=0.1"] in examples
    for argv in examples:
        check_example(argv, capsys)


def test_every_readme_command_parses_and_resolves(capsys) -> None:
    examples = readme_examples()
    assert ["search", "--epochs", "10"] in examples  # the quick start's own command
    assert len(examples) >= 15
    for argv in examples:
        check_example(argv, capsys)


def test_readme_setup_commands_install_what_ci_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0 && pip install -e . && diffnas search" in readme
    assert 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest' in readme
    assert ci.index("torch==2.13.0") < ci.index('-e ".[dev]"')


# --------------------------------------------------------------------------- help speed
def test_help_does_not_import_torch_and_is_fast() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from diffnas.cli import build_parser\n"
        "p = build_parser()\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    p.format_help()\n"
        "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))\n"
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    wall = time.monotonic() - start
    assert out.stdout.strip() == "[]"
    assert wall < 5.0  # 0.3 s when idle; the bound only catches an eager torch import (3-5 s)


# --------------------------------------------------------------------------- lean install
def test_core_dependencies_are_lean_and_extras_complete() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=\[]", d)[0] for d in project["dependencies"]}
    assert core == {"torch", "numpy", "pyyaml", "rich", "pillow"}
    extras = project["optional-dependencies"]
    assert {"export", "report", "netsearch", "nb201", "ray", "all", "dev"} <= set(extras)
    assert "scikit-learn" not in str(project)


def test_digits_ship_in_the_package_with_the_same_split() -> None:
    from diffnas.data.datasets import load_digits

    ds = load_digits()
    # sha256 of images + labels of each split, computed with the scikit-learn loader the
    # split was defined on (load_digits().images * 16 as uint8, the fixed 80/20 split)
    reference = {
        "train": "862ae8fdb9fd9a6b9e1e045ef19dcb6d0697f9c0f15081b4d6561d86070e660d",
        "test": "ee4b81579ef2a1cf41e81b02e391670a22adb03ed28a98ac105ee60c5975089c",
    }
    for name, split in (("train", ds.train), ("test", ds.test)):
        raw = split.images.numpy().tobytes() + split.labels.numpy().tobytes()
        assert hashlib.sha256(raw).hexdigest() == reference[name]
    assert (SRC / "diffnas" / "data" / "DIGITS_LICENSE.txt").read_text().count("BSD") >= 1


def test_digits_match_scikit_learn_where_installed() -> None:
    sk = pytest.importorskip("sklearn.datasets")
    import numpy as np

    from diffnas.data.datasets import load_digits

    ds = load_digits()
    data = sk.load_digits()
    images = (data.images * 16).clip(0, 255).astype(np.uint8)
    theirs = sorted(img.tobytes() + bytes([int(t)]) for img, t in zip(images, data.target))
    ours = sorted(
        img[0].numpy().tobytes() + bytes([int(t)])
        for split in (ds.train, ds.test)
        for img, t in zip(split.images, split.labels)
    )
    assert ours == theirs


@pytest.mark.parametrize(
    "module,call,extra",
    [
        ("matplotlib", lambda tmp: __import__("diffnas.report").report.write_report(tmp), "report"),
        (
            "pymoo",
            lambda tmp: __import__(
                "diffnas.network_search.evolution"
            ).network_search.evolution.resume_netsearch(tmp),
            "netsearch",
        ),
        (
            "onnxruntime",
            lambda tmp: __import__("diffnas.retrain.export").retrain.export.export_model(
                None, (1, 8, 8), tmp
            ),
            "export",
        ),
    ],
)
def test_missing_extra_names_the_pip_command(monkeypatch, tmp_path, module, call, extra) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    with pytest.raises(MissingExtra, match=re.escape(f'pip install "diffnas[{extra}]"')):
        call(tmp_path)


def test_export_cli_without_onnx_says_which_extra(monkeypatch, tmp_path, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    argv = ["export", "NB201_ALL_SKIP", "--channels", "4", "--layers", "1", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert 'pip install "diffnas[export]"' in capsys.readouterr().err


# --------------------------------------------------------------------------- flags
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_device_flag_accepts_every_torch_device(device) -> None:
    for cmd in (["search"], ["train"], ["profile", "DARTS_V2"], ["eval", "RUN"]):
        assert build_parser().parse_args([*cmd, "--device", device]).device == device


def test_device_flag_rejects_unknown_and_absent_devices(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--device", "gpu"])
    assert "auto, cpu, cuda, cuda:N or mps" in capsys.readouterr().err
    import torch

    from diffnas.utils import resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda:1")


def test_search_has_the_size_flags_of_train(capsys) -> None:
    argv = ["search", "--channels", "6", "--layers", "3", "--batch-size", "24", "--print-config"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "channels: 6" in out and "layers: 3" in out and "batch_size: 24" in out


def test_threads_default_is_the_cores_everywhere(tmp_path) -> None:
    from diffnas.bench import quality

    parser = build_parser()
    for argv in (["search"], ["train"], ["bench", "speed"], ["bench", "quality"]):
        assert parser.parse_args(argv).threads is None  # one rule: the cores, shared
    methods = [quality.MethodSpec.parse("darts")]
    assert quality.plan(methods, [0], tmp_path, None, cores=8).threads == 1  # 8 jobs
    assert quality.plan(methods, [0], tmp_path, None, jobs=2, cores=8).threads == 4


def test_positional_arguments_have_help() -> None:
    for prefix, parser in _subparsers(build_parser(), []):
        for action in parser._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"diffnas {' '.join(prefix)} {action.metavar}: no help"


# --------------------------------------------------------------------------- output
def _loop(epoch: int, epochs: int = 20) -> SimpleNamespace:
    return SimpleNamespace(epoch=epoch, epochs=epochs, elapsed_s=8.0, global_step=0)


def test_epoch_lines_without_a_bar_label_their_times(capsys) -> None:
    from diffnas.callbacks.progress import ProgressBar

    bar = ProgressBar(bar=False)
    bar.on_search_start(_loop(2))  # resumed after 2 epochs, 8 s
    bar.on_epoch_end(_loop(3), {"epoch": 2, "train_acc": 81.25, "val_acc": 78.0, "time_s": 12.4})
    bar.on_search_end(_loop(3))
    assert capsys.readouterr().out == "epoch 3/20  train 81.2%  val 78.0%  time 4s (total 12s)\n"


def test_resuming_a_finished_run_says_so(capsys) -> None:
    from diffnas.callbacks.progress import ProgressBar

    ProgressBar(bar=False).on_search_start(_loop(20))
    out = capsys.readouterr().out
    assert "all 20 epochs are already done" in out and "21/20" not in out


def test_no_progress_keeps_one_line_per_epoch(tmp_path, capsys) -> None:
    argv = ["search", "--space", "nb201", "--epochs", "2", "--channels", "4", "--layers", "1"]
    argv += ["--batch-size", "16", "--set", "data.subset=0.05", "--threads", "1"]
    argv += ["--set", "log.lookup=false", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch ")]
    assert [x.split()[1] for x in lines] == ["1/2", "2/2"]
    assert all("(total " in x for x in lines)


# --------------------------------------------------------------------------- lookups
def test_lookup_labels_each_source(monkeypatch) -> None:
    from diffnas.commands.lookup import lookup_lines
    from diffnas.nasbench import nb201

    if nb201.available():
        lines = lookup_lines("NB201_OPTIMUM")
        assert any("94.37 %" in x and "published mean" in x for x in lines)
        assert any("93.99 %" in x and "analog-nasbench table" in x for x in lines)
    monkeypatch.setattr(nb201, "available", lambda: False)
    lines = lookup_lines("NB201_OPTIMUM")
    assert any("94.37 %" in x and "published mean" in x for x in lines)
    assert any('pip install "diffnas[nb201]"' in x for x in lines)


OPTIMUM = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def _tiny_nb201_file(path: Path) -> None:
    """A 2-cell NAS-Bench-201 file made with the API's own classes: per cell, the `cifar10`
    setting with 2 epochs and two seeds (12- and 200-epoch slots alike)."""
    api = pytest.importorskip("nas_201_api")
    import torch

    final = {OPTIMUM: (94.00, 94.74), ALL_SKIP: (60.10, 61.00)}  # test acc. of seeds 777, 888
    arch2infos = {}
    for index, arch in enumerate(final):
        results = {}
        for hp in ("less", "full"):
            ar = api.ArchResults(index, arch)
            for seed, acc in zip((777, 888), final[arch]):
                config = {"arch_str": arch, "channel": 16, "num_cells": 5, "class_num": 10}
                rc = api.ResultsCount("cifar10", None, {0: 50.0, 1: 90.0}, {0: 1.0, 1: 0.3},
                                      0.5, 80.0, config, seed, 2, None)  # fmt: skip
                rc.update_eval({"ori-test@0": 40.0, "ori-test@1": acc},
                               {"ori-test@0": 1.5, "ori-test@1": 0.2},
                               {"ori-test@0": 1.0, "ori-test@1": 1.0})  # fmt: skip
                ar.update("cifar10", seed, rc)
            results[hp] = ar.state_dict()
        arch2infos[index] = results
    data = {"meta_archs": list(final), "arch2infos": arch2infos, "evaluated_indexes": [0, 1]}
    torch.save(data, path)


def test_lookup_reads_an_official_nas_bench_201_file(tmp_path, monkeypatch) -> None:
    from diffnas.commands.lookup import lookup_lines
    from diffnas.nasbench import nb201

    path = tmp_path / "NAS-Bench-201-tiny.pth"
    _tiny_nb201_file(path)
    lines = lookup_lines("NB201_OPTIMUM", str(path))
    # the mean of the two seeds' final test accuracies, by hand: (94.00 + 94.74) / 2
    assert any("94.37 %" in x and "NAS-Bench-201 file NAS-Bench-201-tiny.pth" in x for x in lines)
    monkeypatch.setenv(nb201.OFFICIAL_ENV, str(path))
    assert any("60.55 %" in x and "NAS-Bench-201 file" in x for x in lookup_lines(ALL_SKIP))
    with pytest.raises(nb201.DatasetError, match="is not in the NAS-Bench-201 file"):
        lookup_lines("NB201_ALL_CONV3")
    with pytest.raises(nb201.DatasetError, match="does not exist"):
        lookup_lines("NB201_OPTIMUM", str(tmp_path / "missing.pth"))


def test_what_selects_uses_a_held_out_split() -> None:
    # (training's test split once at the end: test_train.py and test_netsearch.py)
    from diffnas.config import DataConfig, NetsearchConfig
    from diffnas.network_search.proxy import proxy_config
    from diffnas.retrain.config import TrainLoopConfig

    proxy = proxy_config(NetsearchConfig(), DataConfig(), 0, 0, "cpu").train
    assert proxy.holdout > 0 and not proxy.final_test  # netsearch selects on val_acc only
    assert TrainLoopConfig().final_test


def test_profile_never_cuts_a_name(tmp_path, monkeypatch, capsys) -> None:
    from diffnas.spaces import zoo

    name = "a_rather_long_genotype_name_from_a_file"
    genotype = zoo.get("NB201_ALL_SKIP")
    path = tmp_path / "g.json"
    genotype.save(path)
    path.write_text(path.read_text().replace('"NB201_ALL_SKIP"', f'"{name}"'))
    monkeypatch.setenv("COLUMNS", "70")  # a narrow terminal: the column wraps, it is not cut
    argv = ["profile", str(path), "--channels", "4", "--layers", "1", "--batch-sizes", ""]
    assert main([*argv, "--threads", "1"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert f"[1/1] {name}: counting parameters" in captured.err.replace("\n", " ")
    cells = "".join(line.split("│")[1].strip() for line in out.splitlines() if "│" in line)
    assert name in cells and "…" not in out


def test_search_lookup_uses_the_official_file_when_named(tmp_path, monkeypatch) -> None:
    from diffnas.callbacks.lookup import Nb201Lookup
    from diffnas.callbacks.progress import epoch_line
    from diffnas.nasbench import nb201
    from diffnas.spaces import zoo

    path = tmp_path / "NAS-Bench-201-tiny.pth"
    _tiny_nb201_file(path)
    monkeypatch.setenv(nb201.OFFICIAL_ENV, str(path))
    monkeypatch.setattr(nb201, "available", lambda: False)  # the file alone suffices
    searcher = SimpleNamespace(current_genotype=zoo.get("NB201_OPTIMUM"), derivation=None)
    metrics = {"epoch": 0, "train_acc": 50.0, "time_s": 3.0}
    Nb201Lookup().collect(searcher, metrics)
    assert metrics["nb201_file_acc"] == pytest.approx(94.37) and "lookup_acc" not in metrics
    assert "NB201 file 94.37%" in epoch_line(metrics, 1, 3.0)


def test_first_imagefolder_load_says_it_decodes_and_where_it_caches(tmp_path, capsys) -> None:
    import numpy as np
    from PIL import Image

    from diffnas.data.datasets import load_dataset

    for split in ("train", "test"):
        (tmp_path / "tree" / split / "ant").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "tree" / split / "ant/0.png")
    cache = tmp_path / "cache"
    load_dataset("imagefolder", str(tmp_path / "tree"), str(cache))
    err = capsys.readouterr().err
    (npz,) = cache.glob("*.npz")
    assert "decoding the images of" in err and f"cached in {npz}" in err
    load_dataset("imagefolder", str(tmp_path / "tree"), str(cache))  # from the cache: silent
    assert capsys.readouterr().err == ""


def test_export_says_which_format_it_is_exporting(tmp_path, capsys) -> None:
    argv = ["export", "NB201_ALL_SKIP", "--channels", "4", "--layers", "1"]
    argv += ["--format", "torchscript", "--out", str(tmp_path), "--threads", "1"]
    assert main(argv) == 0
    assert "exporting torchscript to" in capsys.readouterr().err
