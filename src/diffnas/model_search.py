"""`diffnas.search` on a user's model and/or a user's torch Datasets and DataLoaders.

Everything is checked (data types and sizes, choices of the model, parts that need a
built-in space) before a run directory is created. The search itself is the ordinary
`Searcher` with the user model's space, the user data's streams and the user loss.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from diffnas.callbacks.base import Callback
from diffnas.choices import ModelSpace, check_parts, fix
from diffnas.config import Config, SpaceConfig, SupernetConfig, from_dict
from diffnas.data.loader import SearchData
from diffnas.data.user import check_data, info_of, user_streams
from diffnas.errors import ConfigError, DatasetError
from diffnas.parts import build_part
from diffnas.registry import SCHEDULES
from diffnas.search import Searcher, SearchResult, _as_config, default_callbacks
from diffnas.spaces.base import Space, get_space
from diffnas.utils import resolve_device


@dataclass
class ModelSearchResult(SearchResult):
    """A search on a user model: the genotype, {label: chosen}, and the searched model."""

    space: ModelSpace | None = field(default=None, repr=False)

    @property
    def choices(self) -> dict[str, Any]:
        assert self.space is not None
        return self.space.choices(self.genotype)

    def fixed_model(self) -> nn.Module:
        """The user's model with each choice fixed, keeping the supernet's trained weights."""
        assert self.space is not None
        return fix(self.space.model, self.choices)

    def __str__(self) -> str:
        where = f"\nrun directory: {self.run_dir}" if self.run_dir else ""
        return "choices: " + json.dumps(self.choices) + where


def search_user(
    target: Any,
    *,
    method: Config | dict[str, Any] | str | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
    train_data: Any = None,
    val_data: Any = None,
    loss: Any = None,
) -> SearchResult:
    """Search `target` (a user nn.Module with choices, a Space, or a config of a built-in
    space) on `train_data` / `val_data` (torch Datasets or DataLoaders)."""
    if train_data is None:
        raise DatasetError(
            "a search on a user model needs train_data=: a torch Dataset of (input, target) "
            "pairs or a DataLoader (val_data= optional: without it train_data is split in two)"
        )
    check_data(train_data, "train_data")
    if val_data is not None:
        check_data(val_data, "val_data")
    if loss is not None and not callable(loss):
        raise ConfigError(f"loss must be callable as loss(outputs, targets), got {type(loss)}")
    if isinstance(target, nn.Module | Space):
        cfg = _as_config(method if method is not None else "darts", overrides)
    elif method is not None and target is not None:
        raise ConfigError("pass the method as the first argument or as method=, not both")
    else:
        cfg = _as_config(target if target is not None else method, overrides)
    space: Space
    if isinstance(target, nn.Module):
        space = ModelSpace(target)
    elif isinstance(target, Space):
        space = target
    else:
        space = get_space(cfg.space)
    if isinstance(space, ModelSpace):
        check_parts(cfg, space)
        # a preset's space section (op set, cells) and its cell options (partial channels,
        # node BN) belong to the built-in cells; β edge normalization applies to any choice
        cfg = dataclasses.replace(
            cfg,
            space=SpaceConfig(name=space.name),
            supernet=SupernetConfig(edge_norm=cfg.supernet.edge_norm),
        )
    cfg, data = _user_data(cfg, space, train_data, val_data)
    from diffnas.run import RunDir

    _single_process()
    run = RunDir.create(cfg, out if out is not None else cfg.out)
    try:
        cbs = default_callbacks(cfg, progress) + list(callbacks or [])
        result = Searcher(cfg, run, cbs, space=space, data=data, loss=loss).run_search()
    except BaseException:
        run.discard()  # a start that failed before its first checkpoint leaves nothing
        raise
    finally:
        run.release()
    if not isinstance(space, ModelSpace):
        return result
    out_result = ModelSearchResult(
        result.genotype, result.history, result.run_dir, result.config, space
    )
    return out_result


def _user_data(
    cfg: Config, space: Space, train_data: Any, val_data: Any
) -> tuple[Config, SearchData]:
    """The config with data.dataset 'user' and the SearchData of the user's data."""
    info = info_of(train_data, scan=not isinstance(space, ModelSpace))
    if not isinstance(space, ModelSpace) and info.num_classes < 1:
        raise DatasetError(
            f"the {space.name} space's classifier needs class-index targets (int64 class "
            f"numbers); search a user model with its own head and loss instead"
        )
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset="user"))
    device = resolve_device(cfg.device)
    portion = cfg.data.train_portion or _schedule_portion(cfg)
    train, val = user_streams(
        train_data,
        val_data,
        batch_size=cfg.data.batch_size,
        seed=cfg.seed,
        train_portion=portion,
        device=device,
    )
    data = SearchData(info, train, val)  # type: ignore[arg-type]
    return cfg, data


def _schedule_portion(cfg: Config) -> float:
    schedule = build_part(SCHEDULES, cfg.search.schedule, "search.schedule")
    return float(schedule.train_portion)


def resume_user(
    run_dir: str | Path,
    model: nn.Module,
    *,
    train_data: Any,
    val_data: Any = None,
    loss: Any = None,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
) -> SearchResult:
    """Continue a search of a user model: the same model class, data and loss again."""
    from diffnas.run import RunDir

    check_data(train_data, "train_data")
    if val_data is not None:
        check_data(val_data, "val_data")
    _single_process()
    run = RunDir.open(run_dir, lock=True)  # one writer: refused while the run is going
    try:
        # as written by search_user (its space 'model' and data 'user' are not registry names)
        cfg = from_dict(Config, yaml.safe_load(run.config_path.read_text()) or {})
        space = ModelSpace(model, name=cfg.space.name)
        cfg, data = _user_data(cfg, space, train_data, val_data)
        cbs = default_callbacks(cfg, progress) + list(callbacks or [])
        searcher = Searcher(cfg, run, cbs, space=space, data=data, loss=loss)
        searcher.load_state_dict(run.load_checkpoint())
        run.write_metrics(searcher.history)  # rebuilt from the checkpoint's history
        result = searcher.run_search()
    finally:
        run.release()
    return ModelSearchResult(result.genotype, result.history, result.run_dir, cfg, space)


def _single_process() -> None:
    from diffnas import distributed

    if distributed.world_size() > 1:
        raise ConfigError(
            "a search of a user model or user DataLoaders does not run data-parallel: start "
            "it as one process (not under torchrun), or register the data as a dataset "
            "(docs/user_models.md) and search a diffnas space"
        )


def is_user_target(config: Any, dataset: Any) -> bool:
    """Whether `diffnas.search` was handed a user model/space or torch data."""
    from diffnas.data.datasets import Dataset

    return isinstance(config, nn.Module | Space) or (
        dataset is not None and not isinstance(dataset, Dataset)
    )


__all__ = ["ModelSearchResult", "is_user_target", "search_user"]
