"""Shared CLI plumbing: config options, override flags, genotype printing."""

from __future__ import annotations

import argparse

from diffnas.config import Config, load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration (later options override earlier ones)")
    g.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        metavar="FILE|PRESET",
        help="YAML config file or preset name (e.g. darts, configs/rdarts.yaml); "
        "repeat to layer a protocol on a method. Default: the darts preset.",
    )
    g.add_argument("--space", help="search space: darts or nb201 (space.name)")
    g.add_argument("--dataset", help="digits (built in), cifar10, cifar100, imagefolder, synthetic")
    g.add_argument("--data-root", help="dataset location (data.root)")
    g.add_argument("--epochs", type=int, help="search epochs (search.epochs)")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to run (default auto)")
    g.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override any config key, e.g. --set search.arch_lr=6e-4 "
        "--set search.updater=second_order",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    sources = args.config or ["darts"]
    overrides = []
    for flag, key in (
        ("space", "space.name"),
        ("dataset", "data.dataset"),
        ("data_root", "data.root"),
        ("epochs", "search.epochs"),
        ("seed", "seed"),
        ("device", "device"),
        ("threads", "threads"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(sources, overrides + list(args.overrides))
