"""One directory per run: resolved config, metrics.jsonl, genotype.json, atomic checkpoint.

The directory alone is enough to resume, reproduce or report a run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from diffnas.config import Config, dump_config, load_config
from diffnas.errors import CheckpointError
from diffnas.utils import atomic_torch_save, atomic_write_text, load_checkpoint

T = TypeVar("T")


class RunDir:
    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    CHECKPOINT = "checkpoint.pt"
    GENOTYPE = "genotype.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

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

    # ------------------------------------------------------------------ create / open
    @staticmethod
    def default_path(config: Config, root: str = "runs") -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(root) / f"{config.method}-{config.space.name}-{config.data.dataset}-{stamp}"

    @classmethod
    def create(cls, config: Any, path: str | Path | None = None) -> RunDir:
        """A new run directory holding `config` (a search Config or any config dataclass)."""
        if path is None and not isinstance(config, Config):
            raise TypeError("RunDir.create needs a path for configs other than a search Config")
        target = Path(path) if path is not None else cls.default_path(config)
        run = cls(target)
        if run.checkpoint_path.exists() or run.metrics_path.exists():
            raise CheckpointError(
                f"run directory '{target}' already holds a run; continue it with "
                f"--resume {target}, or choose another --out"
            )
        target.mkdir(parents=True, exist_ok=True)
        from diffnas.plugins import with_imports

        atomic_write_text(run.config_path, dump_config(with_imports(config)))
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.path.is_dir():
            raise CheckpointError(f"run directory '{path}' does not exist")
        if not run.config_path.exists():
            raise CheckpointError(f"'{path}' is not a diffnas run directory (no {cls.CONFIG})")
        from diffnas.plugins import load_for_run

        load_for_run(run.path)  # the plugins the run was made with
        return run

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
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is unreliable
        return records

    def keep_metrics(self, epochs: int) -> list[dict[str, Any]]:
        """Drop metric lines of epochs >= `epochs` (written after the checkpoint we resume)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) < epochs]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any]:
        if not self.checkpoint_path.exists():
            raise CheckpointError(
                f"'{self.path}' has no {self.CHECKPOINT} yet (the run stopped before its first "
                f"checkpoint); start it again instead of resuming"
            )
        return load_checkpoint(self.checkpoint_path)
