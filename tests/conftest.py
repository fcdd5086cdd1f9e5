"""Shared fixtures: tiny configs that run a real search in a second or two."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffnas.config import Config, load_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_config(space: str = "nb201", epochs: int = 2, **extra: str) -> Config:
    """A search on a fraction of digits with a supernet small enough for unit tests."""
    overrides = [
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
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(["darts"], overrides)


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
