"""Experiment loggers as callbacks, chosen by name: csv, tensorboard, wandb, mlflow.

Owns `LOGGERS` (name -> class), the check of `log.loggers` (names, optional packages
installed) and the four backends. Each logger writes into the run directory and nothing
reaches the network by default:

- csv: `metrics.csv` (one row per epoch) and `steps.csv` (one row every `log.every_steps`).
- tensorboard: `tensorboard/` event files (torch.utils.tensorboard; needs the `tensorboard`
  package): scalars, α histograms and heatmaps, the derived cell drawn, the genotype as text.
- wandb: an offline run under `wandb/` (sync it later with `wandb sync`); WANDB_MODE,
  WANDB_PROJECT (default diffnas) are read from the environment.
- mlflow: a run in the file store `mlruns/` of the run directory, unless MLFLOW_TRACKING_URI
  names another store; MLFLOW_EXPERIMENT_NAME (default diffnas).

Step scalars (train/val loss and accuracy averaged over the steps since the last point or
the epoch's start, the learning rate) go out every `every_steps` steps; epoch scalars, α
and the genotype at each epoch's end. All use the global step as x axis, so that a resumed run continues its curves
(TensorBoard drops what was logged after the checkpoint it resumes from).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from diffnas.callbacks.base import Callback
from diffnas.errors import ConfigError, did_you_mean
from diffnas.utils import atomic_write_text

if TYPE_CHECKING:
    import numpy as np

    from diffnas.callbacks.base import Loop

EXTRA_HINT = 'pip install "diffnas[{extra}]"'


# =========================================================================== base
class ExperimentLogger(Callback["Loop"]):
    """Turns the loop's hooks into scalars, histograms, images and text for one backend.

    Subclasses implement `open`, `scalars` and `close`, and whichever of `histogram`,
    `image`, `text` and `params` their backend has.
    """

    name = "logger"
    # (module to import, pip extra) of an optional backend
    requires: ClassVar[tuple[str, str] | None] = None
    # whether the backend takes images (the cell drawn, α heatmaps): they cost a rendering
    images: ClassVar[bool] = True

    def __init__(self, every_steps: int = 20) -> None:
        self.every_steps = every_steps
        self.active = False
        self._window: dict[str, float] = {}  # the meters at the last step point
        self._window_epoch = -1
        self._drawn: str | None = None

    # ------------------------------------------------------------------ backend interface
    def open(self, s: Loop, resumed: bool) -> None:
        raise NotImplementedError

    def scalars(self, kind: str, values: dict[str, float], step: int, epoch: int) -> None:
        """`kind` is 'step' (a window of steps) or 'epoch' (an epoch's metrics)."""
        raise NotImplementedError

    def histogram(self, tag: str, values: list[float], step: int) -> None: ...

    def image(self, tag: str, rgb: np.ndarray, step: int, epoch: int) -> None: ...

    def text(self, tag: str, text: str, step: int, epoch: int) -> None: ...

    def params(self, flat: dict[str, Any]) -> None: ...

    def close(self, s: Loop) -> None: ...

    # ------------------------------------------------------------------ hooks
    def on_search_start(self, s: Loop) -> None:
        if s.run is None:
            return
        resumed = s.global_step > 0 or s.epoch > 0
        self.open(s, resumed)
        self.active = True
        self._window, self._window_epoch = s.meters.state_dict(), s.epoch
        config = getattr(s, "config", None)
        if not resumed and config is not None:
            from diffnas.config import dump_config, to_dict

            self.params(flatten(to_dict(config)))
            self.text("config", dump_config(config), 0, 0)
        # epoch index -1: the genotype before the first epoch (files and captions say epoch 0)
        self._log_genotype(s, s.global_step, s.epoch - 1)

    def on_step_end(self, s: Loop) -> None:
        if not self.active or not self.every_steps or s.global_step % self.every_steps:
            return
        now = s.meters.state_dict()
        # the meters restart every epoch: a window never reaches back into the previous one
        before = self._window if self._window_epoch == s.epoch else {}
        self._window, self._window_epoch = now, s.epoch
        values: dict[str, float] = {}
        for p in ("train", "val"):
            n = now.get(f"{p}_n", 0.0) - before.get(f"{p}_n", 0.0)
            if n > 0:
                loss = now[f"{p}_loss"] - before.get(f"{p}_loss", 0.0)
                correct = now[f"{p}_correct"] - before.get(f"{p}_correct", 0.0)
                values[f"{p}_loss"] = loss / n
                values[f"{p}_acc"] = 100.0 * correct / n
        lr = getattr(s, "w_lr", getattr(s, "lr", None))
        if isinstance(lr, float):
            values["lr"] = lr
        if values:
            self.scalars("step", values, s.global_step, s.epoch)

    def on_epoch_end(self, s: Loop, metrics: dict[str, Any]) -> None:
        if not self.active:
            return
        step, epoch = s.global_step, int(metrics.get("epoch", s.epoch - 1))
        self.scalars("epoch", epoch_scalars(metrics), step, epoch)
        alpha = metrics.get("alpha")
        if isinstance(alpha, dict) and alpha:
            self._log_alpha(s, alpha, step, epoch)
        self._log_genotype(s, step, epoch)

    def on_search_end(self, s: Loop) -> None:
        if self.active:
            self.active = False
            self.close(s)

    # ------------------------------------------------------------------ helpers
    def _log_alpha(
        self, s: Loop, alpha: dict[str, list[list[float]]], step: int, epoch: int
    ) -> None:
        labels = alpha_labels(s) if self.images else {}
        for key, matrix in alpha.items():
            if not matrix or not matrix[0]:
                continue
            self.histogram(f"alpha/{key}", [v for row in matrix for v in row], step)
            if self.images:
                ops, edges = labels.get(key, (None, None))
                rgb = _heatmap_rgb(key, json.dumps(matrix), json.dumps([ops, edges]), epoch + 1)
                self.image(f"alpha_heatmap/{key}", rgb, step, epoch)

    def _log_genotype(self, s: Loop, step: int, epoch: int) -> None:
        """The genotype as text every time, drawn when it changed since the last drawing."""
        from diffnas.spaces.render import render_genotype

        genotype = getattr(s, "current_genotype", None)
        if genotype is None:
            return
        text = render_genotype(genotype)
        self.text("genotype", text, step, epoch)
        key = json.dumps(genotype.to_json(), sort_keys=True)
        if self.images and key != self._drawn:
            self._drawn = key
            self.image("cell", _cell_rgb(key), step, epoch)


# the loggers of one run draw the same figures: render each once
@functools.lru_cache(maxsize=8)
def _cell_rgb(genotype_json: str) -> np.ndarray:
    from diffnas.report.draw import draw_genotype, figure_rgb
    from diffnas.spaces.genotype import Genotype

    return figure_rgb(draw_genotype(Genotype.from_json(json.loads(genotype_json))))


@functools.lru_cache(maxsize=16)
def _heatmap_rgb(key: str, matrix_json: str, labels_json: str, epoch: int) -> np.ndarray:
    from diffnas.report.draw import alpha_heatmap, figure_rgb

    ops, edges = json.loads(labels_json)
    return figure_rgb(alpha_heatmap(key, json.loads(matrix_json), ops, edges, epoch))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists stay values."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = data
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def epoch_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric values of an epoch's metrics; a mapping of numbers gives `key/inner` values."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if k in ("epoch", "alpha", "genotype"):
            continue
        if _is_number(v):
            out[k] = float(v)
        elif isinstance(v, dict):
            out.update({f"{k}/{i}": float(x) for i, x in v.items() if _is_number(x)})
    return out


def alpha_labels(s: Any) -> dict[str, tuple[list[str], list[str]]]:
    """Per α key: op names and edge labels (as the cell drawing names nodes) of the loop's
    space; empty when the loop has no searched space."""
    from diffnas.report.draw import edge_label

    space = getattr(s, "space", None)
    config = getattr(s, "config", None)
    name = getattr(getattr(config, "space", None), "name", None)
    if space is None or not isinstance(name, str) or not hasattr(space, "arch_specs"):
        return {}
    return {
        k: (list(v.ops), [edge_label(a, b, name) for a, b in v.edges])
        for k, v in space.arch_specs().items()
    }


# =========================================================================== csv
class CsvLogger(ExperimentLogger):
    """metrics.csv (a row per epoch) and steps.csv (a row every `every_steps` steps)."""

    name = "csv"
    images = False
    EPOCHS = "metrics.csv"
    STEPS = "steps.csv"

    def __init__(self, every_steps: int = 20) -> None:
        super().__init__(every_steps)
        self.dir = Path(".")
        self._columns: dict[str, list[str]] = {}

    def open(self, s: Loop, resumed: bool) -> None:
        assert s.run is not None
        self.dir = s.run.path
        for fname, key, keep in (
            (self.EPOCHS, "epoch", lambda v: v < s.epoch),
            (self.STEPS, "step", lambda v: v <= s.global_step),
        ):
            path = self.dir / fname
            rows: list[dict[str, str]] = []
            columns: list[str] = []
            if resumed and path.exists():  # drop rows written after the checkpoint
                with path.open(newline="") as fh:
                    reader = csv.DictReader(fh)
                    columns = list(reader.fieldnames or [])
                    rows = [r for r in reader if r.get(key) and keep(int(float(r[key])))]
            self._columns[fname] = columns
            self._rewrite(fname, columns, rows)

    def scalars(self, kind: str, values: dict[str, float], step: int, epoch: int) -> None:
        # step points carry train/val averages over the window; epoch rows everything else
        fname = self.STEPS if kind == "step" else self.EPOCHS
        row: dict[str, Any] = {"epoch": epoch, "step": step, **values}
        columns = self._columns.setdefault(fname, [])
        new = [k for k in row if k not in columns]
        if new or not columns:
            self._columns[fname] = columns = columns + new
            with (self.dir / fname).open(newline="") as fh:
                old = list(csv.DictReader(fh))
            self._rewrite(fname, columns, [*old, row])
            return
        with (self.dir / fname).open("a", newline="") as fh:
            csv.DictWriter(fh, columns, restval="").writerow(row)

    def _rewrite(self, fname: str, columns: list[str], rows: Sequence[dict[str, Any]]) -> None:
        buf = io.StringIO()
        if columns:
            writer = csv.DictWriter(buf, columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        atomic_write_text(self.dir / fname, buf.getvalue())


# =========================================================================== tensorboard
class TensorBoardLogger(ExperimentLogger):
    """Event files under `tensorboard/` (view: tensorboard --logdir RUN_DIR/tensorboard)."""

    name = "tensorboard"
    requires = ("tensorboard", "tensorboard")
    DIR = "tensorboard"

    def __init__(self, every_steps: int = 20) -> None:
        super().__init__(every_steps)
        self.writer: Any = None

    def open(self, s: Loop, resumed: bool) -> None:
        assert s.run is not None
        SummaryWriter = _import_tensorboard()
        # on resume, drop the events logged after the checkpoint (they are logged again)
        purge = s.global_step + 1 if resumed else None
        self.writer = SummaryWriter(str(s.run.path / self.DIR), purge_step=purge)

    def scalars(self, kind: str, values: dict[str, float], step: int, epoch: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"{kind}/{k}", v, step)

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        import numpy as np

        self.writer.add_histogram(tag, np.asarray(values, dtype=np.float64), step)

    def image(self, tag: str, rgb: np.ndarray, step: int, epoch: int) -> None:
        self.writer.add_image(tag, rgb, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int, epoch: int) -> None:
        # TensorBoard renders markdown: indent by four spaces to keep the layout
        self.writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()), step)

    def close(self, s: Loop) -> None:
        self.writer.close()


