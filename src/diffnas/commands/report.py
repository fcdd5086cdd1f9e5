"""`diffnas report`: a self-contained HTML report of a run (plots, α evolution, genotype)."""

from __future__ import annotations

import argparse

from rich.console import Console

HELP = """\
Write RUN_DIR/report.html: one self-contained page (plots embedded as PNG) with every
numeric per-epoch series of metrics.jsonl (losses, accuracies, NAS-Bench-201 lookup, share
of parameter-free ops, each part's own values such as RDARTS's Reg, λ and cell costs), the
op-weight evolution of every α key, the genotype as text and the configuration. Works on
a run that is still going (it reports the epochs finished so far).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of a run",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="a search run directory (finished or still running)"
    )
    p.add_argument("--out", "-o", help="write the report here instead of RUN_DIR/report.html")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffnas.report import write_report

    path = write_report(args.run_dir, args.out)
    Console(soft_wrap=True).print(f"report written to {path}", highlight=False)
    return 0
