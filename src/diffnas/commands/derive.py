"""`diffnas derive`: the genotype of a run's current architecture weights."""

from __future__ import annotations

import argparse

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "derive",
        help="derive the genotype of a run",
        description="Load RUN_DIR's checkpoint and derive a genotype from its architecture "
        "weights with the run's derivation (e.g. top-2 per node, ACA channel "
        "allocation), also for a run that is still going or was killed.",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="a search run directory (finished or still running)"
    )
    p.add_argument("--out", "-o", help="write the genotype to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffnas.run import RunDir
    from diffnas.search import Searcher
    from diffnas.spaces.render import render_genotype

    run_dir = RunDir.open(args.run_dir)
    searcher = Searcher(run_dir.load_config(), None, [])
    searcher.load_state_dict(run_dir.load_checkpoint())
    genotype = searcher.derivation.derive(searcher, final=True)
    out = Console(soft_wrap=True)
    out.print(render_genotype(genotype), highlight=False)
    out.print(f"(epoch {searcher.epoch}/{searcher.epochs} of the search)", highlight=False)
    if args.out:
        genotype.save(args.out)
        out.print(f"written to {args.out}")
    return 0
