"""`diffnas lookup`: NAS-Bench-201 CIFAR-10 accuracy of an nb201 cell."""

from __future__ import annotations

import argparse

from rich.console import Console

TABLE = "analog-nasbench table: AnalogNAS-Bench's own full-precision training run"

HELP = """\
CIFAR-10 test accuracy of an nb201 cell, labelled with the table it comes from. The table
installed with pip install "diffnas[nb201]" is analog-nasbench (AnalogNAS-Bench, Benmeziane
et al. 2025): all 15,625 NAS-Bench-201 cells with one full-precision CIFAR-10 test accuracy
each, from that benchmark's own training, which is not NAS-Bench-201's published figure (the
mean of NAS-Bench-201's 200-epoch runs). The two disagree by a few tenths: the NB201
optimum is 94.37 % published and 93.99 % in the table, whose best cell is NB201_ANB_BEST
(94.07 %). Where the published mean of a zoo cell is known it is printed beside the table's.
With NAS-Bench-201's own file (NAS-Bench-201-v1_1-096897.pth, from its authors; --nb201-file
or $DIFFNAS_NB201_FILE) the cell's figure is read from it through its API package
(nas-bench-201, in the nb201 extra): the `cifar10` setting, 200 epochs, mean over its runs.
CELL is an NB201 string (|op~0|+|op~0|op~1|+|op~0|op~1|op~2|), a genotype file, a run
directory or a zoo name. Only the op choice is scored (ACA skip fractions are ignored).
"""

EPILOG = """\
examples:
  diffnas lookup NB201_OPTIMUM
  diffnas lookup '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lookup",
        help="NAS-Bench-201 accuracy of an nb201 cell (labelled with its source table)",
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "cell",
        metavar="CELL",
        help="NB201 string, genotype file, search run directory or zoo name",
    )
    p.add_argument(
        "--nb201-file",
        metavar="FILE",
        help="NAS-Bench-201's own benchmark file (.pth); default $DIFFNAS_NB201_FILE",
    )
    p.set_defaults(func=run)


def lookup_lines(cell: str, nb201_file: str | None = None) -> list[str]:
    """The lines `diffnas lookup CELL` prints: every source that scores the cell, labelled."""
    from diffnas.nasbench import nb201
    from diffnas.spaces import load_genotype, zoo
    from diffnas.spaces.nb201 import to_nb201_string

    genotype = load_genotype(cell)
    lines = [to_nb201_string(genotype)]
    official = nb201.official_file(nb201_file)
    if official is not None:
        acc = nb201.official_lookup(genotype, official)
        lines.append(
            f"  CIFAR-10 test accuracy {acc:.2f} %  (NAS-Bench-201 file {official.name}: "
            "cifar10, 200 epochs, mean over its runs)"
        )
    published = zoo.PUBLISHED_NB201.get(cell) or zoo.PUBLISHED_NB201.get(genotype.name or "")
    if published is not None:
        lines.append(
            f"  CIFAR-10 test accuracy {published:.2f} %  (NAS-Bench-201 paper: published mean)"
        )
    if (published is None and official is None) or nb201.available():
        acc = nb201.lookup(genotype)  # without the table and a published figure: says pip
        lines.append(f"  CIFAR-10 test accuracy {acc:.2f} %  ({TABLE})")
    else:
        lines.append('  (the analog-nasbench table is not installed: pip install "diffnas[nb201]")')
    if any(e.skip_fraction for c in genotype.cells for e in c.edges):
        lines.append("  op choice only: ACA skip fractions are not scored by the tables")
    return lines


def run(args: argparse.Namespace) -> int:
    out = Console(soft_wrap=True)
    for line in lookup_lines(args.cell, args.nb201_file):
        out.print(line, highlight=False, markup=False)
    return 0
