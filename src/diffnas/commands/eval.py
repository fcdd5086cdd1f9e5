"""`diffnas eval`: test accuracy of a trained run (PyTorch, or its exported models)."""

from __future__ import annotations

import argparse

from rich.console import Console

from diffnas.commands._common import add_device_arg

HELP = """\
Test-split accuracy of a training run's final weights. Inputs are normalized with the
run's own training mean/std. --dataset/--data-root evaluate on another copy of the data
(same classes; images are resized to the run's input size). --backend onnx or torchscript
evaluates the files `diffnas export RUN_DIR` wrote (onnxruntime for ONNX); --backend all
evaluates every available one and counts test images whose prediction differs from PyTorch.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="test accuracy of a trained run",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory (diffnas train)")
    p.add_argument("--dataset", help="evaluate on this dataset (default: the run's)")
    p.add_argument("--data-root", help="its location (default: the run's data.root)")
    p.add_argument(
        "--backend",
        default="pytorch",
        choices=["pytorch", "torchscript", "onnx", "all"],
        help="what runs the network (default pytorch)",
    )
    p.add_argument("--export-dir", help="where the exported files are (default RUN_DIR/export)")
    p.add_argument("--batch-size", type=int, default=256, help="test batch size (default 256)")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for PyTorch and onnxruntime (default: the cores other processes leave free)",
    )
    add_device_arg(p, "cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffnas.retrain.accuracy import evaluate_run

    out = Console(soft_wrap=True)
    results = evaluate_run(
        args.run_dir,
        dataset=args.dataset,
        data_root=args.data_root,
        backend=args.backend,
        export_dir=args.export_dir,
        batch_size=args.batch_size,
        threads=args.threads,
        device=args.device,
    )
    out.print(results.header, highlight=False)
    base = results.results[0]
    for r in results.results:
        line = f"  {r}"
        if r is not base:
            differ = int((r.predictions != base.predictions).sum())
            line += f"; {differ} prediction(s) differ from {base.backend}"
        out.print(line, highlight=False)
    return 0
