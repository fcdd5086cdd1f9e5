"""Small shared helpers: seeding and RNG state, atomic file writes, device and threads,
state-dict mismatch summaries, and the worker watcher that ends pool workers with their parent.

Kept free of model code so that every module can import it.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at '{path}'")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(
            f"checkpoint '{path}' is unreadable (truncated or corrupt: {type(exc).__name__}: "
            f"{exc}). Delete it to restart this run from scratch, or start a new run."
        ) from None


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device '{name}' was asked for but this machine has no CUDA GPU visible to PyTorch "
            f"(torch {torch.__version__}); use --device cpu or --device auto"
        )
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj
