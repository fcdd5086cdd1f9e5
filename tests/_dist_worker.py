"""Ranks of the data-parallel tests (tests/test_distributed.py): forked from the test
process (no second import of torch), each given the environment torchrun sets (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK) before it calls diffnas."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from diffnas.callbacks.base import Callback
from diffnas.config import Config, load_config

# the methods the tests compare, each its preset on a tiny nb201 supernet
METHODS = ("darts", "gdas", "darts_prime", "sdarts_adv")
# DARTS-PRIME's informed schedule starting at the first gradient energy and aiming at one α
# step per weight step, on 6 steps: 4 of its decisions are α steps (2 are not)
# SDARTS-ADV's attack on the batch of each weight step: 2 PGD steps instead of 7
EXTRA = {
    "darts_prime": ["search.schedule.threshold=null", "search.schedule.f=1", "data.subset=0.15"],
    "sdarts_adv": ["search.regularizers=[{name: sdarts_adv, steps: 2}]"],
}


def config_for(method: str) -> Config:
    """`method`'s preset on a tiny nb201 supernet, one epoch of a few steps (global batch 16)."""
    overrides = [
        "space.name=nb201",
        "space.channels=4",
        "space.layers=1",
        "data.dataset=digits",
        "data.subset=0.1",
        "data.batch_size=16",
        "search.epochs=1",
        "log.progress=false",
        "log.lookup=false",
        "checkpoint.every_steps=2",
        "threads=1",
        "seed=3",
        *EXTRA.get(method, []),
    ]
    return load_config([method], overrides)


class KillAt(Callback):
    """SIGKILL this process at the end of global step `step` (after rank 0's checkpoint
    callback, which comes first)."""

    name = "kill"

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, s: Any) -> None:
        if s.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(fn: Callable[..., None], rank: int, world: int, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    fn(*args)


def launch(fn: Callable[..., None], args: tuple, world: int = 2, timeout: float = 120) -> list:
    """`fn(*args)` on `world` forked ranks; their exit codes (-9: killed by SIGKILL)."""
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(fn, r, world, port, args)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout)
        return [p.exitcode for p in procs]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
