"""Batch streams over in-memory datasets, with the search's train/validation split.

The order of an epoch is a function of (seed, epoch) and a batch's augmentation of
(seed, epoch, step): a run resumed at any step sees exactly the batches it would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from diffnas.config import DataConfig
from diffnas.data.datasets import Dataset, ImageSet, load_dataset
from diffnas.data.transforms import Augment, cutout, normalize, resize
from diffnas.errors import ConfigError
from diffnas.utils import derived_seed

Batch = tuple[torch.Tensor, torch.Tensor]


class BatchStream:
    """Batches of (normalized float images, labels) over `indices` of an ImageSet."""

    def __init__(
        self,
        data: ImageSet,
        indices: torch.Tensor,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: Augment | None,
        cutout: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.images = data.images[indices].to(self.device)
        self.labels = data.labels[indices].to(self.device)
        self.batch_size = min(batch_size, len(indices))
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        self.augment = augment
        self.cutout = cutout
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(
            n, generator=torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        )

    def batch(self, order: torch.Tensor, epoch: int, step: int) -> Batch:
        # the indices are on the host: a non-blocking copy, so that the host does not wait for
        # the device's queued work (a blocking copy to a CUDA device does)
        idx = order[step * self.batch_size : (step + 1) * self.batch_size]
        idx = idx.to(self.device, non_blocking=True)
        x = self.images[idx]
        gen = torch.Generator().manual_seed(derived_seed(self.seed, epoch, step, 1))
        if self.augment is not None:
            x = self.augment(x, gen)
        x = normalize(x, self.mean, self.std)
        if self.cutout:
            x = cutout(x, self.cutout, gen)
        return x, self.labels[idx]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        for step in range(start, len(self)):
            yield self.batch(order, epoch, step)


class CyclingStream:
    """Endless batches from a BatchStream (the validation batches of architecture steps)."""

    def __init__(self, stream: BatchStream) -> None:
        self.stream = stream
        self.epoch = 0
        self.step = 0
        self._order: torch.Tensor | None = None

    def next(self) -> Batch:
        if self.step >= len(self.stream):
            self.epoch, self.step, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self.stream.order(self.epoch)
        batch = self.stream.batch(self._order, self.epoch, self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.step, self._order = state["epoch"], state["step"], None


@dataclass
class SearchData:
    dataset: Dataset
    train: BatchStream
    val: BatchStream


def prepare_dataset(cfg: DataConfig) -> Dataset:
    ds = load_dataset(cfg.dataset, cfg.root, cfg.cache_dir)
    if cfg.resolution is not None and cfg.resolution != ds.input_size:
        if cfg.resolution < 4:
            raise ConfigError(f"data.resolution must be at least 4, got {cfg.resolution}")
        ds.train.images = resize(ds.train.images, cfg.resolution)
        ds.test.images = resize(ds.test.images, cfg.resolution)
    return ds


def augment_for(cfg: DataConfig, ds: Dataset) -> Augment:
    a = cfg.augment
    return Augment(
        crop_padding=ds.crop_padding if a.crop_padding is None else a.crop_padding,
        flip=ds.flip if a.flip is None else a.flip,
    )


def search_data(
    cfg: DataConfig,
    seed: int,
    train_portion: float,
    device: torch.device | str = "cpu",
    dataset: Dataset | None = None,
) -> SearchData:
    """Split the training set into the weight (train) and architecture (val) halves."""
    ds = dataset or prepare_dataset(cfg)
    from diffnas.data.user import UserData, user_search_data

    if isinstance(ds, UserData):  # a registered dataset of torch data (diffnas.data.user)
        return user_search_data(ds, cfg, seed, train_portion, device)
    n = len(ds.train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, 99)))
    perm = perm[: max(2, int(round(cfg.subset * n)))]
    n_train = int(round(train_portion * len(perm)))
    if n_train < 2 or len(perm) - n_train < 2:
        raise ConfigError(
            f"the search split is too small: {len(perm)} images with train_portion {train_portion}; "
            f"raise data.subset or change data.train_portion"
        )
    mean, std = ds.mean_std()
    aug = augment_for(cfg, ds)

    def stream(indices: torch.Tensor, stream_seed: int) -> BatchStream:
        return BatchStream(
            ds.train,
            indices,
            cfg.batch_size,
            mean,
            std,
            aug,
            cfg.augment.cutout,
            stream_seed,
            device=device,
        )

    train = stream(perm[:n_train], derived_seed(seed, 1))
    val = stream(perm[n_train:], derived_seed(seed, 2))
    return SearchData(ds, train, val)
