"""`diffnas zoo`: list published cells or write one as a genotype file."""

from __future__ import annotations

import argparse

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zoo",
        help="list or export published cells",
        description="Without NAME: list the zoo. With NAME: print the cell, "
        "and with --out write it as a genotype JSON file.",
    )
    p.add_argument(
        "name", nargs="?", metavar="NAME", help="a zoo cell, e.g. DARTS_V2 (omit: list them all)"
    )
    p.add_argument("--out", "-o", help="write the genotype to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffnas.spaces import zoo
    from diffnas.spaces.render import render_genotype

    out = Console(soft_wrap=True)
    if args.name is None:
        for name in zoo.names():
            out.print(f"{name:16s} {zoo.get(name).space:6s} {zoo.describe(name)}", highlight=False)
        return 0
    genotype = zoo.get(args.name)
    out.print(render_genotype(genotype), highlight=False)
    if args.out:
        genotype.save(args.out)
        out.print(f"written to {args.out}")
    return 0
