"""Shared CLI plumbing: config options, override flags, model-size options, genotype printing."""

from __future__ import annotations

import argparse
from typing import Any

from diffnas.config import Config, load_config


def add_run_args(
    g: argparse._ArgumentGroup,
    epochs_key: str = "search.epochs",
    set_example: str = "--set search.arch_lr=6e-4 --set search.updater=second_order",
) -> None:
    """Options every run command has (search, train): data, epochs, seed, device, --set."""
    g.add_argument("--dataset", help="digits (built in), cifar10, cifar100, imagefolder, synthetic")
    g.add_argument("--data-root", help="dataset location (data.root)")
    g.add_argument("--epochs", type=int, help=f"epochs ({epochs_key})")
    g.add_argument("--seed", type=int, help="random seed")
    add_device_arg(g, None)
    add_threads_arg(g)
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help=f"override any config key, e.g. {set_example}",
    )


def device_arg(text: str) -> str:
    """argparse type of --device: auto, cpu, cuda, cuda:N or mps."""
    from diffnas.config import check_device
    from diffnas.errors import ConfigError

    try:
        return check_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_arg(g: argparse._ActionsContainer, default: str | None) -> None:
    g.add_argument(
        "--device",
        type=device_arg,
        default=default,
        metavar="DEVICE",
        help=f"auto, cpu, cuda, cuda:N or mps (default {default or 'auto'})",
    )


def add_threads_arg(g: argparse._ActionsContainer) -> None:
    g.add_argument(
        "--threads",
        type=int,
        help="CPU threads for PyTorch (default: the cores other processes leave free)",
    )


def add_config_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
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
    add_run_args(g)
    return g


def flag_overrides(args: argparse.Namespace, mapping: tuple[tuple[str, str], ...]) -> list[str]:
    """`key=value` overrides for the flags of `mapping` (flag attribute, config key) given."""
    overrides = []
    for flag, key in mapping:
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides


RUN_FLAGS = (
    ("dataset", "data.dataset"),
    ("data_root", "data.root"),
    ("seed", "seed"),
    ("device", "device"),
    ("threads", "threads"),
)


# `diffnas search`'s network-size flags (named as in train, profile and export)
SEARCH_SIZE_FLAGS = (
    ("channels", "space.channels"),
    ("layers", "space.layers"),
    ("batch_size", "data.batch_size"),
)


def add_search_size_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--channels", type=int, help="supernet initial channels C (space.channels)")
    g.add_argument("--layers", type=int, help="darts: cells; nb201: cells per stage (space.layers)")
    g.add_argument("--batch-size", type=int, help="data.batch_size")


def config_from_args(args: argparse.Namespace, size_flags: bool = False) -> Config:
    """The config of --config/--space/run flags/--set; `size_flags`: also --channels, --layers
    and --batch-size as search settings (`diffnas search`)."""
    sources = args.config or ["darts"]
    mapping = (
        ("space", "space.name"),
        *RUN_FLAGS,
        ("epochs", "search.epochs"),
        *(SEARCH_SIZE_FLAGS if size_flags else ()),
    )
    return load_config(sources, flag_overrides(args, mapping) + list(args.overrides))


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Network options for a genotype or zoo name (a trained run fixes its own network)."""
    g = p.add_argument_group(
        "network (for a genotype or zoo name; defaults: darts CIFAR 20 cells C=36 32x32, "
        "10 classes; nb201 C=16, 5 cells per stage)"
    )
    g.add_argument(
        "--imagenet",
        action="store_true",
        help="the DARTS ImageNet mobile setting: stride-8 stem, 14 cells, C=48, 224x224 "
        "input, 1000 classes (= --network imagenet)",
    )
    g.add_argument("--network", choices=["cifar", "imagenet"], help="skeleton around the cells")
    g.add_argument("--channels", type=int, help="initial channels C")
    g.add_argument("--layers", type=int, help="darts: cells; nb201: cells per stage")
    g.add_argument("--input-size", type=int, help="input side length in pixels")
    g.add_argument("--num-classes", type=int, help="classifier outputs")
    g.add_argument("--in-channels", type=int, help="input image channels (default 3)")


LOGGER_NAMES = ("csv", "tensorboard", "wandb", "mlflow")


def add_output_args(p: argparse.ArgumentParser) -> None:
    """--no-progress and --logger, shared by the run commands (search, train)."""
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar, one plain line per epoch (also the default when stdout is not "
        "a terminal)",
    )
    p.add_argument(
        "--logger",
        action="append",
        default=[],
        choices=LOGGER_NAMES,
        help="also log to csv, tensorboard, wandb (offline) or mlflow (file store) in the run "
        "directory; repeatable, added to log.loggers (with --resume: loggers the run lacks)",
    )


def progress_args(args: argparse.Namespace) -> tuple[bool | None, list[Any] | None]:
    """`progress` and `callbacks` of a run for --no-progress: no bar, still a line per epoch."""
    if not args.no_progress:
        return None, None
    from diffnas.callbacks.progress import ProgressBar

    return False, [ProgressBar(bar=False)]


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from diffnas.errors import ConfigError

    network = args.network
    if args.imagenet:
        if network not in (None, "imagenet"):
            raise ConfigError(f"--imagenet contradicts --network {network}")
        network = "imagenet"
    return {
        "network": network,
        "channels": args.channels,
        "layers": args.layers,
        "input_size": args.input_size,
        "num_classes": args.num_classes,
        "in_channels": args.in_channels,
    }
