"""The `diffnas` command line: one subcommand per module in diffnas.commands.

Errors caused by input (config, genotype, dataset, checkpoint, NaN loss) or by the file
system (full disk, no permission, a file in the way) print as one line naming the problem
and the fix, with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from rich.console import Console
from rich.markup import escape

from diffnas.errors import DiffnasError, os_error_message

DESCRIPTION = """\
diffnas: differentiable neural architecture search (DARTS and its family).

A method is a preset that names its parts (relaxation, regularizers, schedule, updater,
derivation); spaces are darts (8-op cells) and nb201 (NAS-Bench-201). Run
`diffnas COMMAND --help` for each command's options.
"""

EPILOG = """\
examples:
  diffnas search                                   # DARTS on the built-in digits data
  diffnas search --config darts --space nb201 --dataset cifar10 --data-root DIR
  diffnas search --resume runs/darts-nb201-cifar10-20260101-120000
  diffnas lookup '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'
  diffnas zoo
  diffnas train DARTS_V2 --dataset cifar10 --data-root DIR
  diffnas profile DARTS_V2 --imagenet
  diffnas --import my_ops.py search --space darts_gelu   # user ops/spaces (docs/user_models.md)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffnas",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from diffnas import __version__

    parser.add_argument("--version", action="version", version=f"diffnas {__version__}")
    parser.add_argument(
        "--import",
        action="append",
        default=[],
        metavar="MODULE",
        dest="imports",
        help="import a plugin first (module name or .py path; repeatable, anywhere on the "
        "line): its ops, spaces, datasets and parts become available and runs record it",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import diffnas.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"diffnas.commands.{info.name}")
        module.register(sub)
    return parser


def _error(console: Console, message: str) -> None:
    """One line: line breaks of quoted input (a value, a file name) are shown as \\n; escaped
    markup: messages quote config values such as `exclude_ops: [none]`."""
    one_line = message.replace("\r", "\\r").replace("\n", "\\n")
    console.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)


def default_wait_policy() -> None:
    """Idle OpenMP threads spin briefly, then sleep (`diffnas.openmp.WAIT_POLICY`), unless
    the environment names a wait policy. PyTorch's bundled GNU OpenMP reads this when it
    loads, so it takes effect only before torch is imported. Its default spins a waiting
    thread ~300,000 iterations; on a machine with other busy processes those spinning
    threads take the cores the working ones need (docs/engine.md, "Threads")."""
    if "torch" not in sys.modules:
        from diffnas.openmp import with_wait_policy

        os.environ.update(with_wait_policy(dict(os.environ)))


def main(argv: list[str] | None = None) -> int:
    default_wait_policy()
    from diffnas.plugins import extract_imports, load_all

    console = Console(stderr=True)
    try:
        imports, argv = extract_imports(list(sys.argv[1:] if argv is None else argv))
        load_all(imports)
    except DiffnasError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except DiffnasError as exc:
        _error(console, str(exc))
        return 2
    except OSError as exc:  # the file system said no: full disk, permissions, a file in the way
        _error(console, os_error_message(exc))
        return 2
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/]; a run continues from its last checkpoint with "
            "`diffnas search --resume RUN_DIR` (training runs: `diffnas train --resume RUN_DIR`)"
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
