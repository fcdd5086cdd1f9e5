"""`diffnas export`: TorchScript and ONNX files of a network, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from diffnas.commands._common import add_model_args, add_threads_arg, model_kwargs

HELP = """\
Export a network in eval mode (no auxiliary head, no drop-path) to TorchScript (traced) and
ONNX (opset >= 17; onnxscript's dynamo exporter by default, which writes opset 18+), with a
dynamic batch axis. Each file is reloaded (torch.jit.load, onnxruntime) and run on random
inputs; the largest difference from the PyTorch output is printed and must be within
tolerance. A training run directory exports its trained weights (into RUN_DIR/export by
default) and export.json records the input normalization and classes; a genotype or zoo
name exports a freshly initialized network. An op that cannot be exported is named with
the module and genotype edge that use it.
"""

EPILOG = """\
examples:
  diffnas export runs/train-DARTS_V2-cifar10-20260101-120000
  diffnas export DARTS_V2 --imagenet --out exports/darts_v2_mobile
  diffnas export runs/train-... --format onnx --opset 17 --onnx-exporter torchscript
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="TorchScript / ONNX export with a parity check",
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", metavar="RUN_DIR|GENOTYPE", help="training run dir, genotype or zoo name"
    )
    p.add_argument("--out", "-o", help="output directory (default RUN_DIR/export or export-<name>)")
    p.add_argument(
        "--format",
        default="torchscript,onnx",
        help="comma-separated: torchscript, onnx (default both)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    p.add_argument(
        "--onnx-exporter",
        choices=["dynamo", "torchscript"],
        default="dynamo",
        help="torch.onnx exporter: dynamo (default; opset >= 18) or the legacy torchscript one",
    )
    p.add_argument(
        "--rtol", type=float, default=1e-4, help="parity tolerance, relative to the largest output"
    )
    p.add_argument("--atol", type=float, default=1e-4, help="parity tolerance, absolute")
    add_threads_arg(p)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffnas.retrain.export import export_spec
    from diffnas.retrain.network import resolve_model
    from diffnas.utils import set_threads

    set_threads(args.threads)
    spec = resolve_model(args.source, **model_kwargs(args))
    if args.out:
        out_dir = Path(args.out)
    elif spec.run is not None:
        out_dir = spec.run.path / "export"
    else:
        out_dir = Path(f"export-{spec.genotype.name or spec.genotype.space}")
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    console = Console(soft_wrap=True)
    console.print(spec.describe(spec.build(load_weights=False)), highlight=False)
    if not spec.trained:
        console.print("(untrained: freshly initialized weights)", highlight=False)
    results = export_spec(
        spec,
        out_dir,
        formats=formats,
        opset=args.opset,
        onnx_exporter=args.onnx_exporter,
        rtol=args.rtol,
        atol=args.atol,
        log=lambda m: Console(stderr=True).print(m, highlight=False, markup=False),
    )
    for r in results:
        console.print(str(r), highlight=False)
    console.print(f"export.json written to {out_dir}", highlight=False)
    return 0
