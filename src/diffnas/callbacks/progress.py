"""Progress of a run (search or training): a Rich bar with loss, accuracy and ETA on a
terminal, and one line per epoch (plain text when stdout is not a terminal, e.g. a batch
job's log, or with `--no-progress`)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from diffnas.callbacks.base import Callback

if TYPE_CHECKING:
    from diffnas.callbacks.base import Loop


class ProgressBar(Callback["Loop"]):
    """The bar moves every `refresh_steps` steps; its loss and accuracy are read from the
    meters at most every `stats_every_s` seconds: a read waits for the device's queued
    work (a host sync on cuda), so the bar does not read in every step it draws."""

    name = "progress"

    def __init__(
        self,
        console: Console | None = None,
        refresh_steps: int = 5,
        bar: bool | None = None,
        stats_every_s: float = 2.0,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.refresh_steps = refresh_steps
        self.stats_every_s = stats_every_s
        self._stats = ""
        self._stats_at = 0.0  # time.monotonic() of the last read of the meters
        # the bar only where someone watches: stdout and the bar's console are terminals
        self.bar = (sys.stdout.isatty() and self.console.is_terminal) if bar is None else bar
        self.progress: Progress | None = None
        self.task: Any = None
        self.last_s = 0.0

    def on_search_start(self, s: Loop) -> None:
        self.last_s = float(getattr(s, "elapsed_s", 0.0))
        self._stats_at = time.monotonic()  # the first read after stats_every_s
        if s.epoch >= s.epochs:
            self._print(f"all {s.epochs} epochs are already done; nothing left to run")
            return
        if not self.bar:
            return
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        total = s.total_steps
        self.task = self.progress.add_task(
            "search",
            total=total,
            completed=s.global_step,
            epoch=f"{s.epoch + 1}/{s.epochs}",
            stats="",
        )

    def on_step_end(self, s: Loop) -> None:
        if self.progress is None or s.global_step % self.refresh_steps:
            return
        now = time.monotonic()
        if now - self._stats_at >= self.stats_every_s:
            self._stats, self._stats_at = stats_text(s.meters.summary()), now
        self.progress.update(
            self.task,
            completed=s.global_step,
            epoch=f"{s.epoch + 1}/{s.epochs}",
            stats=self._stats,
        )

    def on_epoch_end(self, s: Loop, metrics: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=s.global_step)
        self._print(epoch_line(metrics, s.epochs, metrics["time_s"] - self.last_s))
        self.last_s = metrics["time_s"]

    def _print(self, line: str) -> None:
        if self.progress is not None:
            self.progress.console.print(line, highlight=False, markup=False)
        else:  # plain text, flushed: a log file gets each epoch as it ends
            print(line, flush=True)

    def on_search_end(self, s: Loop) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def stats_text(m: dict[str, float | None]) -> str:
    """`loss 1.234 acc 56.7% | val 54.3%` of the meters' summary."""
    acc = m["train_acc"]
    loss = m["train_loss"]
    stats = ("loss -" if loss is None else f"loss {loss:.3f}") + (
        "" if acc is None else f" acc {acc:.1f}%"
    )
    if m["val_acc"] is not None:
        stats += f" | val {m['val_acc']:.1f}%"
    return stats


def epoch_line(metrics: dict[str, Any], epochs: int, epoch_s: float) -> str:
    """`epoch 3/20  train 81.2%  val 78.0%  time 4s (total 12s)`: the epoch's own time and
    the run's cumulative time (metrics.jsonl's time_s)."""
    acc = metrics["train_acc"]  # None when the targets are not class indices (a user loss)
    line = f"epoch {metrics['epoch'] + 1}/{epochs}  train {'-' if acc is None else f'{acc:.1f}%'}"
    for key, label in (("val_acc", "val"), ("test_acc", "test")):
        if key in metrics:
            value = metrics[key]
            line += f"  {label} {'-' if value is None else f'{value:.1f}%'}"
    if "lookup_acc" in metrics:
        line += f"  NB201 lookup {metrics['lookup_acc']:.2f}%"
        if "lookup_scores" in metrics:
            line += " (op choice only)"
    if "nb201_file_acc" in metrics:
        line += f"  NB201 file {metrics['nb201_file_acc']:.2f}%"
    return line + f"  time {epoch_s:.0f}s (total {metrics['time_s']:.0f}s)"
