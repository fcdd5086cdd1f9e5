"""`diffnas lookup`: NAS-Bench-201 CIFAR-10 accuracy of an nb201 cell."""

from __future__ import annotations

import argparse

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lookup",
        help="NAS-Bench-201 accuracy of an nb201 cell",
        description="Look up the CIFAR-10 test accuracy of an nb201 cell in the analog-nasbench "
        "table (pip install 'diffnas[nb201]'). CELL is an NB201 string "
        "(|op~0|+|op~0|op~1|+|op~0|op~1|op~2|), a genotype file, a run directory "
        "or a zoo name. Only the op choice is scored (ACA skip fractions are ignored).",
    )
    p.add_argument("cell", metavar="CELL")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffnas.benchmarks import nb201
    from diffnas.spaces import load_genotype
    from diffnas.spaces.nb201 import to_nb201_string

    genotype = load_genotype(args.cell)
    acc = nb201.lookup(genotype)
    note = ""
    if any(e.skip_fraction for c in genotype.cells for e in c.edges):
        note = "  (op choice only: ACA skip fractions are not scored by the table)"
    Console(soft_wrap=True).print(
        f"{to_nb201_string(genotype)}  CIFAR-10 test accuracy {acc:.2f} %{note}", highlight=False
    )
    return 0
