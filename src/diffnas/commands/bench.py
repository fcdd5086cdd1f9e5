"""`diffnas bench`: measurements of the library (`speed`: the search engine's step) and of
the methods (`quality`: methods × seeds under a protocol). Each subcommand registers itself
through its own `_register_<name>` function.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

SPEED_HELP = """\
Time one first-order DARTS search step (architecture step on a validation batch + weight
step on a training batch; batch 64, 32x32 synthetic images) of the nb201 supernet (C=16, 5
cells per stage) and the darts supernet (8 cells, C=16) with the search engine and with the
plain implementation (one module per op, NCHW, outputs summed in a Python loop), each in
its own process, alternating. Prints the CPU model, the fp32 matmul rate, step time,
analytic FLOPs per step, FLOP rate and its share of the matmul rate, data-loading share,
peak resident memory (of the whole process, and of the timed steps alone: after the
warm-up step, which is where compiling happens) and the speedup over the plain
implementation; two more rows, bf16 and bf16w, are the engine with search.precision=bf16
(bfloat16 autocast of both steps) and bf16_weights (of the weight step only; the architecture gradient in float32), with their
speed relative to the float32 engine's.

--contention N: N busy processes (one core each) run during the measurement, and the fp32
engine is timed at each thread count, at the default (the cores other processes leave
free) and at the old default (all cores, OpenMP spin-waiting), each relative to the best.
"""

QUALITY_HELP = """\
Search each method with each seed under one protocol (a config layered after the method:
it fixes space size, data, resolution and epochs; the method keeps its own optimizer
settings and parts), in parallel processes, and write OUT/quality.md, quality.csv (method,
seed, wall time, derived cell, NB201 lookup accuracy, share of parameter-free ops) and
quality.png (lookup accuracy over search epochs per method); quality.md also holds the
anytime table (the cell each search had derived after 5, 15, 30, 60 minutes: --minutes) and
anytime.png plots lookup accuracy against search minutes.

Resumable: run the same command again; finished runs are skipped, killed runs resume from
their checkpoints. --table-only rebuilds the outputs from what is on disk.
"""

QUALITY_EPILOG = """\
examples:
  diffnas bench quality --dataset cifar10 --data-root DIR --out bench/quality
  diffnas bench quality --methods gdas darts_long:darts+search.epochs=30 --seeds 0 1 2
  diffnas bench quality --protocol protocols/nb201_cpu --jobs 2 --threads 1 --out bench/q
  diffnas bench quality --methods darts gdas --seeds 0 1 2 --only gdas-s1 --out bench/q
  diffnas bench quality --out bench/quality --table-only
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: engine speed and memory, search quality of methods under a protocol",
        description="Benchmarks. `diffnas bench SUBCOMMAND --help` explains each.",
    )
    bench_sub = p.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: p.print_help() or 0)
    _register_speed(bench_sub)
    _register_quality(bench_sub)


# --------------------------------------------------------------------------- speed
def _register_speed(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "speed",
        help="search-step time, FLOP rate and peak memory: engine (fp32, bf16, bf16_weights) vs plain supernet",
        description=SPEED_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--space", action="append", choices=["nb201", "darts"], help="repeatable; default both"
    )
    s.add_argument("--steps", type=int, default=3, help="timed steps per process (default 3)")
    s.add_argument("--rounds", type=int, default=2, help="processes per implementation (2)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument(
        "--threads",
        type=int,
        help="PyTorch threads (default: the cores other processes leave free, as every command)",
    )
    s.add_argument(
        "--compile",
        action="store_true",
        help="add rows compiled (search.compile=cell, inductor) and bf16+c (bf16 and compiled)",
    )
    s.add_argument(
        "--contention",
        type=int,
        default=0,
        metavar="N",
        help="run N busy processes meanwhile and compare thread counts (default 0: off)",
    )
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
    from diffnas.bench.speed import run
    from diffnas.errors import ConfigError

    for name, value in (("steps", args.steps), ("rounds", args.rounds)):
        if value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")
    if args.contention < 0:
        raise ConfigError(f"--contention must be >= 0 (busy processes), got {args.contention}")
    run(
        args.space or ["nb201", "darts"],
        steps=args.steps,
        rounds=args.rounds,
        batch_size=args.batch_size,
        threads=args.threads,
        extra=args.overrides,
        contention=args.contention,
        compile=args.compile,
    )
    return 0


