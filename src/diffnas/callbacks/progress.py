"""A Rich progress bar over a run's steps (search or training) with loss, accuracy and ETA."""

from __future__ import annotations

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
    name = "progress"

    def __init__(self, console: Console | None = None, refresh_steps: int = 5) -> None:
        self.console = console or Console(stderr=True)
        self.refresh_steps = refresh_steps
        self.progress: Progress | None = None
        self.task: Any = None

    def on_search_start(self, s: Loop) -> None:
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
        m = s.meters.summary()
        acc = m["train_acc"]
        stats = f"loss {m['train_loss']:.3f}" + ("" if acc is None else f" acc {acc:.1f}%")
        if m["val_acc"] is not None:
            stats += f" | val {m['val_acc']:.1f}%"
        self.progress.update(
            self.task, completed=s.global_step, epoch=f"{s.epoch + 1}/{s.epochs}", stats=stats
        )

    def on_epoch_end(self, s: Loop, metrics: dict[str, Any]) -> None:
        if self.progress is None:
            return
        self.progress.update(self.task, completed=s.global_step)
        acc = metrics["train_acc"]
        line = f"epoch {metrics['epoch'] + 1}/{s.epochs}  train {'-' if acc is None else f'{acc:.1f}%'}"
        for key, label in (("val_acc", "val"), ("test_acc", "test")):
            if key in metrics:
                value = metrics[key]
                line += f"  {label} {'-' if value is None else f'{value:.1f}%'}"
        if "lookup_acc" in metrics:
            line += f"  NB201 lookup {metrics['lookup_acc']:.2f}%"
            if "lookup_scores" in metrics:
                line += " (op choice only)"
        line += f"  {metrics['time_s']:.0f}s"
        self.progress.console.print(line)

    def on_search_end(self, s: Loop) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
