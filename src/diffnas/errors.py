"""User-facing errors: each names the bad value and how to fix it.

The CLI prints these as one line (no traceback); anything else is a bug in diffnas.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class DiffnasError(Exception):
    """Base class of errors caused by the user's input, configuration or files."""


class ConfigError(DiffnasError):
    """A configuration file, preset or override is malformed."""


class UnknownNameError(ConfigError):
    """A part (space, op, relaxation, dataset, ...) was asked for by a name nobody registered."""


class GenotypeError(DiffnasError):
    """A genotype file or string does not describe a valid architecture of its space."""


class DatasetError(DiffnasError):
    """A dataset is missing, corrupt, or in an unexpected format."""


class CheckpointError(DiffnasError):
    """A run directory or checkpoint cannot be used."""


class NumericalError(DiffnasError):
    """The loss became NaN or infinite."""


class ResourceError(DiffnasError):
    """The configured run would not fit in the memory available on this machine."""


class ExportError(DiffnasError):
    """A network cannot be exported (an op has no TorchScript/ONNX translation), or the
    exported model disagrees with PyTorch."""


class MissingExtra(DiffnasError):
    """A command needs an optional dependency group (`pip install "diffnas[NAME]"`)."""


def require_extra(extra: str, *modules: str, what: str) -> None:
    """Raise MissingExtra naming the pip command when any of `modules` is not importable."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise MissingExtra(
            f'{what} needs {", ".join(missing)} (not installed): pip install "diffnas[{extra}]"'
        )


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_OS_HINTS = {
    errno.ENOSPC: "free disk space or choose another --out, then resume the run (--resume RUN_DIR)",
    errno.EDQUOT: "free disk space or choose another --out, then resume the run (--resume RUN_DIR)",
    errno.EACCES: "choose a location you may write to (--out) or fix its permissions",
    errno.EPERM: "choose a location you may write to (--out) or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another location (--out)",
    errno.EEXIST: "a file is in the way: choose another path (--out) or move the file",
    errno.ENOTDIR: "a file is in the way where a directory is needed: choose another path",
    errno.EISDIR: "a directory is in the way where a file is needed: choose another path",
    errno.ENOENT: "check the path",
}


def os_error_message(exc: OSError) -> str:
    """One line for a file-system error the user can fix (full disk, permissions, a file in
    the way): what failed, on which path, and what to do."""
    what = exc.strerror or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(f"'{p}'" for p in paths)
    hint = _OS_HINTS.get(exc.errno or 0, "")
    return f"{what}{': ' + where if where else ''}" + (f"; {hint}" if hint else "")
