"""Batch streams over a user's torch Datasets and DataLoaders, for the search loop.

Any map-style `torch.utils.data.Dataset` of (input, target) samples (float tensors of any
shape, any number of classes, or targets of a user loss) or a `DataLoader` yielding
(input, target) batches. A Dataset is batched here: the order of an epoch is a function of
(seed, epoch), so a resumed run sees the same batches (a TensorDataset is indexed in one
go, no per-sample collation). A DataLoader is used as it is (its own sampler, workers and
collation): the way to stream data too large for memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data._utils.collate import default_collate

from diffnas.errors import DatasetError
from diffnas.utils import derived_seed

Batch = tuple[Any, Any]


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, list | tuple):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def _pair(batch: Any, where: str) -> Batch:
    if not isinstance(batch, list | tuple) or len(batch) != 2:
        raise DatasetError(
            f"{where}: each sample/batch must be a pair (inputs, targets), got "
            f"{type(batch).__name__}{' of length ' + str(len(batch)) if isinstance(batch, list | tuple) else ''}"
        )
    return batch[0], batch[1]


class DatasetStream:
    """Batches of a map-style Dataset over `indices`, shuffled per (seed, epoch)."""

    def __init__(
        self,
        data: TorchDataset,
        indices: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        drop_last: bool = True,
        where: str = "train_data",
    ) -> None:
        self.data = data
        self.indices = indices
        self.batch_size = max(1, min(batch_size, len(indices)))
        self.seed = seed
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.where = where
        self._tensors = data.tensors if isinstance(data, TensorDataset) else None
        if self._tensors is not None and len(self._tensors) != 2:
            raise DatasetError(
                f"{where}: a TensorDataset needs exactly two tensors (inputs, targets), got "
                f"{len(self._tensors)}"
            )

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        return self.indices[torch.randperm(len(self.indices), generator=gen)]

    def batch(self, order: torch.Tensor, epoch: int, step: int) -> Batch:
        idx = order[step * self.batch_size : (step + 1) * self.batch_size]
        if self._tensors is not None:
            x, y = self._tensors[0][idx], self._tensors[1][idx]
        else:
            x, y = _pair(default_collate([self.data[int(i)] for i in idx]), self.where)
        return _to(x, self.device), _to(y, self.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        for step in range(start, len(self)):
            yield self.batch(order, epoch, step)


class _Cursor:
    def __init__(self, loader: DataLoader) -> None:
        self.it = iter(loader)
        self.pos = 0


class LoaderStream:
    """The batches of a DataLoader, as it yields them (resuming mid-epoch skips ahead)."""

    def __init__(self, loader: DataLoader, device: torch.device | str, where: str) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.where = where

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)  # type: ignore[arg-type]

    def order(self, epoch: int) -> _Cursor:
        del epoch
        return _Cursor(self.loader)

    def batch(self, order: _Cursor, epoch: int, step: int) -> Batch:
        try:
            while order.pos < step:
                next(order.it)
                order.pos += 1
            x, y = _pair(next(order.it), self.where)
        except StopIteration:
            raise DatasetError(
                f"{self.where}: the DataLoader gave fewer batches ({order.pos}) than its length "
                f"({len(self)})"
            ) from None
        order.pos += 1
        return _to(x, self.device), _to(y, self.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        cursor = self.order(epoch)
        for step in range(start, len(self)):
            yield self.batch(cursor, epoch, step)


@dataclass
class UserData:
    """What a dataset registered in `DATASETS` returns for user data (CLI searches).

    train: a torch Dataset or DataLoader; val: None (train is split for the bilevel) or the
    architecture data; label: how results on it are labelled.
    """

    train: Any
    val: Any = None
    label: str = "user data"


@dataclass
class UserDataInfo:
    """What the search records about user data (the stand-in of an image Dataset)."""

    name: str
    label: str
    input_shape: tuple[int, ...]
    num_classes: int

    @property
    def in_channels(self) -> int:
        return self.input_shape[0] if self.input_shape else 1

    @property
    def input_size(self) -> int:
        return self.input_shape[-1] if self.input_shape else 1


# =========================================================================== checks
def check_data(data: Any, where: str) -> None:
    """A clear error for anything that is not a non-empty map-style Dataset or a DataLoader."""
    if isinstance(data, DataLoader):
        try:
            n = len(data)
        except TypeError:
            raise DatasetError(
                f"{where}: the DataLoader has no length (an IterableDataset); the search needs "
                f"epochs of known length: use a map-style Dataset"
            ) from None
        if n == 0:
            raise DatasetError(f"{where}: the DataLoader yields no batch (is its dataset empty?)")
        return
    if not isinstance(data, TorchDataset) or not hasattr(data, "__getitem__"):
        raise DatasetError(
            f"{where} must be a torch.utils.data.Dataset (e.g. TensorDataset(inputs, targets)) "
            f"or a DataLoader, got {type(data).__name__}"
        )
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        raise DatasetError(
            f"{where}: the Dataset has no __len__; a search needs its size"
        ) from None
    if n == 0:
        raise DatasetError(f"{where} is empty")
    _pair(data[0], where)


def _first(data: Any, where: str) -> Batch:
    if isinstance(data, DataLoader):
        x, y = _pair(next(iter(data)), where)
        return x[0], y[0]
    return _pair(data[0], where)


def num_classes_of(data: Any) -> int:
    """1 + the largest integer target of a Dataset (0 when targets are not class indices)."""
    base = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(base, TensorDataset):
        y = base.tensors[1]
    elif isinstance(base, Subset) and isinstance(base.dataset, TensorDataset):
        y = base.dataset.tensors[1][torch.as_tensor(base.indices)]
    else:
        y = torch.as_tensor([int(base[i][1]) for i in range(len(base))])  # type: ignore[arg-type]
    if y.dtype.is_floating_point or y.dim() != 1:
        return 0
    return int(y.max()) + 1


def info_of(data: Any, where: str = "train_data", scan: bool = False) -> UserDataInfo:
    """Input shape and classes; `scan`: read every target of a generic Dataset for the
    class count (a built-in space's classifier needs it), else only tensor datasets'."""
    x, _ = _first(data, where)
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else ()
    kind = type(data).__name__
    base = data.dataset if isinstance(data, DataLoader) else data
    cheap = isinstance(base, TensorDataset) or (
        isinstance(base, Subset) and isinstance(base.dataset, TensorDataset)
    )
    try:
        classes = num_classes_of(data) if cheap or scan else 0
    except (TypeError, ValueError):
        classes = 0
    label = f"user {kind} (inputs {list(shape)}" + (f", {classes} classes)" if classes else ")")
    return UserDataInfo("user", label, shape, classes)


# =========================================================================== split
def _rebuild(loader: DataLoader, subset: Subset, shuffle: bool) -> DataLoader:
    return DataLoader(
        subset,
        batch_size=loader.batch_size,
        shuffle=shuffle,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
    )


def user_streams(
    train_data: Any,
    val_data: Any,
    *,
    batch_size: int,
    seed: int,
    train_portion: float,
    device: torch.device | str,
) -> tuple[DatasetStream | LoaderStream, DatasetStream | LoaderStream]:
    """The weight (train) and architecture (val) streams of a search on user data.

    With `val_data` None, the train data is split (seeded) into `train_portion` for the
    weights and the rest for α, as DARTS splits CIFAR-10's training set; a DataLoader's
    dataset is split and two DataLoaders with its settings are made.
    """
    if val_data is None:
        base = train_data.dataset if isinstance(train_data, DataLoader) else train_data
        n = len(base)  # type: ignore[arg-type]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, 99)))
        n_train = int(round(train_portion * n))
        if n_train < 1 or n - n_train < 1:
            raise DatasetError(
                f"train_data has {n} sample(s): too few to split into a weight and an "
                f"architecture part with train_portion {train_portion}; pass val_data"
            )
        if isinstance(train_data, DataLoader):
            from torch.utils.data import RandomSampler

            shuffle = isinstance(train_data.sampler, RandomSampler)
            tr = _rebuild(train_data, Subset(base, perm[:n_train].tolist()), shuffle)
            va = _rebuild(train_data, Subset(base, perm[n_train:].tolist()), shuffle)
            for loader, where in ((tr, "train_data"), (va, "train_data (architecture half)")):
                if len(loader) == 0:
                    raise DatasetError(
                        f"{where}: no full batch after the split; lower the DataLoader's "
                        f"batch_size or set drop_last=False"
                    )
            return LoaderStream(tr, device, "train_data"), LoaderStream(va, device, "train_data")
        return (
            DatasetStream(base, perm[:n_train], batch_size, derived_seed(seed, 1), device),
            DatasetStream(base, perm[n_train:], batch_size, derived_seed(seed, 2), device),
        )

    def stream(data: Any, s: int, where: str) -> DatasetStream | LoaderStream:
        if isinstance(data, DataLoader):
            return LoaderStream(data, device, where)
        return DatasetStream(data, torch.arange(len(data)), batch_size, s, device, where=where)

    return stream(train_data, derived_seed(seed, 1), "train_data"), stream(
        val_data, derived_seed(seed, 2), "val_data"
    )


def user_search_data(
    data: UserData, cfg: Any, seed: int, train_portion: float, device: torch.device | str
) -> Any:
    """The SearchData of a registered dataset of torch data."""
    from diffnas.data.loader import SearchData

    check_data(data.train, "train data")
    if data.val is not None:
        check_data(data.val, "validation data")
    info = info_of(data.train)
    info.name, info.label = cfg.dataset, data.label
    train, val = user_streams(
        data.train,
        data.val,
        batch_size=cfg.batch_size,
        seed=seed,
        train_portion=train_portion,
        device=device,
    )
    return SearchData(info, train, val)  # type: ignore[arg-type]
