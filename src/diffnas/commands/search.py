"""`diffnas search`: run (or resume) an architecture search."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from diffnas.commands._common import add_config_args, config_from_args

LOGGER_NAMES = ("csv", "tensorboard", "wandb", "mlflow")

HELP = """\
Run a differentiable architecture search and write a run directory with config.yaml,
metrics.jsonl (per epoch: losses, accuracies, α, derived genotype, NB201 lookup),
genotype.json and checkpoint.pt. A killed run continues with --resume RUN_DIR.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="run an architecture search",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument(
        "--out", "-o", help="run directory (default runs/<method>-<space>-<dataset>-<time>)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its checkpoint (its own config is used)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--logger",
        action="append",
        default=[],
        choices=LOGGER_NAMES,
        help="also log to csv, tensorboard, wandb (offline) or mlflow (file store) in the run "
        "directory; repeatable, added to log.loggers (with --resume: loggers the run lacks)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="probe a few small steps, print the expected peak memory and time per epoch, and "
        "exit (status 2 with the batch size that would fit when it would not); writes nothing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import diffnas
    from diffnas.config import dump_config

    out = Console(soft_wrap=True)
    progress = False if args.no_progress else None
    if args.resume:
        callbacks: list[Any] = []
        if args.logger:
            from diffnas.callbacks.loggers import extra_loggers
            from diffnas.run import RunDir

            callbacks += extra_loggers(RunDir.open(args.resume).load_config(), args.logger)
        result = diffnas.resume(args.resume, progress=progress, callbacks=callbacks)
    else:
        config = config_from_args(args)
        if args.logger:
            from diffnas.callbacks.loggers import with_loggers

            config = with_loggers(config, args.logger)
        if args.print_config:
            out.print(dump_config(config), end="", highlight=False)
            return 0
        if args.dry_run:
            from diffnas.estimate import estimate

            est = estimate(config)
            out.print(est.report(), highlight=False)
            est.check()
            return 0
        result = diffnas.search(config, out=args.out, progress=progress)
    out.print(str(result), highlight=False)
    return 0
