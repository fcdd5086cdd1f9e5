"""`diffnas profile`: parameters, multiply-adds and latency of genotypes' networks."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from diffnas.commands._common import add_device_arg, add_model_args, add_threads_arg, model_kwargs

HELP = """\
Parameters (auxiliary head excluded, as papers count), multiply-adds per image (forward
hooks on every Conv2d and Linear of an eval-mode forward; the cells' edge ops are
cross-checked against the op table's analytic costs) and measured latency (median of
--repeats timed forwards after --warmup, eval mode, random input) at each batch size.
SOURCE is a genotype file, zoo name, search run directory, NB201 string or training run
directory; give several to compare them. --imagenet gives the DARTS ImageNet mobile setting
(14 cells, C=48, 224x224, 1000 classes). Latency depends on --threads and the machine's
load: compare numbers measured in one call.
"""

EPILOG = """\
examples:
  diffnas profile DARTS_V2                      # CIFAR: 20 cells, C=36, 32x32
  diffnas profile DARTS_V2 --imagenet           # mobile setting: 14 cells, C=48, 224x224
  diffnas profile DARTS_V2 PC_DARTS GDAS --batch-sizes 1 --threads 1
  diffnas profile runs/train-DARTS_V2-cifar10-20260101-120000 --json profile.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="parameters, multiply-adds and latency of a network",
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="genotype, zoo name or run dir")
    add_model_args(p)
    g = p.add_argument_group("latency")
    g.add_argument(
        "--batch-sizes",
        default="1,32",
        help="comma-separated batch sizes to time (default 1,32; empty: no timing)",
    )
    g.add_argument("--repeats", type=int, default=20, help="timed forwards (default 20)")
    g.add_argument("--warmup", type=int, default=5, help="untimed forwards first (default 5)")
    add_threads_arg(g)
    add_device_arg(g, "cpu")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=run)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    from diffnas.errors import ConfigError

    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--batch-sizes must be integers like 1,32, got '{text}'") from None
    if any(b < 1 for b in sizes):
        raise ConfigError(f"--batch-sizes must be positive, got '{text}'")
    return sizes


def run(args: argparse.Namespace) -> int:
    from diffnas.errors import ConfigError
    from diffnas.retrain.network import resolve_model
    from diffnas.retrain.profile import profile
    from diffnas.utils import resolve_device, set_threads

    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError("--repeats must be >= 1 and --warmup >= 0")
    sizes = parse_batch_sizes(args.batch_sizes)
    set_threads(args.threads)
    device = resolve_device(args.device)
    kwargs = model_kwargs(args)
    specs = [resolve_model(s, **kwargs) for s in args.sources]  # all errors before any timing
    status = Console(stderr=True)
    results = []
    for i, spec in enumerate(specs, 1):
        timing = (
            f", timing batch sizes {args.batch_sizes} ({args.repeats} runs each)" if sizes else ""
        )
        status.print(
            f"[{i}/{len(specs)}] {spec.name}: counting parameters and multiply-adds{timing} ...",
            highlight=False,
            markup=False,
        )
        results.append(
            profile(
                spec, batch_sizes=sizes, repeats=args.repeats, warmup=args.warmup, device=device
            )
        )
    out = Console(soft_wrap=True)
    table = Table(title=f"profile ({device}, {results[0].threads} thread(s))")
    table.add_column("network", overflow="fold")  # wrapped, never cut to "DARTS_…"
    table.add_column("params (M)", justify="right")
    table.add_column("mult-adds (M)", justify="right")
    for b in sizes:
        table.add_column(f"latency b={b} (ms)", justify="right")
    table.add_column("edge-op check", justify="right")
    for r in results:
        c = r.check
        mark = "ok" if c.ok else "MISMATCH"
        check = f"{mark} ({c.edges} edges" + (f", {c.unchecked} unchecked)" if c.unchecked else ")")
        table.add_row(
            r.name,
            f"{r.params / 1e6:.3f}",
            f"{r.macs / 1e6:.1f}",
            *(f"{r.latency_ms[b]:.2f}" for b in sizes),
            check,
        )
    out.print(table)
    for r in results:
        aux = (
            f"auxiliary head {r.aux_params / 1e6:.3f} M params (excluded)"
            if r.aux_params
            else "no auxiliary head"
        )
        out.print(f"{r.description}; {aux}", highlight=False)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.to_json() for r in results], fh, indent=2)
        out.print(f"written to {args.json}")
    return 0 if all(r.check.ok for r in results) else 1
