"""`diffnas bench`: measurements of the library itself (`speed`: the search engine's step)."""

from __future__ import annotations

import argparse

SPEED_HELP = """\
Time one first-order DARTS search step (architecture step on a validation batch + weight
step on a training batch; batch 64, 32x32 synthetic images) of the nb201 supernet (C=16, 5
cells per stage) and the darts supernet (8 cells, C=16) with the search engine and with the
plain implementation (one module per op, NCHW, outputs summed in a Python loop), each in
its own process, alternating. Prints the CPU model, the fp32 matmul rate, step time,
analytic FLOPs per step, FLOP rate and its share of the matmul rate, data-loading share,
peak resident memory and the speedup over the plain implementation.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark the library (speed: search-step time and memory)",
        description="Measurements of diffnas itself.",
    )
    bench = p.add_subparsers(dest="bench_command", metavar="BENCH")
    p.set_defaults(func=lambda args: p.print_help() or 0)
    s = bench.add_parser(
        "speed",
        help="search-step time, FLOP rate and peak memory: engine vs plain supernet",
        description=SPEED_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--space", action="append", choices=["nb201", "darts"], help="repeatable; default both"
    )
    s.add_argument("--steps", type=int, default=3, help="timed steps per process (default 3)")
    s.add_argument("--rounds", type=int, default=2, help="processes per implementation (2)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="extra config override for both implementations, e.g. --set supernet.node_bn=true",
    )
    s.set_defaults(func=run_speed)


def run_speed(args: argparse.Namespace) -> int:
    from diffnas.errors import ConfigError
    from diffnas.speed import run

    for name, value in (("steps", args.steps), ("rounds", args.rounds)):
        if value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")
    run(
        args.space or ["nb201", "darts"],
        steps=args.steps,
        rounds=args.rounds,
        batch_size=args.batch_size,
        threads=args.threads,
        extra=args.overrides,
    )
    return 0
