"""The loop's check that its losses stay finite, without a host read in every step.

A step hands its losses to `FiniteCheck.watch` (no copy, no device work: the tensors are
kept as they are); the loop reads them on the host in one transfer every `every` steps, and
whenever it must know (before a checkpoint is written, at an epoch's end, when the run
fails). On a CUDA device a read waits for every kernel queued so far, so a read in every
step would keep the host from running ahead of the device; a check found late still names
the exact step, phase and value of the first non-finite loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# search.finite_check_every: null resolves by device. On the CPU a read costs nothing (the
# values are computed when the host gets them), so every step, and a non-finite loss stops
# the run in the step that made it. On an asynchronous device (cuda) a read drains the
# device's queue: every 50 steps costs one drain per 50 steps (the host then runs ahead for
# the other 49), and a non-finite loss is found at most 49 steps late, named exactly
# (checkpoints are checked before they are written, so none holds the steps after it).
DEFAULT_EVERY_CPU = 1
DEFAULT_EVERY_ASYNC = 50


def resolve_every(every: int | None, device: torch.device) -> int:
    """`search.finite_check_every` for `device` (null: 1 on cpu, 50 elsewhere)."""
    if every is not None:
        return every
    return DEFAULT_EVERY_CPU if device.type == "cpu" else DEFAULT_EVERY_ASYNC


@dataclass(frozen=True)
class Watched:
    """Where a watched loss was computed: its phase, and the epoch and step (0-based, the
    step within the epoch) of the loop; `global_step` counts the steps done before it."""

    phase: str
    epoch: int
    step: int
    global_step: int


@dataclass(frozen=True)
class NonFinite:
    """The first non-finite loss since the last clean check."""

    value: float
    where: Watched


class FiniteCheck:
    """The losses watched since the last check, and the first non-finite one among them.

    Once a non-finite loss is found it stays found: every later `first_bad` returns it, so
    nothing written after it (a checkpoint) passes the check.
    """

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"the finite check needs every >= 1, got {every}")
        self.every = every
        self._losses: list[torch.Tensor] = []
        self._where: list[Watched] = []
        self._bad: NonFinite | None = None

    def watch(self, loss: torch.Tensor, where: Watched) -> None:
        """Keep `loss` (a scalar) for the next check; no device work, no host read."""
        if self._bad is None:
            self._losses.append(loss.detach())
            self._where.append(where)

    def due(self, steps_done: int) -> bool:
        """Whether the loop checks after its step number `steps_done` (1-based, global)."""
        return steps_done % self.every == 0

    @property
    def pending(self) -> int:
        """Losses watched since the last check."""
        return len(self._losses)

    def first_bad(self) -> NonFinite | None:
        """The first non-finite loss watched (one host read of all of them; none when none
        is pending), or None; the watched losses are then cleared."""
        if self._bad is None and self._losses:
            # one transfer; stack promotes to the widest dtype, so a float64 loss too large
            # for float32 is not taken for an infinity
            values = torch.stack([t.reshape(()) for t in self._losses]).tolist()
            for value, where in zip(values, self._where):
                if not math.isfinite(value):
                    self._bad = NonFinite(value, where)
                    break
            self._losses, self._where = [], []
        return self._bad
