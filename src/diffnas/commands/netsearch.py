"""`diffnas netsearch`: the two-stage pipeline (block search, then NSGA-II over networks)."""

from __future__ import annotations

import argparse

from rich.console import Console

from diffnas.commands._common import add_config_args, config_from_args

HELP = """\
Network-level search (stage 2 of enhanced-gradient DARTS, arXiv 2103.12529; see
docs/enhanced_gradient.md): NSGA-II (pymoo) over networks built from the
blocks of a block-level search. Genome: normal cells per stage, initial channels, and which
block each stage uses; objectives: validation error after a short proxy training (on a
held-out part of the training split) and parameter count; constraint: parameters <= budget
(netsearch.budget, default 1 M). Without --from, the block search runs first with the same
config (e.g. --config enhanced_gradient: enhanced-gradient relaxation, top-K blocks).
Candidates train in parallel (Ray when installed, else a process pool); each result is
appended to candidates.jsonl, so --resume re-trains nothing. Writes pareto.csv/json/png and
network.json, the chosen network, which `diffnas train/profile/export` accept.
"""

EPILOG = """\
examples:
  diffnas netsearch --config enhanced_gradient               # both stages on digits
  diffnas netsearch --config enhanced_gradient --from runs/eg-darts-digits-20260101-120000
  diffnas netsearch --config enhanced_gradient --dataset cifar10 --data-root DATA \\
      --set netsearch.proxy_subset=0.1 --set netsearch.budget=300000
  diffnas netsearch --resume runs/netsearch-enhanced_gradient-digits-20260101-120000
  diffnas train runs/netsearch-.../network.json --dataset cifar10 --data-root DATA
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "netsearch",
        help="network-level NSGA-II search over searched blocks (parameter budget)",
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument(
        "--from",
        dest="from_runs",
        action="append",
        default=[],
        metavar="RUN_DIR|FILE",
        help="blocks of a finished block search (its blocks.json, else genotype.json) or a "
        "genotype; repeat to pool runs (e.g. several seeds). Default: run the block search",
    )
    p.add_argument("--budget", type=int, help="parameter budget (netsearch.budget)")
    p.add_argument("--generations", type=int, help="NSGA-II generations (netsearch.generations)")
    p.add_argument("--population", type=int, help="population size (netsearch.population)")
    p.add_argument(
        "--executor",
        choices=["auto", "ray", "process", "serial"],
        help="where candidates train (netsearch.executor)",
    )
    p.add_argument("--workers", type=int, help="parallel candidates (netsearch.workers)")
    p.add_argument("--ray-address", help="address of a running Ray cluster")
    p.add_argument(
        "--out", "-o", help="run directory (default runs/netsearch-<method>-<dataset>-<time>)"
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a network search")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (block search)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


NETSEARCH_FLAGS = (
    ("budget", "netsearch.budget"),
    ("generations", "netsearch.generations"),
    ("population", "netsearch.population"),
    ("executor", "netsearch.executor"),
    ("workers", "netsearch.workers"),
    ("ray_address", "netsearch.ray_address"),
)


def run(args: argparse.Namespace) -> int:
    from diffnas.commands._common import flag_overrides
    from diffnas.config import dump_config
    from diffnas.errors import ConfigError
    from diffnas.network_search.evolution import netsearch, resume_netsearch

    out = Console(soft_wrap=True)
    log = lambda m: out.print(m, highlight=False)  # noqa: E731 (one line per candidate/generation)
    progress = False if args.no_progress else None
    if args.resume:
        if args.from_runs or args.config:
            raise ConfigError("--resume continues a network search with its own config and blocks")
        result = resume_netsearch(args.resume, progress=progress, log=log)
    else:
        args.overrides = flag_overrides(args, NETSEARCH_FLAGS) + list(args.overrides)
        config = config_from_args(args)
        if args.print_config:
            out.print(dump_config(config), end="", highlight=False)
            return 0
        result = netsearch(
            config, out=args.out, from_runs=args.from_runs, progress=progress, log=log
        )
    out.print(str(result), highlight=False)
    return 0
