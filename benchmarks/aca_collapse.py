"""ACA vs plain DARTS on NAS-Bench-201: parameter-free ops in the derived cell as the search grows.

Runs the same nb201 search twice, plain DARTS (darts_nb201) and DARTS + ACA (darts_nb201 + the
aca overlay), and records after every epoch: the derived cell, its share of parameter-free ops,
its NB201 lookup accuracy (op choice only) and, for ACA, the channel allocation the final
derivation would give at that point (its importance pass on `--probe-batches` validation
batches; the run's own final derivation uses the whole validation split). One long run gives
the whole curve; `--lengths` adds separate searches of those lengths (own cosine schedule).

    PYTHONPATH=src python benchmarks/aca_collapse.py --dataset cifar10 --data-root DIR \
        --epochs 30 --subset 0.1 --resolution 16 --out runs/aca_collapse

Writes OUT/<method>/ (run directories), OUT/curve.jsonl and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import diffnas
from diffnas.callbacks.base import Callback
from diffnas.derive.aca import AdaptiveChannelAllocation
from diffnas.nasbench import nb201
from diffnas.spaces.genotype import Genotype
from diffnas.spaces.nb201 import to_nb201_string


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def cell_text(g: Genotype) -> str:
    text = to_nb201_string(g)
    fr = [f"{e.skip_fraction:.2f}" for e in g.cells[0].edges if e.skip_fraction]
    return text + (f"  s=[{', '.join(fr)}]" if fr else "")


class Probe(Callback):
    """Per epoch: the derived cell's parameter-free share, lookup, and (ACA) its allocation."""

    name = "aca_probe"

    def __init__(self, method: str, path: Path, probe_batches: int) -> None:
        self.method, self.path, self.probe_batches = method, path, probe_batches

    def on_epoch_end(self, s: Any, metrics: dict[str, Any]) -> None:
        rec: dict[str, Any] = {
            "method": self.method,
            "search_epochs": s.epochs,
            "epoch": metrics["epoch"] + 1,
            "param_free_share": round(metrics["param_free_share"], 4),
            "none_edges": sum(e.op == "none" for e in s.current_genotype.cells[0].edges),
            "lookup_acc": _round(metrics.get("lookup_acc")),
            "cell": to_nb201_string(s.current_genotype),
            "time_s": metrics["time_s"],
        }
        if isinstance(s.derivation, AdaptiveChannelAllocation):
            probe = AdaptiveChannelAllocation(
                AdaptiveChannelAllocation.Params(
                    max_batches=self.probe_batches, check_network=False
                )
            )
            g = probe.allocate(s, s.current_genotype)
            rec["skip_fractions"] = [e.skip_fraction for e in g.cells[0].edges]
            rec["identity_channel_share"] = g.info["aca"]["identity_channel_share"]
            rec["mean_skip_fraction"] = g.info["aca"]["mean_skip_fraction"]
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


def run(args: argparse.Namespace, method: str, epochs: int, out: Path) -> dict[str, Any]:
    overrides = [
        f"data.dataset={args.dataset}",
        f"data.subset={args.subset}",
        f"search.epochs={epochs}",
        f"space.channels={args.channels}",
        f"space.layers={args.layers}",
        f"threads={args.threads}",
        f"seed={args.seed}",
        "log.progress=false",
    ]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.resolution:
        overrides.append(f"data.resolution={args.resolution}")
    sources = ["darts_nb201"] + (["aca"] if method == "aca" else [])
    cfg = diffnas.load_config(sources, overrides)
    start = time.monotonic()
    result = diffnas.search(
        cfg, out=out, callbacks=[Probe(method, args.out / "curve.jsonl", args.probe_batches)]
    )
    g = result.genotype
    final = {
        "method": method,
        "search_epochs": epochs,
        "final": True,
        "cell": cell_text(g),
        "param_free_share": round(result.history[-1]["param_free_share"], 4),
        "none_edges": sum(e.op == "none" for e in g.cells[0].edges),
        "lookup_acc": _round(nb201.lookup(g)) if nb201.available() else None,
        "aca": g.info.get("aca"),
        "wall_s": round(time.monotonic() - start, 1),
    }
    with open(args.out / "curve.jsonl", "a") as fh:
        fh.write(json.dumps(final) + "\n")
    print(json.dumps(final), flush=True)
    return final


def table(path: Path) -> str:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    curve = {
        (r["method"], r["epoch"]): r
        for r in recs
        if not r.get("final") and r["search_epochs"] == max(x["search_epochs"] for x in recs)
    }
    epochs = sorted({e for _, e in curve})
    lines = [
        "| epoch | DARTS param-free share | DARTS none edges | DARTS lookup % | "
        "ACA param-free share | ACA none edges | ACA lookup % (op choice) | "
        "ACA identity-channel share | ACA mean s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in epochs:
        d, a = curve.get(("darts", e), {}), curve.get(("aca", e), {})
        lines.append(
            f"| {e} | {d.get('param_free_share', '')} | {d.get('none_edges', '')} | "
            f"{d.get('lookup_acc', '')} | {a.get('param_free_share', '')} | "
            f"{a.get('none_edges', '')} | {a.get('lookup_acc', '')} | "
            f"{a.get('identity_channel_share', '')} | {a.get('mean_skip_fraction', '')} |"
        )
    lines.append("")
    for r in recs:
        if r.get("final"):
            lines.append(
                f"- {r['method']} ({r['search_epochs']} epochs): {r['cell']}  lookup "
                f"{r['lookup_acc']}  param-free share {r['param_free_share']}"
                + (f"  aca {r['aca']}" if r.get("aca") else "")
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root")
    p.add_argument("--epochs", type=int, default=30, help="length of the long run (0: none)")
    p.add_argument("--lengths", default="", help="extra separate search lengths, e.g. 3,10")
    p.add_argument("--subset", type=float, default=0.1)
    p.add_argument("--resolution", type=int, default=0)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-batches", type=int, default=10)
    p.add_argument("--methods", default="darts,aca")
    p.add_argument("--out", type=Path, default=Path("runs/aca_collapse"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    lengths = [int(x) for x in args.lengths.split(",") if x]
    for epochs in lengths:
        for m in methods:
            run(args, m, epochs, args.out / f"{m}-{epochs}ep")
    if args.epochs:  # 0: only the separate `--lengths` searches
        for m in methods:
            run(args, m, args.epochs, args.out / f"{m}-{args.epochs}ep")
    print(table(args.out / "curve.jsonl"))


if __name__ == "__main__":
    main()
