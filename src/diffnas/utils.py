"""Small shared helpers: seeding and RNG state, atomic file writes, device and threads,
state-dict mismatch summaries, and the worker watcher that ends pool workers with their parent.

Kept free of model code so that every module can import it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import secrets
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from diffnas.errors import CheckpointError, ConfigError


def exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """Process-pool initializer: end this worker when the process that started it is gone.

    A parent killed with SIGKILL (or SIGTERM, or by the OOM killer) cannot shut its pool
    down, and Ctrl-C reaches only its process group: without this, spawned workers train on,
    holding memory and cores, and keep multiprocessing's resource tracker alive. A daemon
    thread polls the parent id; on reparenting the worker exits at once (os._exit: nothing
    of a half-done task is written).
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG stream as plain data (tuples, ints, floats, tensors): loadable with
    `torch.load(weights_only=True)`."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    if isinstance(keys, torch.Tensor):
        keys = keys.numpy()
    np.random.set_state((name, np.asarray(keys).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. run seed, epoch, step)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h ^= (p + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return h >> 1


def cosine_lr(base: float, minimum: float, epoch: int, epochs: int) -> float:
    """Cosine annealing from `base` at epoch 0 towards `minimum`, set once per epoch (DARTS)."""
    return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * epoch / epochs))


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new, uniquely named file next to `path`, created with the usual permissions.

    `tempfile.mkstemp` creates files with mode 0600, so an atomic rename would leave run
    files that colleagues on a shared machine cannot read; `os.open` with 0666 lets the
    process umask decide, as for any file the user writes.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to '{path}'")


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
    _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def append_jsonl(path: Path, record: Any) -> None:
    """Append one JSON line and fsync it (metrics.jsonl, candidates.jsonl): a kill can cut
    only the line being written, which `read_jsonl` then drops."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[Any]:
    """The records of a JSON-lines file, up to the first unreadable line (a line cut by a
    kill: everything after it is unreliable); [] when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def write_jsonl(path: Path, records: list[Any]) -> None:
    """Rewrite a JSON-lines file atomically from `records`."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, fsync, then rename over `path`."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


# numpy arrays as pickled by numpy itself: plain data (the RNG state of checkpoints written
# before diffnas stored it as a tensor); reconstructing them calls no other code
_NUMPY_ARRAY_GLOBALS = {
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint loaded as data only: tensors, numbers, strings, lists, tuples, dicts.

    `torch.load(weights_only=True)` never calls the functions a pickle names, so a file
    with a planted `__reduce__` payload is refused (CheckpointError) without running it.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at '{path}'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            needs = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            needs = set()
        if not needs:
            raise _unreadable(path, "not a torch checkpoint") from None
        if needs <= _NUMPY_ARRAY_GLOBALS:
            return _load_with_numpy_arrays(path)
        raise CheckpointError(
            f"checkpoint '{path}' holds Python objects that are not plain data "
            f"({', '.join(sorted(needs))}), so diffnas refuses to load it: unpickling them "
            f"could run any code. diffnas writes only tensors, numbers, strings, lists and "
            f"dicts; this file was altered or written by another program. Load checkpoints "
            f"only from runs you trust, and start a new run instead of resuming this one."
        ) from None
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise _unreadable(path, f"{type(exc).__name__}: {exc}") from None


def _load_with_numpy_arrays(path: Path) -> dict[str, Any]:
    from numpy import dtype, ndarray

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    try:
        # the RNG key array is uint32, whose dtype class numpy pickles by reference
        allowed: list[Any] = [_reconstruct, ndarray, dtype, type(np.dtype(np.uint32))]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable(path, f"{type(exc).__name__}: {exc}") from None


def _unreadable(path: Path, why: str) -> CheckpointError:
    run = path.parent
    return CheckpointError(
        f"checkpoint '{path}' is unreadable (truncated or corrupt: {why}). The run cannot "
        f"continue from it: delete it (rm '{path}') and start the run again from its own "
        f"config in the same directory (`diffnas search --config {run}/config.yaml --out {run}`; "
        f"a training run: `diffnas train {run}/genotype.json --config {run}/config.yaml "
        f"--out {run}`), or start a new run elsewhere."
    )


def state_mismatch(module: torch.nn.Module, state: Any) -> str:
    """One line saying how a state dict differs from `module`'s (counts and a first example),
    instead of PyTorch's message that lists every key."""
    if not isinstance(state, dict):
        return f"the saved state is a {type(state).__name__}, not a state dict"
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        k
        for k in own
        if k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. '{missing[0]}')")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. '{unexpected[0]}')")
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape (e.g. '{k}': saved {list(state[k].shape)}, "
            f"expected {list(own[k].shape)})"
        )
    return "tensors " + ", ".join(parts) if parts else "values of another type"


