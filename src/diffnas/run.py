"""One directory per run: resolved config, metrics.jsonl, genotype.json, atomic checkpoint.

The directory alone is enough to resume, reproduce or report a run. This module also owns
what makes a directory safe to write: the marker file that says diffnas created it (never
write into, nor delete, a directory that lacks it), the exclusive lock a run holds for its
life (one writer per directory; the OS drops it when the process dies), and which config
keys a resumed run may change.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from diffnas.config import (
    Config,
    dump_config,
    from_dict,
    load_config,
    merge,
    parse_override,
    to_dict,
)
from diffnas.errors import CheckpointError, ConfigError
from diffnas.utils import (
    append_jsonl,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    read_jsonl,
    write_jsonl,
)

T = TypeVar("T")

MARKER = ".diffnas"  # JSON: which diffnas made this directory, for what, when
LOCK = ".diffnas.lock"  # flock'ed by the one process writing the directory; holds its PID


class DirLock:
    """An exclusive, non-blocking `flock` on DIR/.diffnas.lock, held until `release()`.

    The kernel drops the lock when the holding process exits for any reason (SIGKILL
    included), so a crashed run never leaves a directory locked. The file stays; only the
    lock on it means anything.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self.fd: int | None = None

    def acquire(self, what: str = "run directory") -> DirLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:
                raise CheckpointError(
                    f"cannot write to {what} '{self.directory}' (permission denied); a run "
                    f"needs a directory it may write, choose another one"
                ) from None
            except FileNotFoundError:
                raise CheckpointError(
                    f"{what} '{self.directory}' disappeared (removed by another process); "
                    f"start again"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise CheckpointError(self._busy_message(what)) from None
            try:  # the file may have been removed (a discarded start) between open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _busy_message(self, what: str) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            pid = ""
        who = f"process {pid}" if pid.isdigit() else "another process"
        stop = f" (or stop it: kill {pid})" if pid.isdigit() else ""
        return (
            f"{what} '{self.directory}' is in use by diffnas {who}, which holds its lock; "
            f"wait for it to finish{stop}, or choose another directory. A killed process "
            f"releases the lock by itself."
        )

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __del__(self) -> None:  # a forgotten RunDir frees its directory when collected
        self.release()


def is_marked(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def claim_directory(
    path: str | Path,
    kind: str,
    *,
    adopt: Callable[[list[str]], bool] | None = None,
    lock: bool = True,
    what: str = "run directory",
) -> tuple[DirLock | None, bool]:
    """Make `path` a directory of diffnas (creating it, or taking an empty one) and lock it.

    Returns (the held lock or None, whether this call created the directory). A directory
    that exists, holds files and has no marker is refused, never written into: it is the
    user's. `adopt(entries)` may accept such a directory anyway (one an older diffnas wrote).
    """
    if str(path) == "":
        raise ConfigError(
            "the output directory is an empty string; give a directory name (--out DIR)"
        )
    target = Path(path)
    created = False
    if not target.exists():
        try:
            target.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass
    if not target.is_dir():
        raise CheckpointError(f"'{target}' exists and is not a directory; choose another --out")
    entries = _entries(target)
    if MARKER not in entries and entries and not (adopt and adopt(entries)):
        raise CheckpointError(_not_ours(target, entries))
    held = DirLock(target).acquire(what) if lock else None
    try:
        if not is_marked(target):
            entries = _entries(target)
            if entries and not (adopt and adopt(entries)):
                raise CheckpointError(_not_ours(target, entries))
            atomic_write_json(
                target / MARKER,
                {"created_by": "diffnas", "kind": kind, "time": time.strftime("%Y-%m-%dT%H:%M:%S")},
            )
    except BaseException:
        if held:
            held.release()
        raise
    return held, created


def _entries(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n not in (LOCK,))


def _not_ours(path: Path, entries: list[str]) -> str:
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    return (
        f"'{path}' exists and was not made by diffnas (it holds {shown}); diffnas never "
        f"writes into nor deletes a directory it did not create. Choose a new --out (or "
        f"an empty directory)."
    )


def unique_directory(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ...: the first name no one has taken, created now
    (mkdir is atomic, so two runs started in the same second get two directories)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


# keys a resumed run may change (a key or a section prefix), and why: the rest of the config
# shaped the state in the checkpoint, and continuing under another value mixes two runs
RESUME_MAY_CHANGE_SEARCH = (
    "threads",  # speed only
    "device",  # where to compute (bit-identity across devices is not promised)
    "out",  # the directory is given by --resume
    "data.root",  # the same data moved
    "data.cache_dir",
    "search.epochs",  # extend or shorten: the cosine lr and progress schedules follow
    "search.w_lr",  # recover from a NaN
    "search.w_lr_min",
    "search.arch_lr",
    "search.grad_clip",
    "search.finite_check_every",  # when the losses are read on the host, not what they are
    "checkpoint",  # how often to checkpoint
    "log",  # what to print and record
)
RESUME_MAY_CHANGE_TRAIN = (
    "threads",
    "device",
    "out",
    "data.root",
    "data.cache_dir",
    "train.epochs",
    "train.lr",
    "train.lr_min",
    "train.grad_clip",
    "train.eval_every",
    "train.finite_check_every",
    "checkpoint",
    "log",
)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} of every leaf that differs between two config mappings."""
    a, b = _flat(old), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _may_change(key: str, allowed: Iterable[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allowed)


class RunDir:
    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    CHECKPOINT = "checkpoint.pt"
    GENOTYPE = "genotype.json"

    # ------------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def genotype_path(self) -> Path:
        return self.path / self.GENOTYPE

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock: DirLock | None = None
        self.created = False  # this process made the directory (so it may remove it)

    # ------------------------------------------------------------------ create / open
    @staticmethod
    def default_path(config: Config, root: str = "runs") -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(root) / f"{config.method}-{config.space.name}-{config.data.dataset}-{stamp}"

    @classmethod
    def create(
        cls, config: Any, path: str | Path | None = None, *, default: Path | None = None
    ) -> RunDir:
        """A new run directory holding `config` (a search Config or any config dataclass),
        locked by this process until `release()` (or its exit).

        `path` None: a fresh unique directory named `default` (or `default_path(config)`,
        with -2, -3, ... when taken). An existing `path` must be a diffnas run directory
        without a checkpoint, or empty; anything else is refused untouched.
        """
        if isinstance(path, str) and path == "":
            raise ConfigError("the run directory is an empty string; give a directory (--out DIR)")
        if path is None:
            if default is None:
                if not isinstance(config, Config):
                    raise TypeError(
                        "RunDir.create needs a path for configs other than a search Config"
                    )
                default = cls.default_path(config)
            target = unique_directory(Path(default))
        else:
            target = Path(path)
        run = cls(target)
        kind = "search" if isinstance(config, Config) else "train"
        if run.checkpoint_path.exists() and not is_marked(target):  # an older diffnas's run
            raise CheckpointError(run._holds_a_run())
        # locked first: a run still going is reported as busy, not as one to --resume
        lock, created = claim_directory(target, kind, adopt=None)
        run.lock, run.created = lock, created or path is None
        try:
            if run.checkpoint_path.exists():
                raise CheckpointError(run._holds_a_run())
            # left by a start that never reached its first checkpoint: nothing to resume
            for stale in (run.metrics_path, run.genotype_path):
                stale.unlink(missing_ok=True)
            from diffnas.plugins import with_imports

            atomic_write_text(run.config_path, dump_config(with_imports(config)))
        except BaseException:
            run.release()
            raise
        return run

    def _holds_a_run(self) -> str:
        return (
            f"run directory '{self.path}' already holds a run; continue it with "
            f"--resume {self.path}, or choose another --out"
        )

    @classmethod
    def open(cls, path: str | Path, *, lock: bool = False) -> RunDir:
        """An existing run directory; with `lock`, locked for writing (to resume it)."""
        run = cls(path)
        if str(path) == "":
            raise CheckpointError("the run directory is an empty string; give its path")
        if not run.path.is_dir():
            raise CheckpointError(f"run directory '{path}' does not exist")
        if not run.config_path.exists():
            raise CheckpointError(f"'{path}' is not a diffnas run directory (no {cls.CONFIG})")
        from diffnas.plugins import load_for_run

        load_for_run(run.path)  # the plugins the run was made with
        if lock:
            # a run directory of an older diffnas has config.yaml but no marker: adopt it
            run.lock, _ = claim_directory(run.path, run.kind, adopt=lambda e: cls.CONFIG in e)
        return run

    def release(self) -> None:
        """Give up the directory's lock (the process's exit does it too)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def discard(self) -> None:
        """Undo a start that failed before its first checkpoint: remove the files it wrote,
        and the directory itself when this process created it; then release the lock."""
        try:
            if not self.checkpoint_path.exists():
                for f in (self.config_path, self.metrics_path, self.genotype_path):
                    f.unlink(missing_ok=True)
                if self.created and self.lock is not None and _entries(self.path) == [MARKER]:
                    (self.path / MARKER).unlink()
                    (self.path / LOCK).unlink(missing_ok=True)  # while holding its lock
                    self.path.rmdir()
        finally:
            self.release()

    @overload
    def load_config(self) -> Config: ...

    @overload
    def load_config(self, cls: type[T]) -> T: ...

    def load_config(self, cls: Any = Config) -> Any:
        """The run's resolved config (a search Config, or `cls`, e.g. a TrainConfig)."""
        return load_config([str(self.config_path)], cls=cls)

    @property
    def kind(self) -> str:
        """'train' for a training run (its config has model and train sections), else 'search'."""
        try:
            data = yaml.safe_load(self.config_path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return "search"
        return "train" if isinstance(data, dict) and {"model", "train"} <= set(data) else "search"

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl from `records` (a checkpoint's history: on resume, the
        file is rebuilt from it, so a cut or corrupt line loses nothing)."""
        write_jsonl(self.metrics_path, records)

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any]:
        if not self.checkpoint_path.exists():
            raise CheckpointError(
                f"'{self.path}' has no {self.CHECKPOINT} yet (the run stopped before its first "
                f"checkpoint), so there is nothing to resume; start it again in the same "
                f"directory: `diffnas {'train ' + str(self.genotype_path) if self.kind == 'train' else 'search'} "
                f"--config {self.config_path} --out {self.path}`"
            )
        return load_checkpoint(self.checkpoint_path)

    # ------------------------------------------------------------------ resume
    def resume_config(
        self,
        state: dict[str, Any],
        cls: type[T],
        overrides: list[str] | None,
        allowed: tuple[str, ...],
        validate: Callable[[T], None],
        write: bool = True,
    ) -> T:
        """The config to continue under: config.yaml plus `overrides`, checked against the
        config the checkpoint was written with. Keys in `allowed` may differ (they are
        applied, and config.yaml is rewritten to say so); any other difference, whether from
        an override or an edit of config.yaml, is refused with the list of changes.
        `write=False` only computes it (for --print-config and --dry-run)."""
        config = self.load_config(cls)
        data = to_dict(config)
        for text in overrides or []:
            data = merge(data, parse_override(text))
        new = from_dict(cls, data)
        validate(new)
        saved = state.get("config")
        if not isinstance(saved, dict):
            raise CheckpointError(
                f"the checkpoint in '{self.path}' holds no config; start a new run"
            )
        try:
            old = to_dict(from_dict(cls, saved))
        except ConfigError as exc:
            raise CheckpointError(
                f"the checkpoint in '{self.path}' was written with a config this diffnas cannot "
                f"read ({exc}); resume it with the diffnas version that wrote it"
            ) from None
        changes = config_changes(old, to_dict(new))
        refused = {k: v for k, v in changes.items() if not _may_change(k, allowed)}
        if refused:
            diff = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
            raise CheckpointError(
                f"cannot resume '{self.path}' with a different config (from an option or an "
                f"edit of {self.CONFIG}): {diff}. The checkpoint was computed under the old "
                f"values; continuing under new ones would mix two runs. Only these may change "
                f"on resume: {', '.join(allowed)}. Undo the change, or start a new run."
            )
        if write and to_dict(new) != to_dict(config):
            atomic_write_text(self.config_path, dump_config(new))
        return new
