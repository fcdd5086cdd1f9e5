"""Property-based fuzzing of what users type and write (issue 20): config YAML, `--set`
values, genotype JSON and NB201 strings.

Each example runs the CLI in-process (`main(argv)`) in a temporary directory and must end
with status 0 (a valid input) or status 2 with one line that starts with `error:` and names
the offending key or value; never a traceback, and nothing written outside the temporary
directory (an audit hook records every file the process opens for writing, creates,
renames or removes). Bounded: 20 derandomized examples per property, no deadline, no
example database, so the suite stays within a few seconds; DIFFNAS_FUZZ_EXAMPLES=N runs N
fresh random examples per property instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffnas.cli import main
from diffnas.config import Config, to_dict

# DIFFNAS_FUZZ_EXAMPLES=500 explores further, with fresh random examples each run
DEEP = os.environ.get("DIFFNAS_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(DEEP) if DEEP else 20,
    deadline=None,
    database=None,
    derandomize=not DEEP,  # CI: the same examples on every run, so failures reproduce
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------- write audit
class _Writes:
    """Paths the process writes, creates, renames or removes while `active`."""

    active = False
    paths: ClassVar[list[str]] = []

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if not cls.active:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writing and isinstance(path, str | bytes | os.PathLike):
                cls.paths.append(os.fsdecode(path))
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree"):
            if isinstance(args[0], str | bytes | os.PathLike):
                cls.paths.append(os.fsdecode(args[0]))
        elif event in ("os.rename", "os.replace", "os.symlink", "os.link"):
            cls.paths += [os.fsdecode(a) for a in args[:2] if isinstance(a, str | bytes)]


sys.addaudithook(_Writes.hook)  # hooks cannot be removed: it only records while active


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Each example runs in tmp_path (the run's directory, were it to make one)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(capsys, argv: list[str], names: list[str]) -> None:
    """Status 0, or 2 with one `error:` line holding one of `names`; never a traceback and
    no write outside the working directory."""
    root = os.path.realpath(os.getcwd())
    _Writes.paths = []
    _Writes.active = True
    try:
        code = main(argv)
    finally:
        _Writes.active = False
    err = capsys.readouterr().err.strip()
    outside = [
        p
        for p in _Writes.paths
        if not os.path.realpath(p).startswith(root)
        and not p.endswith(".pyc")  # bytecode caches of modules imported for the first time
        and not p.startswith("/dev/")
    ]
    assert not outside, f"{argv} wrote outside its directory: {sorted(set(outside))[:5]}"
    assert "Traceback" not in err, err
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert err.startswith("error:") and "\n" not in err, err
        lowered = err.lower()
        assert any(n and n.lower() in lowered for n in names), (names, err)


# --------------------------------------------------------------------------- strategies
def _flat_keys(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, dict):
        out = []
        for k, v in data.items():
            out += _flat_keys(v, f"{prefix}.{k}" if prefix else k)
        return out
    return [prefix]


KEYS = _flat_keys(to_dict(Config()))
SECTIONS = sorted({k.split(".")[0] for k in KEYS if "." in k})
key_paths = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(SECTIONS),
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(SECTIONS), st.from_regex(r"[a-z_]{1,8}", fullmatch=True)),
)  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 3, 4, 16, 4096, 10**23]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["darts", "nb201", "softmax", "gumbel", "none", "cuda:0", "", "~", "1e-3"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["name", "tau", "weight", "a", "channels"]), inner, max_size=3),
    ),
    max_leaves=6,
)  # fmt: skip


def yaml_text(value: Any) -> str:
    """`value` as the text a user would type after `key=` (flow-style YAML)."""
    try:
        return (
            yaml.safe_dump(value, default_flow_style=True, width=10**6)
            .strip()
            .removesuffix("\n...")
        )
    except yaml.YAMLError:
        return str(value)


# --------------------------------------------------------------------------- properties
@FUZZ
@given(key=key_paths, value=values, raw=st.one_of(st.none(), st.text(max_size=15)))
def test_fuzz_set_values(capsys, sandbox, key, value, raw) -> None:
    text = raw if raw is not None else yaml_text(value)
    override = f"{key}={text}"
    names = [key, key.split(".")[-1], key.split(".")[0], text.strip(), override]
    run_cli(capsys, ["search", "--print-config", "--set", override], names)


config_docs = st.dictionaries(
    st.one_of(st.sampled_from([*SECTIONS, "method", "seed", "device"]), st.text(max_size=6)),
    st.one_of(
        values,
        st.dictionaries(
            st.sampled_from(sorted({k.split(".")[-1] for k in KEYS})), values, max_size=4
        ),
    ),
    max_size=4,
)


@FUZZ
@given(
    doc=st.one_of(config_docs, values),
    junk=st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=40)),
    flag=st.one_of(st.none(), st.sampled_from(KEYS)),
)
def test_fuzz_config_yaml(capsys, sandbox, doc, junk, flag) -> None:
    path = Path("fuzz.yaml")
    if isinstance(junk, bytes):
        path.write_bytes(junk)
    elif isinstance(junk, str):
        path.write_text(junk)
    else:
        path.write_text(yaml.safe_dump(doc))
    argv = ["search", "--print-config", "-c", "darts", "-c", str(path)]
    if flag is not None:  # a flag that sets one key of a section the file may have broken
        argv += ["--set", f"{flag}=4"]
    names = ["fuzz.yaml", *SECTIONS, "method", "seed", "device", "threads", "out", "'"]
    run_cli(capsys, argv, names)


OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "conv_7x7"]  # fmt: skip
edges = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(OPS), st.integers(-1, 7), st.integers(-1, 7)).map(list),
        st.tuples(st.sampled_from(OPS), st.integers(0, 5), st.integers(1, 6), scalars).map(list),
        values,
    ),
    max_size=10,
)
cells = st.fixed_dictionaries(
    {"type": st.sampled_from(["normal", "reduce", "other"]), "edges": edges},
    optional={"stage": st.one_of(st.none(), st.integers(-1, 4), scalars), "concat": values},
)
genotypes = st.fixed_dictionaries(
    {"space": st.sampled_from(["darts", "nb201", "dartz", ""]), "cells": st.lists(cells, max_size=3)},
    optional={"name": values, "network": values, "info": values, "extra": values},
)  # fmt: skip


@FUZZ
@given(doc=st.one_of(genotypes, values), junk=st.one_of(st.none(), st.binary(max_size=30)))
def test_fuzz_genotype_json(capsys, sandbox, doc, junk) -> None:
    path = Path("fuzz.json")
    if junk is not None:
        path.write_bytes(junk)
    else:
        path.write_text(json.dumps(doc))
    names = ["fuzz.json", "genotype", "nb201", "darts", "NAS-Bench-201"]
    run_cli(capsys, ["lookup", str(path)], names)


nb201_items = st.one_of(
    st.builds(lambda op, i: f"{op}~{i}", st.sampled_from(OPS), st.integers(-1, 4).map(str)),
    st.text(alphabet="|~+0123abc_²", max_size=8),
)
nb201_strings = st.one_of(
    st.lists(st.lists(nb201_items, max_size=4), max_size=4).map(
        lambda nodes: "+".join("|" + "|".join(items) + "|" for items in nodes)
    ),
    st.text(max_size=40).map(lambda s: "|" + s),
)


@FUZZ
@given(cell=nb201_strings)
def test_fuzz_nb201_strings(capsys, sandbox, cell) -> None:
    run_cli(capsys, ["lookup", cell], ["NB201 string", "nb201", cell.strip()])
