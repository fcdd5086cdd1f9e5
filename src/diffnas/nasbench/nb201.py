"""NAS-Bench-201 lookup: CIFAR-10 test accuracy of any nb201 cell from a tabular benchmark.

Reads the `analog-nasbench` table (optional extra `diffnas[nb201]`); its op codes and
edge order differ from NB201's string order, so the mapping lives here and is tested.
"""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

from diffnas.errors import DatasetError, DiffnasError, require_extra
from diffnas.spaces.genotype import Genotype

# analog-nasbench op codes
ANB_OPS = {"skip_connect": 0, "none": 1, "nor_conv_3x3": 2, "nor_conv_1x1": 3, "avg_pool_3x3": 4}
# analog-nasbench edge order (src, dst); NB201's string order is (0,1),(0,2),(1,2),(0,3),(1,3),(2,3)
ANB_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


class LookupUnavailable(DiffnasError):
    """The table is not installed."""


class _Record:
    """Stands in for analognasbench's classes when unpickling (no pkg_resources import)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("analognasbench"):
            return _Record
        return super().find_class(module, name)


def table_path() -> Path:
    from importlib import metadata

    try:
        dist = metadata.distribution("analog-nasbench")
    except metadata.PackageNotFoundError:
        raise LookupUnavailable(
            "the NAS-Bench-201 lookup needs the optional table (analog-nasbench): "
            'pip install "diffnas[nb201]"'
        ) from None
    for f in dist.files or []:
        if f.name == "data.anb":
            path = Path(str(dist.locate_file(f)))
            if path.exists():
                return path
    raise LookupUnavailable(
        "analog-nasbench is installed but its data.anb table is missing; reinstall it"
    )


@lru_cache(maxsize=1)
def _table() -> dict[tuple[int, ...], Any]:
    with open(table_path(), "rb") as fh:
        return _Unpickler(fh).load()


def anb_key(genotype: Genotype) -> tuple[int, ...]:
    """The table's 6-tuple of op codes for an nb201 genotype."""
    if genotype.space != "nb201":
        raise DiffnasError(
            f"the NAS-Bench-201 lookup scores nb201 cells, got a {genotype.space} genotype"
        )
    by_edge = {(e.src, e.dst): e.op for e in genotype.cells[0].edges}
    return tuple(ANB_OPS[by_edge[edge]] for edge in ANB_EDGES)


def lookup(genotype: Genotype) -> float:
    """CIFAR-10 test accuracy (%) of the cell trained by the benchmark (`baseline_accuracy`).

    Only the op choice is scored: an ACA genotype's skip fractions are ignored.
    """
    return float(_table()[anb_key(genotype)].baseline_accuracy)


def available() -> bool:
    try:
        table_path()
    except LookupUnavailable:
        return False
    return True


def all_accuracies() -> list[float]:
    return [float(r.baseline_accuracy) for r in _table().values()]


# --------------------------------------------------------------------------- official file
# NAS-Bench-201's own benchmark file (NAS-Bench-201-v1_0-e61699.pth or -v1_1-096897.pth),
# read through its own API package (nas-bench-201, in the nb201 extra); the file is not
# redistributable here: a user who has it names it with --nb201-file or this variable.
OFFICIAL_ENV = "DIFFNAS_NB201_FILE"


def official_file(path: str | Path | None = None) -> Path | None:
    """The official benchmark file given (argument, else $DIFFNAS_NB201_FILE), or None."""
    import os

    given = path or os.environ.get(OFFICIAL_ENV)
    if not given:
        return None
    file = Path(given).expanduser()
    if not file.is_file():
        raise DatasetError(
            f"NAS-Bench-201 file '{file}' does not exist; give the path of "
            "NAS-Bench-201-v1_1-096897.pth (or v1_0) or unset " + OFFICIAL_ENV
        )
    return file


@lru_cache(maxsize=1)
def _official_api(path: str) -> Any:
    import contextlib
    import io

    import torch

    require_extra("nb201", "nas_201_api", what="reading the official NAS-Bench-201 file")
    from nas_201_api import NASBench201API

    # the benchmark file is a torch pickle of plain dicts, lists, strings and numbers: load it
    # as data only (a file naming any other object could run code when unpickled)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            names = []
        raise DatasetError(
            f"'{path}' is not a NAS-Bench-201 file diffnas can read as plain data"
            + (f" (it names {', '.join(names)})" if names else "")
            + "; diffnas does not unpickle code from files: use the official "
            "NAS-Bench-201-v1_0/v1_1 .pth file, or drop --nb201-file"
        ) from None
    with contextlib.redirect_stdout(io.StringIO()):
        return NASBench201API(data, verbose=False)


def official_lookup(genotype: Genotype, path: str | Path) -> float:
    """CIFAR-10 test accuracy (%) in NAS-Bench-201's own file: the `cifar10` setting (trained
    on train + valid, 200 epochs), averaged over the file's training runs (seeds), which is
    the figure the NAS-Bench-201 paper publishes."""
    from diffnas.spaces.nb201 import to_nb201_string

    anb_key(genotype)  # the same nb201 check as the table
    api = _official_api(str(path))
    arch = to_nb201_string(genotype)
    index = api.query_index_by_arch(arch)
    if index < 0 or index not in api.arch2infos_dict:
        raise DatasetError(f"{arch} is not in the NAS-Bench-201 file '{path}'")
    info = api.get_more_info(index, "cifar10", hp="200", is_random=False)
    return float(info["test-accuracy"])
