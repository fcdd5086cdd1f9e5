"""Scoring one candidate: exact parameter count, and validation error after proxy training.

`evaluate_task` is a plain top-level function of a picklable task, so a process pool (spawn)
or a Ray task runs it the same way; its result depends on the task only (the candidate's
seed comes from its genome, threads are fixed), whichever executor runs it.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

from diffnas.config import DataConfig, NetsearchConfig, from_dict, to_dict
from diffnas.data import Dataset
from diffnas.retrain.config import ModelConfig, TrainConfig, TrainLoopConfig
from diffnas.retrain.network import build_model
from diffnas.retrain.profile import count_params
from diffnas.spaces.genotype import Genotype
from diffnas.utils import derived_seed

# per worker process: the dataset of the last task (decoded once, reused by every candidate)
_DATASETS: dict[str, Dataset] = {}


def candidate_seed(seed: int, key: str) -> int:
    """The training seed of a candidate: from the run's seed and the genome alone."""
    return derived_seed(seed, zlib.crc32(key.encode())) % (2**31)


def network_params(genotype: Genotype, num_classes: int, in_channels: int) -> int:
    """Parameters of the candidate's network as trained and exported (no auxiliary head)."""
    model = build_model(genotype, num_classes=num_classes, in_channels=in_channels)
    return count_params(model)[0]


def proxy_config(
    n: NetsearchConfig, data: DataConfig, seed: int, split_seed: int, device: str
) -> TrainConfig:
    """The short training of a candidate: the genotype's network, a held-out split, no extras."""
    proxy_data = DataConfig(
        dataset=data.dataset,
        root=data.root,
        subset=n.proxy_subset,
        batch_size=n.proxy_batch_size or data.batch_size,
        resolution=data.resolution,
        augment=data.augment,
        cache_dir=data.cache_dir,
    )
    return TrainConfig(
        seed=seed,
        device=device,
        threads=n.threads_per_worker,
        model=ModelConfig(network="cifar", auxiliary_weight=0.0, drop_path=0.0),
        data=proxy_data,
        train=TrainLoopConfig(
            epochs=n.proxy_epochs,
            lr=n.proxy_lr,
            eval_every=0,
            holdout=n.holdout,
            final_test=False,
            split_seed=split_seed,
        ),
    )


def make_task(
    key: str,
    genotype: Genotype,
    n: NetsearchConfig,
    data: DataConfig,
    seed: int,
    device: str,
) -> dict[str, Any]:
    cfg = proxy_config(n, data, candidate_seed(seed, key), seed, device)
    return {"key": key, "genotype": genotype.to_json(), "config": to_dict(cfg)}


def evaluate_task(task: dict[str, Any]) -> dict[str, Any]:
    """Proxy-train one candidate; its validation error (%) and timing."""
    from diffnas.data.loader import prepare_dataset
    from diffnas.retrain.train import Trainer

    cfg = from_dict(TrainConfig, task["config"])
    genotype = Genotype.from_json(task["genotype"], task["key"])
    data_key = repr(to_dict(cfg.data))
    if data_key not in _DATASETS:
        _DATASETS.clear()
        _DATASETS[data_key] = prepare_dataset(cfg.data)
    start = time.monotonic()
    trainer = Trainer(cfg, genotype, dataset=_DATASETS[data_key])
    result = trainer.run_training()
    acc = result.val_acc if result.val_acc is not None else 0.0
    return {
        "key": task["key"],
        "val_acc": round(acc, 4),
        "val_error": round(100.0 - acc, 4),
        "train_acc": round(float(result.history[-1]["train_acc"]), 4),
        "seed": cfg.seed,
        "train_s": round(time.monotonic() - start, 2),
    }
