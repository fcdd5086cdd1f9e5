"""Shared fixtures: tiny configs that run a real search in a second or two."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffnas.callbacks.base import Callback
from diffnas.config import Config, load_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_overrides(space: str = "nb201", epochs: int = 2) -> list[str]:
    """The settings of a search on a fraction of digits with a supernet small enough for unit
    tests (tiny_config's, for other presets)."""
    return [
        f"space.name={space}",
        "space.channels=4",
        f"space.layers={1 if space == 'nb201' else 3}",
        "data.dataset=digits",
        "data.subset=0.3",
        "data.batch_size=32",
        f"search.epochs={epochs}",
        "log.progress=false",
        "threads=1",
    ]


def tiny_config(space: str = "nb201", epochs: int = 2, **extra: str) -> Config:
    """A search on a fraction of digits with a supernet small enough for unit tests."""
    overrides = tiny_overrides(space, epochs) + [f"{k}={v}" for k, v in extra.items()]
    return load_config(["darts"], overrides)


class Kill(Callback):
    """Simulates `kill -9` right after a given epoch end or step (after any checkpoint)."""

    name = "kill"

    def __init__(self, after_epoch: int | None = None, after_step: int | None = None) -> None:
        self.after_epoch, self.after_step = after_epoch, after_step

    def on_step_end(self, s) -> None:
        if self.after_step is not None and s.global_step == self.after_step:
            raise KeyboardInterrupt

    def on_epoch_end(self, s, metrics) -> None:
        if self.after_epoch is not None and metrics["epoch"] == self.after_epoch:
            raise KeyboardInterrupt


class Poison(Callback):
    """Makes the model's first weight tensor NaN after global step `after_step` (step
    after_step + 1 is the first whose losses are not finite) or at the start of epoch
    `at_epoch`."""

    name = "poison"

    def __init__(self, after_step: int | None = None, at_epoch: int | None = None) -> None:
        self.after_step, self.at_epoch = after_step, at_epoch

    @staticmethod
    def _poison(s) -> None:
        with torch.no_grad():
            next(s.model.parameters()).fill_(float("nan"))

    def on_step_end(self, s) -> None:
        if self.after_step is not None and s.global_step == self.after_step:
            self._poison(s)

    def on_epoch_start(self, s) -> None:
        if self.at_epoch is not None and s.epoch == self.at_epoch:
            self._poison(s)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        pytest.skip(f"the shared CIFAR-10 JPEG copy is not present at {archive}")
    return archive
