"""Hostile and careless inputs (issue 20, items 9 and 10): each gives exit status 2 and one
line naming the key, value or file, never a traceback and never a silent wrong run."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from diffnas.cli import main
from diffnas.config import Config, SearchConfig, SpaceConfig, load_config
from diffnas.errors import CheckpointError, ConfigError, DatasetError, GenotypeError
from diffnas.spaces import load_genotype
from diffnas.spaces.genotype import Genotype

from .conftest import tiny_config


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI in-process; assert status 2 and a one-line message holding `needles`."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.startswith("error:") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------- item 9: values
@pytest.mark.parametrize(
    "override,needle",
    [
        ("space.layers=0", "space.layers"),  # trained a supernet without cells (rc 0)
        ("space.channels=0", "space.channels"),
        ("space.channels=-3", "space.channels"),
        ("space.nodes=0", "space.nodes"),
        ("search.w_lr=-0.1", "search.w_lr"),
        ("search.arch_betas=[0.5]", "search.arch_betas"),
        ("supernet.partial_channels=64", "supernet.partial_channels"),  # > C=16
        ("search.epochs=100000000000000000000000", "search.epochs"),
        ("space.channels=1000000000000", "space.channels"),  # overflowed torch's sizes
        ("space.layers=100000", "space.layers"),  # modules alone would fill the memory
        ("space.nodes=40", "mixed edges"),
        ("search.epochs=20000", "search.epochs"),
        ("search.warmup_epochs=50", "search.warmup_epochs"),  # = epochs: no α step
        ("search.arch_lr=1e10", "search.arch_lr"),
        ("search.w_lr=.nan", "search.w_lr"),
        ("seed=-1", "seed"),
        ("device=cuda:x", "device"),
    ],
)
def test_out_of_range_values_are_refused(capsys, tmp_path, override, needle) -> None:
    out = tmp_path / "run"
    argv = ["search", "--set", override, "--out", str(out), "--no-progress"]
    one_line_error(capsys, argv, needle)
    assert not out.exists()


def test_a_section_that_is_not_a_mapping_is_not_dropped_by_a_flag(tmp_path, capsys) -> None:
    layer = tmp_path / "layer.yaml"
    layer.write_text("space: [darts, 16]\n")
    with pytest.raises(ConfigError, match="'space' is \\['darts', 16\\]"):
        load_config(["darts", str(layer)], ["space.channels=8"])
    # a part given by name cannot take a parameter override without its name
    with pytest.raises(ConfigError, match="search.relaxation"):
        load_config(["darts"], ["search.relaxation.tau_max=5"])
    one_line_error(capsys, ["search", "-c", str(layer), "--set", "space.channels=8"], "'space'")


def test_a_config_built_in_python_is_validated(tmp_path) -> None:
    import diffnas

    bad = Config(space=SpaceConfig(layers=0))
    with pytest.raises(ConfigError, match="space.layers"):
        diffnas.search(bad, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    wrong_type = Config(search=SearchConfig(epochs="3"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="search.epochs: expected an integer"):
        diffnas.search(wrong_type, out=tmp_path / "run2")
    from diffnas.search import Searcher

    cfg = tiny_config("nb201", epochs=1)
    cfg.search.arch_betas = [0.9]  # changed after loading
    with pytest.raises(ConfigError, match="arch_betas"):
        Searcher(cfg)


# --------------------------------------------------------------------------- item 9: genotypes
def _darts(cell_edges: list[list], concat: list[int] | None = None) -> dict:
    normal = {"type": "normal", "stage": None, "edges": cell_edges}
    if concat is not None:
        normal["concat"] = concat
    reduce = {
        "type": "reduce",
        "stage": None,
        "edges": [[op, s, d] for op, s, d in _FOUR_NODES],
    }
    return {"space": "darts", "cells": [normal, reduce]}


_FOUR_NODES = [
    ("sep_conv_3x3", 0, 2),
    ("sep_conv_3x3", 1, 2),
    ("skip_connect", 0, 3),
    ("sep_conv_3x3", 1, 3),
    ("sep_conv_3x3", 1, 4),
    ("skip_connect", 0, 4),
    ("skip_connect", 0, 5),
    ("dil_conv_3x3", 2, 5),
]


def _check(raw: dict) -> None:
    from diffnas.spaces import space_for

    space_for(Genotype.from_json(raw))


def test_darts_genotype_shape_is_checked() -> None:
    four = [list(e) for e in _FOUR_NODES]
    _check(_darts(four))  # the DARTS_V2 normal cell: fine
    with pytest.raises(GenotypeError, match="3 intermediate nodes"):
        _check(_darts(four[:6]))
    five = [*four, ["sep_conv_3x3", 0, 6], ["sep_conv_3x3", 3, 6]]
    with pytest.raises(GenotypeError, match="5 intermediate nodes"):
        _check(_darts(five))
    _check(_darts(five, concat=[2, 3, 4, 5, 6]))  # a space.nodes=5 search's cell
    with pytest.raises(GenotypeError, match="node 3 has 1 input"):
        _check(_darts(four[:2] + four[3:]))
    with pytest.raises(GenotypeError, match="node 2 has the edge from node 0 twice"):
        _check(_darts([four[0], ["max_pool_3x3", 0, 2], *four[2:]]))
    with pytest.raises(GenotypeError, match="node 4 has 3 input"):
        _check(_darts([*four[:6], ["avg_pool_3x3", 2, 4], *four[6:]]))
    with pytest.raises(GenotypeError, match="order of their destination"):
        _check(_darts(four[2:] + four[:2]))
    # FairDARTS's threshold derivation keeps single-input nodes; its cells carry concat
    _check(_darts(four[:2] + four[3:], concat=[2, 3, 4, 5]))


def test_genotype_json_values_are_checked() -> None:
    raw = _darts([list(e) for e in _FOUR_NODES])
    raw["cells"][0]["edges"][0] = ["sep_conv_3x3", 0, 2, "half"]
    with pytest.raises(GenotypeError, match="skip fraction must be a number"):
        Genotype.from_json(raw)
    with pytest.raises(GenotypeError, match="'name' must be a string"):
        Genotype.from_json({**_darts([list(e) for e in _FOUR_NODES]), "name": [1]})
    with pytest.raises(GenotypeError, match="op~input"):
        load_genotype("|nor_conv_3x3~²|+|none~0|none~1|+|none~0|none~1|none~2|")


# --------------------------------------------------------------------------- item 10: files
def test_unreadable_config_and_genotype_files(tmp_path, capsys) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    one_line_error(capsys, ["search", "-c", str(binary), "--print-config"], "bin.yaml", "UTF-8")
    one_line_error(capsys, ["search", "-c", str(tmp_path), "--print-config"], "directory")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("space: {name: darts\n  channels: [\n")
    one_line_error(capsys, ["search", "-c", str(bad_yaml), "--print-config"], "not valid YAML")
    gbin = tmp_path / "g.json"
    gbin.write_bytes(b"\xff\xfe\x00" * 50)
    one_line_error(capsys, ["profile", str(gbin)], "g.json", "UTF-8")
    gdir = tmp_path / "gdir.json"
    gdir.mkdir()
    one_line_error(capsys, ["profile", str(gdir)], "gdir.json")


def test_out_is_a_file(tmp_path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = ["search", "--epochs", "1", "--no-progress"]
    one_line_error(capsys, [*argv, "--out", str(afile)], "afile", "not a directory")
    one_line_error(capsys, [*argv, "--out", str(afile / "run")], "Not a directory")
    assert afile.read_text() == "x"


@pytest.mark.parametrize(
    "code,needle",
    [(errno.ENOSPC, "free disk space"), (errno.EACCES, "you may write to")],
)
def test_full_disk_and_read_only_directory(tmp_path, capsys, monkeypatch, code, needle) -> None:
    # tests run as root, where chmod does not stop writes: the writer fails as the OS would
    import diffnas.utils

    real = diffnas.utils.atomic_write_bytes

    def failing(path: Path, data: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(diffnas.utils, "atomic_write_bytes", failing)
    out = tmp_path / "run"
    argv = ["search", "--epochs", "1", "--out", str(out), "--no-progress"]
    # the first file a run writes is its marker (.diffnas), then config.yaml
    one_line_error(capsys, argv, str(out), needle)
    monkeypatch.setattr(diffnas.utils, "atomic_write_bytes", real)


def test_decompression_bomb_image(tmp_path, monkeypatch) -> None:
    from PIL import Image

    from diffnas.data.datasets import load_dataset

    for split in ("train", "test"):
        (tmp_path / "tree" / split / "a").mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "tree" / split / "a" / "x.png")
    # a 200-megapixel file is slow to make: lower PIL's limit below this 1600-pixel image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DatasetError, match="too large to decode safely"):
        load_dataset("imagefolder", str(tmp_path / "tree"), str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "payload,needle",
    [
        ([1, 2, 3], "holds a list"),
        ({b"data": "abc", b"labels": [1]}, "32x32 RGB"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "2 images but 1 labels"),
    ],
)
def test_cifar_pickle_that_is_not_the_official_format(tmp_path, payload, needle) -> None:
    from diffnas.data.datasets import load_dataset

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(pickle.dumps(payload))
    with pytest.raises(DatasetError, match=needle):
        load_dataset("cifar10", str(tmp_path))


def test_resume_with_a_changed_space_is_one_short_line(tmp_path, capsys) -> None:
    from diffnas.config import dump_config
    from diffnas.run import RunDir
    from diffnas.search import Searcher

    cfg = tiny_config("nb201", epochs=2, **{"data.subset": "0.1"})
    run = RunDir.create(cfg, tmp_path / "run")
    run.save_checkpoint(Searcher(cfg).state_dict())  # a checkpoint of the C=4 supernet
    run.release()  # the lock: this test stands for the process that made the run
    cfg.space.channels = 8  # the user edits the run's config.yaml
    run.config_path.write_text(dump_config(cfg))
    # refused by the resume check, which lists the changed keys (before any state is loaded)
    err = one_line_error(capsys, ["search", "--resume", str(run.path)], "space.channels: 4 -> 8")
    assert len(err) < 600
    # a checkpoint that does not fit the supernet all the same (e.g. another diffnas version):
    # one short line, not PyTorch's list of every key
    state = Searcher(tiny_config("nb201", epochs=2, **{"data.subset": "0.1"})).state_dict()
    with pytest.raises(CheckpointError, match="of another shape") as info:
        Searcher(cfg).load_state_dict(state)
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


def test_one_line_for_multi_line_messages() -> None:
    # YAML errors come with a drawing of the bad spot on several lines
    with pytest.raises(ConfigError) as exc:
        load_config([], ["space={a: [}"])
    assert "\n" not in str(exc.value)