# --------------------------------------------------------------------------- quality
def _register_quality(sub: argparse._SubParsersAction) -> None:
    from diffnas.bench.quality import DEFAULT_METHODS, DEFAULT_MINUTES, DEFAULT_PROTOCOL

    q = sub.add_parser(
        "quality",
        help="search methods × seeds under a protocol; table + plot of NB201 lookup accuracy",
        description=QUALITY_HELP,
        epilog=QUALITY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        metavar="METHOD",
        help="[LABEL:]CONFIG[+CONFIG...][+key=value...] each; default: "
        + " ".join(DEFAULT_METHODS),
    )
    q.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="default 0 1 2")
    q.add_argument(
        "--only",
        nargs="+",
        metavar="RUN",
        help="run just these runs of the methods x seeds grid, named as their folders under "
        "OUT/runs (METHOD-sSEED, e.g. gdas-s1); the table and plots still cover the whole grid",
    )
    q.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        help=f"config layered after each method (default {DEFAULT_PROTOCOL}); 'none': no protocol",
    )
    q.add_argument("--dataset", help="dataset (data.dataset; the protocol's otherwise)")
    q.add_argument("--data-root", help="dataset location (data.root)")
    q.add_argument("--epochs", type=int, help="search epochs (overrides the protocol's)")
    q.add_argument("--out", "-o", default="bench/quality", help="output directory")
    q.add_argument(
        "--jobs", "-j", type=int, help="parallel searches (default: CPU cores // --threads)"
    )
    q.add_argument(
        "--threads",
        type=int,
        help="PyTorch threads per search (default: the cores shared among the searches running "
        "at once; 1 each when --jobs is not given)",
    )
    q.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config key of every run (after method and protocol)",
    )
    q.add_argument(
        "--table-only", action="store_true", help="only rebuild the table and plot from OUT"
    )
    q.add_argument(
        "--minutes",
        nargs="+",
        type=float,
        default=list(DEFAULT_MINUTES),
        metavar="M",
        help="budgets of the anytime table: the cell each search had derived after M minutes "
        "of search loop (default 5 15 30 60)",
    )
    q.add_argument(
        "--executor",
        choices=["process", "ray", "serial"],
        default="process",
        help="where the searches run: a pool of --jobs processes on this machine (default), "
        "Ray tasks of --threads CPUs each (on the cluster at --ray-address, else a local Ray), "
        "or one after the other in this process",
    )
    q.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="a running Ray cluster (`ray start --head` prints it); with --executor ray. "
        "OUT on storage the nodes share holds each run as it goes; otherwise each finished "
        "run directory is sent back to this machine (docs/scale.md)",
    )
    q.set_defaults(func=run_quality)


def run_quality(args: argparse.Namespace) -> int:
    from diffnas.bench import quality

    console = Console(stderr=True)
    out = Path(args.out)
    methods = [quality.MethodSpec.parse(m) for m in args.methods]
    labels = [m.label for m in methods]
    protocol = None if args.protocol in ("none", "") else args.protocol
    extra = []
    if args.dataset:
        extra.append(f"data.dataset={args.dataset}")
    if args.data_root:
        extra.append(f"data.root={args.data_root}")
    if args.epochs is not None:
        extra.append(f"search.epochs={args.epochs}")
    extra += list(args.overrides)
    if args.ray_address and args.executor != "ray":
        from diffnas.errors import ConfigError

        raise ConfigError("--ray-address needs --executor ray")
    title = f"protocol {protocol or '(none)'}, seeds {' '.join(map(str, args.seeds))}"
    lock = quality.claim_out(out, lock=not args.table_only)  # one bench per OUT at a time
    try:
        if not args.table_only:
            bench = quality.plan(
                methods,
                args.seeds,
                out,
                protocol,
                extra,
                jobs=args.jobs,
                threads=args.threads,
                only=args.only,
            )
            console.print(
                f"{len(bench.jobs)} search(es) to run, {len(bench.skipped)} finished already; "
                f"{bench.parallel} at a time, {bench.threads} thread(s) each",
                highlight=False,
            )
            start = time.monotonic()

            def done(job: quality.Job, rec: dict) -> None:
                state = rec["status"] + (f" ({rec.get('error')})" if rec.get("error") else "")
                console.print(
                    f"[{time.monotonic() - start:7.0f} s] {job.method} seed {job.seed}: {state}, "
                    f"{rec.get('wall_s', 0):.0f} s",
                    highlight=False,
                )
                quality.write_outputs(out, labels, args.seeds, title, args.minutes)

            quality.execute(bench, done, args.executor, args.ray_address)
        rows = quality.write_outputs(out, labels, args.seeds, title, args.minutes)
    finally:
        if lock is not None:
            lock.release()
    Console(soft_wrap=True).print(
        quality.markdown(rows, title) + "\n" + quality.anytime_markdown(rows, args.minutes),
        highlight=False,
    )
    if quality.plot_available():
        console.print(
            f"wrote {out / 'quality.md'}, {out / 'quality.csv'}, {out / 'quality.png'}, "
            f"{out / 'anytime.png'}"
        )
    else:
        console.print(
            f"wrote {out / 'quality.md'}, {out / 'quality.csv'}; quality.png needs matplotlib: "
            'pip install "diffnas[report]"',
            highlight=False,
        )
    return 0 if all(r.status == "done" for r in rows) else 1