def rss_mb(peak: bool = False) -> float:
    """This process's resident memory in MiB (`peak`: its high-water mark, since the process
    started or since the last `reset_peak_rss()`), the one memory helper of the measurements
    (diffnas bench speed, the --dry-run estimate)."""
    import resource

    field = "VmHWM:" if peak else "VmRSS:"
    try:  # Linux; VmHWM is the mark reset_peak_rss() resets
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    # no /proc (macOS): the high-water mark (an upper bound of the current size), in bytes
    # there and KiB on Linux
    high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return high / 2**20 if sys.platform == "darwin" else high / 1024


def reset_peak_rss() -> bool:
    """Set this process's high-water mark (`rss_mb(peak=True)`) to its current resident
    memory, so that a later peak counts only what came after (Linux >= 4.0: writing 5 to
    /proc/self/clear_refs). False where the system cannot (the peak then keeps counting
    from the process's start)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def resolve_device(name: str) -> torch.device:
    """auto (CUDA if visible, else CPU), cpu, cuda, cuda:N or mps, checked against this machine."""
    from diffnas.config import check_device

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device '{name}' was asked for but this machine has no CUDA GPU visible to "
                f"PyTorch (torch {torch.__version__}); use --device cpu or --device auto"
            )
        count = torch.cuda.device_count()
        if name != "cuda" and int(name[5:]) >= count:
            raise ConfigError(
                f"device '{name}' was asked for but PyTorch sees {count} CUDA GPU(s): "
                f"cuda:0 .. cuda:{count - 1}"
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "device 'mps' was asked for but Apple's Metal backend is not available to PyTorch "
            "here; use --device cpu or --device auto"
        )
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    """PyTorch's intra-op threads: `threads`, or with None the `auto_threads` rule.

    Returns the number set."""
    if threads is None:
        threads = auto_threads()[0]
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all cores where unknown)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _procs_running() -> int | None:
    """Runnable tasks on the machine now (Linux /proc/stat `procs_running`)."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _own_running() -> int:
    """This process's threads that are runnable now (the caller's own thread included)."""
    n = 0
    try:
        for task in os.scandir("/proc/self/task"):
            try:
                with open(f"{task.path}/stat") as f:
                    # pid (comm) state ...: comm may hold spaces and parentheses
                    if f.read().rsplit(")", 1)[1].split()[0] == "R":
                        n += 1
            except (OSError, IndexError):
                continue
    except OSError:
        return 1
    return max(n, 1)


def busy_elsewhere(samples: int = 9, interval: float = 0.02) -> float | None:
    """Runnable tasks of other processes: the median over `samples` readings of the
    machine's runnable count less this process's own runnable threads (None: not Linux)."""
    readings = []
    for i in range(samples):
        total = _procs_running()
        if total is None:
            return None
        readings.append(max(0, total - _own_running()))
        if i + 1 < samples:
            time.sleep(interval)
    readings.sort()
    return float(readings[len(readings) // 2])


def auto_threads() -> tuple[int, str]:
    """The thread count `threads: null` (the default) gives, and why.

    The cores this process may use less the tasks other processes are running on the
    machine right now, at least 1. A supernet step is thousands of small kernels, each an
    OpenMP parallel region ending in a barrier; when there are more runnable threads than
    cores, a descheduled thread holds up every barrier and a 2-thread step becomes several
    times slower than a 1-thread one (docs/engine.md, "Threads")."""
    cores = usable_cores()
    others = busy_elsewhere()
    if others is None:
        return cores, f"all {cores} usable cores (the machine's load is unknown here)"
    n = max(1, min(cores, cores - round(others)))
    return n, f"{cores} usable core(s), {others:g} task(s) of other processes running"
