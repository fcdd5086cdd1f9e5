"""`search.compile`: torch.compile of the supernet's search cells.

Each `SearchDAG` (one cell: every mixed edge, node sums, edge scales) is compiled on its
own with `dynamic=False`: the step's shapes are fixed, so each distinct cell shape is
compiled once and reused by every cell of that shape (PyTorch inlines the module's
parameters as graph inputs). The engine's autograd Functions are traced into the graph
with their hand-written backwards. The stem, the classifier and the loss stay eager.
Inductor's compiled kernels are cached on disk (TORCHINDUCTOR_CACHE_DIR, set here to
`<cache>/inductor` unless the environment names one), so a second run with the same
shapes skips most of the compile time. `memory_budget` (search.compile_memory_budget) is
AOTAutograd's activation memory budget while a cell compiles and runs: the share of the
activations its partitioner may keep for the backward, recomputing the rest there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from diffnas.errors import ConfigError


def compile_cells(
    model: nn.Module,
    backend: str,
    cache_dir: str | Path | None,
    mode: str = "default",
    memory_budget: float = 1.0,
) -> int:
    """Compile every search cell of `model` in place with `backend` and torch.compile's
    `mode` (search.compile_mode; `reduce-overhead` replays CUDA graphs on a GPU), under
    AOTAutograd's activation `memory_budget` (search.compile_memory_budget); returns how
    many cells."""
    import torch._dynamo

    from diffnas.supernet.dag import SearchDAG

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigError(
            f"search.compile_backend={backend!r} is not a torch.compile backend here; "
            f"use one of {', '.join(sorted(known))} (inductor compiles to C++/Triton)"
        )
    if mode != "default" and backend != "inductor":
        raise ConfigError(
            f"search.compile_mode={mode!r} is an inductor mode; with "
            f"search.compile_backend={backend!r} leave it at default"
        )
    if cache_dir is not None and backend == "inductor":
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache_dir) / "inductor"))
    cells = [m for m in model.modules() if isinstance(m, SearchDAG)]
    cfg = torch._dynamo.config
    for key in ("recompile_limit", "cache_size_limit"):  # one entry per cell shape at least
        if hasattr(cfg, key):
            setattr(cfg, key, max(int(getattr(cfg, key)), len(cells) + 8))
    for cell in cells:
        cell.compile(backend=backend, dynamic=False, mode=None if mode == "default" else mode)
        compiled = getattr(cell, "_compiled_call_impl", None)  # what nn.Module.compile set
        if compiled is not None:
            cell._compiled_call_impl = _with_budget(compiled, memory_budget)
    return len(cells)


def _with_budget(call: Callable[..., Any], budget: float) -> Callable[..., Any]:
    """`call` with AOTAutograd's activation memory budget set to `budget` while it runs:
    the cell's graph is partitioned into forward and backward (what the forward keeps)
    at its first call, which compiles; set on every call (~17 us, against a cell's
    milliseconds), the setting is the same for any recompilation, whatever the process's
    own setting, and leaves the process's other compiled code alone."""
    import torch._functorch.config as functorch_config

    def run(*args: Any, **kwargs: Any) -> Any:
        with functorch_config.patch(activation_memory_budget=budget):
            return call(*args, **kwargs)

    return run