def _import_tensorboard() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(_missing("tensorboard", "tensorboard", "tensorboard")) from None
    return SummaryWriter


# =========================================================================== wandb
class WandbLogger(ExperimentLogger):
    """A W&B run, offline unless WANDB_MODE says otherwise, its files under `wandb/`."""

    name = "wandb"
    requires = ("wandb", "wandb")

    def __init__(self, every_steps: int = 20) -> None:
        super().__init__(every_steps)
        self.run: Any = None
        self.run_id: str | None = None

    def open(self, s: Loop, resumed: bool) -> None:
        assert s.run is not None
        wandb = _import_optional("wandb", "wandb")
        config = getattr(s, "config", None)
        from diffnas.config import to_dict

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "diffnas"),
            name=s.run.path.name,
            dir=str(s.run.path),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=flatten(to_dict(config)) if config is not None and not resumed else None,
            id=self.run_id if resumed else None,
            resume="allow" if resumed and self.run_id else None,
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run_id = self.run.id

    def scalars(self, kind: str, values: dict[str, float], step: int, epoch: int) -> None:
        self.run.log({f"{kind}/{k}": v for k, v in values.items()}, step=step)

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        import wandb

        self.run.log({tag: wandb.Histogram(values)}, step=step)

    def image(self, tag: str, rgb: np.ndarray, step: int, epoch: int) -> None:
        import wandb

        self.run.log({tag: wandb.Image(rgb, caption=f"epoch {epoch + 1}")}, step=step)

    def text(self, tag: str, text: str, step: int, epoch: int) -> None:
        import html

        import wandb

        self.run.log({tag: wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)
        self.run.summary[tag] = text

    def close(self, s: Loop) -> None:
        self.run.finish(exit_code=0 if s.epoch >= s.epochs else 1)

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")


# =========================================================================== mlflow
class MlflowLogger(ExperimentLogger):
    """An MLflow run; by default in the file store `mlruns/` inside the run directory."""

    name = "mlflow"
    requires = ("mlflow", "mlflow")
    DIR = "mlruns"

    def __init__(self, every_steps: int = 20) -> None:
        super().__init__(every_steps)
        self.client: Any = None
        self.run_id: str | None = None

    def open(self, s: Loop, resumed: bool) -> None:
        assert s.run is not None
        _import_optional("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (s.run.path / self.DIR).resolve().as_uri()
            # MLflow 3 keeps its file store only on request; it is what needs no server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        if resumed and self.run_id:
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "diffnas")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(exp_id, run_name=s.run.path.name).info.run_id

    def scalars(self, kind: str, values: dict[str, float], step: int, epoch: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{kind}/{k}", v, now, step) for k, v in values.items() if math.isfinite(v)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def params(self, flat: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def histogram(self, tag: str, values: list[float], step: int) -> None: ...

    def image(self, tag: str, rgb: np.ndarray, step: int, epoch: int) -> None:
        self.client.log_image(self.run_id, rgb, f"{tag}/epoch_{epoch + 1:03d}.png")

    def text(self, tag: str, text: str, step: int, epoch: int) -> None:
        where = f"{tag}.yaml" if tag == "config" else f"{tag}/epoch_{epoch + 1:03d}.txt"
        self.client.log_text(self.run_id, text, where)

    def on_epoch_end(self, s: Loop, metrics: dict[str, Any]) -> None:
        super().on_epoch_end(s, metrics)
        alpha = metrics.get("alpha")
        if self.active and isinstance(alpha, dict) and alpha:  # no histograms in MLflow
            epoch = int(metrics.get("epoch", s.epoch - 1))
            self.client.log_dict(self.run_id, alpha, f"alpha/epoch_{epoch + 1:03d}.json")

    def close(self, s: Loop) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if s.epoch >= s.epochs else "KILLED")

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")


# =========================================================================== registry
LOGGERS: dict[str, type[ExperimentLogger]] = {
    "csv": CsvLogger,
    "tensorboard": TensorBoardLogger,
    "wandb": WandbLogger,
    "mlflow": MlflowLogger,
}


def _missing(name: str, module: str, extra: str) -> str:
    return (
        f"the {name} logger needs the '{module}' package, which is not installed: "
        f"{EXTRA_HINT.format(extra=extra)} (or drop '{name}' from log.loggers / --logger)"
    )


def _import_optional(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(_missing(module, module, extra)) from None


def check_loggers(names: Sequence[str], where: str = "log.loggers") -> None:
    """Known names, no repeats, and each optional backend installed (without importing it)."""
    seen: set[str] = set()
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(
                f"{where}: unknown logger '{name}'{did_you_mean(str(name), LOGGERS)}; choose "
                f"from {', '.join(LOGGERS)}"
            )
        if name in seen:
            raise ConfigError(f"{where}: logger '{name}' is listed twice")
        seen.add(name)
        req = LOGGERS[name].requires
        if req is not None and importlib.util.find_spec(req[0]) is None:
            raise ConfigError(_missing(name, req[0], req[1]))


def build_loggers(names: Sequence[str], every_steps: int = 20) -> list[ExperimentLogger]:
    check_loggers(names)
    return [LOGGERS[n](every_steps) for n in names]


C = TypeVar("C")


def with_loggers(config: C, names: Sequence[str]) -> C:
    """`config` (a search or training config) with `names` added to its log.loggers."""
    log = config.log  # type: ignore[attr-defined]
    merged = [*log.loggers, *(n for n in names if n not in log.loggers)]
    check_loggers(merged, "--logger")
    return dataclasses.replace(config, log=dataclasses.replace(log, loggers=merged))  # type: ignore[type-var]


def extra_loggers(config: Any, names: Sequence[str]) -> list[ExperimentLogger]:
    """Loggers of `names` that a resumed run's own config does not already have."""
    new = [n for n in dict.fromkeys(names) if n not in config.log.loggers]
    check_loggers(new, "--logger")
    return build_loggers(new, config.log.every_steps)
