"""Same short budget for every related-method preset on NAS-Bench-201: s/step and lookup.

Runs `diffnas search` once per preset (plain DARTS included) with the same space size,
data subset, epochs and seed, each with its own preset settings otherwise (batch size,
learning rates, parts); a preset's weight-only warm-up is scaled to the same share of the
short budget as in the paper (PC-DARTS: 15 of 50 epochs). Prints each command and a
table: seconds per search step (architecture + weight step), ms per training image,
NB201 CIFAR-10 lookup accuracy of the final derived cell.

    PYTHONPATH=src python benchmarks/related_methods_table.py --out runs/related \\
        --epochs 10 -- --set space.channels=8 --set space.layers=2
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from diffnas.config import load_config
from diffnas.run import RunDir

PRESETS = ["darts", "pc_darts", "gdas", "beta_darts", "fair_darts", "cost_aware"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for the run directories")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--presets", nargs="+", default=PRESETS)
    p.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: more `diffnas search` options"
    )
    a = p.parse_args()
    extra = [x for x in a.extra if x != "--"]
    rows = []
    for preset in a.presets:
        run = Path(a.out) / preset
        cmd = [sys.executable, "-m", "diffnas", "search", "--config", preset, "--space", "nb201"]
        cmd += ["--epochs", str(a.epochs), "--seed", str(a.seed), "--threads", str(a.threads)]
        if preset == "pc_darts":  # the paper's 15 of 50 warm-up epochs, scaled
            cmd += ["--set", f"search.warmup_epochs={round(0.3 * a.epochs)}"]
        cmd += [*extra, "--no-progress", "--out", str(run)]
        print("$", shlex.join(["python", *cmd[1:]]), flush=True)
        if not (run / "genotype.json").exists():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        cfg = load_config([str(run / "config.yaml")])
        state = RunDir(run).load_checkpoint()
        rows.append(
            (preset, cfg.data.batch_size, state["global_step"], state["elapsed_s"], history)
        )
    print()
    print(
        f"{'method':12s} {'batch':>5s} {'steps':>5s} {'s/step':>7s} {'ms/img':>7s} "
        f"{'arch steps':>10s} {'lookup %':>9s}  cell"
    )
    for preset, batch, steps, seconds, history in rows:
        last = history[-1]
        per_step = seconds / steps
        arch = sum(h["arch_steps"] for h in history)
        cell = " ".join(
            f"{op}~{src}>{dst}" for op, src, dst in last["genotype"]["cells"][0]["edges"]
        )
        print(
            f"{preset:12s} {batch:5d} {steps:5d} {per_step:7.3f} {1000 * per_step / batch:7.2f} "
            f"{arch:10d} {last.get('lookup_acc', float('nan')):9.2f}  {cell}"
        )


if __name__ == "__main__":
    main()
