"""`diffnas latency collect|fit`: measure random architectures here, fit a latency predictor.

The predictor (an MLP over per-edge op weights) is what the `latency` regularizer adds
to a search's validation loss.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from diffnas.commands._common import add_device_arg, add_threads_arg

HELP = """\
Latency-aware search in three steps, on the device the network will run on:

  diffnas latency collect --space nb201 -n 200 -o latency.json   # time random architectures
  diffnas latency fit latency.json -o latency.pt                 # MLP + held-out error
  diffnas search --space nb201 --set 'search.regularizers=[{name: latency, predictor: latency.pt, weight: 0.1}]'

The predictor's input is the architecture encoding (per-edge op weights of every searched
cell: one-hot for a measured architecture, the relaxation's weights during a search), so
collect with the same space settings as the search (--config, --space, --set space.*).
"""

COLLECT_HELP = """\
Build N distinct random architectures of the space as discrete networks (the space's
evaluation network: nb201 C=16 with 5 cells per stage, darts C=36 with 20 cells, unless
--channels/--layers say otherwise), time each on a fixed random batch on this machine
(median, or --statistic min, of --repeats forward passes after --warmup untimed ones;
eval mode, no autograd)
and write them to a JSON dataset with the space layout, input shape, device and threads.
"""

FIT_HELP = """\
Train a small MLP (encoding -> latency) on a random (1 - holdout) share of a dataset
written by `collect`, report its mean relative error on the held-out architectures next to
the error of always predicting the training mean, and save the predictor.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="latency predictor for latency-aware search",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lsub = p.add_subparsers(dest="latency_command", metavar="SUBCOMMAND", required=True)

    c = lsub.add_parser(
        "collect",
        help="time random architectures of a space on this machine",
        description=COLLECT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = c.add_argument_group("space (as for `diffnas search`)")
    g.add_argument(
        "--config", "-c", action="append", default=[], metavar="FILE|PRESET",
        help="config file or preset whose space section is used (default: darts)",
    )  # fmt: skip
    g.add_argument("--space", help="search space: darts or nb201 (space.name)")
    g.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a config key, e.g. --set space.exclude_ops=[none]",
    )  # fmt: skip
    c.add_argument("-n", type=int, default=100, help="architectures to measure (default 100)")
    c.add_argument("--out", "-o", required=True, help="dataset file to write (JSON)")
    c.add_argument("--channels", type=int, help="network width (default: the space's eval net)")
    c.add_argument("--layers", type=int, help="network depth (default: the space's eval net)")
    c.add_argument("--resolution", type=int, default=32, help="input side (default 32)")
    c.add_argument("--batch-size", type=int, default=1, help="batch size (default 1)")
    c.add_argument("--in-channels", type=int, default=3, help="input channels (default 3)")
    c.add_argument("--classes", type=int, default=10, help="classifier outputs (default 10)")
    c.add_argument("--repeats", type=int, default=10, help="timed runs per net (default 10)")
    c.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    c.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    c.add_argument(
        "--statistic", choices=["median", "min"], default="median",
        help="latency of an architecture from its timed runs (default median; min is "
        "steadier on a machine shared with other jobs)",
    )  # fmt: skip
    add_device_arg(c, "cpu")
    add_threads_arg(c)
    c.set_defaults(func=run_collect)

    f = lsub.add_parser(
        "fit",
        help="fit the latency MLP and report its held-out error",
        description=FIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("dataset", metavar="DATASET", help="file written by `diffnas latency collect`")
    f.add_argument("--out", "-o", required=True, help="predictor file to write (.pt)")
    f.add_argument("--holdout", type=float, default=0.2, help="held-out share (default 0.2)")
    f.add_argument(
        "--hidden", type=int, nargs="+", default=[64, 64], help="hidden sizes (default 64 64)"
    )
    f.add_argument("--steps", type=int, default=1000, help="full-batch Adam steps (default 1000)")
    f.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    f.add_argument("--seed", type=int, default=0, help="split and init seed (default 0)")
    f.set_defaults(func=run_fit)


def run_collect(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from diffnas.bench.latency import collect
    from diffnas.commands._common import config_from_args
    from diffnas.spaces import get_space
    from diffnas.utils import resolve_device, set_threads

    config = config_from_args(args)
    set_threads(args.threads)
    space = get_space(config.space)
    device = resolve_device(args.device)
    out = Console()
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("measuring", total=args.n)
        dataset = collect(
            space,
            args.n,
            channels=args.channels,
            layers=args.layers,
            resolution=args.resolution,
            batch_size=args.batch_size,
            in_channels=args.in_channels,
            num_classes=args.classes,
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
            statistic=args.statistic,
            device=device,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    dataset.save(args.out)
    lat = sorted(r.latency_ms for r in dataset.records)
    out.print(
        f"{len(lat)} {space.name} architectures on {dataset.meta['device']} "
        f"({dataset.meta['threads']} threads, input {dataset.meta['input']}): latency "
        f"{lat[0]:.3f} .. {lat[-1]:.3f} ms (median {lat[len(lat) // 2]:.3f} ms); "
        f"written to {args.out}",
        highlight=False,
    )
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from diffnas.bench.latency import LatencyDataset, fit

    dataset = LatencyDataset.load(args.dataset)
    model, report = fit(
        dataset,
        holdout=args.holdout,
        hidden=args.hidden,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
    )
    model.save(args.out)
    table = Table(title=f"latency predictor on {report.n_test} held-out architectures")
    table.add_column("predictor")
    table.add_column("mean relative error", justify="right")
    table.add_row(f"MLP {args.hidden}", f"{100 * report.mlp_rel_error:.1f} %")
    table.add_row("training mean", f"{100 * report.mean_rel_error:.1f} %")
    out = Console()
    out.print(table)
    out.print(
        f"trained on {report.n_train} architectures (training error "
        f"{100 * report.mlp_train_rel_error:.1f} %); predictor written to {args.out}",
        highlight=False,
    )
    return 0
