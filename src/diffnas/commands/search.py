"""`diffnas search`: run (or resume) an architecture search."""

from __future__ import annotations

import argparse

from rich.console import Console

from diffnas.commands._common import (
    add_config_args,
    add_output_args,
    add_search_size_args,
    config_from_args,
    progress_args,
)

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
    add_search_size_args(add_config_args(p))
    p.add_argument(
        "--out", "-o", help="run directory (default runs/<method>-<space>-<dataset>-<time>)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its checkpoint under its own config.yaml; --threads, "
        "--epochs, --device, --data-root and --set of learning rates, checkpoint and log keys "
        "may change it (other changes are refused with the list of differences); "
        "--print-config and --dry-run show the resumed config without running",
    )
    add_output_args(p)
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
    from diffnas import distributed
    from diffnas.config import dump_config

    out = Console(soft_wrap=True, quiet=not distributed.is_main())  # torchrun: rank 0 prints
    progress, callbacks = progress_args(args)
    callbacks = callbacks if distributed.is_main() else None
    if args.resume:
        overrides = resume_overrides(args)
        if not (args.print_config or args.dry_run):
            if args.logger:
                from diffnas.callbacks.loggers import extra_loggers
                from diffnas.run import RunDir

                run_config = RunDir.open(args.resume).load_config()
                callbacks = [*(callbacks or []), *extra_loggers(run_config, args.logger)]
            result = diffnas.resume(
                args.resume, overrides=overrides, progress=progress, callbacks=callbacks
            )
            out.print(str(result), highlight=False)
            return 0
        from diffnas.search import resume_config

        config = resume_config(args.resume, overrides)
    else:
        config = config_from_args(args, size_flags=True)
        if args.logger:
            from diffnas.callbacks.loggers import with_loggers

            config = with_loggers(config, args.logger)
    if args.print_config:
        out.print(dump_config(config), end="", highlight=False)
        return 0
    if args.dry_run:
        from diffnas.bench.estimate import estimate

        est = estimate(config)
        out.print(est.report(), highlight=False)
        est.check()
        return 0
    result = diffnas.search(config, out=args.out, progress=progress, callbacks=callbacks)
    out.print(str(result), highlight=False)
    return 0


def resume_overrides(args: argparse.Namespace) -> list[str]:
    """The `key=value` changes the options ask of a resumed run (the run then decides which
    keys may change); options that cannot apply to a resume are refused."""
    from diffnas.commands._common import RUN_FLAGS, flag_overrides
    from diffnas.errors import ConfigError

    given = [f for f, v in (("--config", args.config), ("--out", args.out)) if v]
    given += ["--space"] if args.space is not None else []
    if given:
        raise ConfigError(
            f"--resume continues a run under its own config.yaml in its own directory; "
            f"drop {' '.join(given)} (change a key with --set KEY=VALUE)"
        )
    return flag_overrides(args, (*RUN_FLAGS, ("epochs", "search.epochs"))) + list(args.overrides)
