"""The network search gives the same candidates and errors on every executor.

Runs a tiny network search (digits, 2 generations of 4, 1 proxy epoch, blocks DARTS_V1 and
DARTS_V2) serially, on Ray (local, `ray.init()`) and on a spawn process pool, and compares
every candidate record (the training time aside). Also times the three.

    PYTHONPATH=src python benchmarks/netsearch_executors.py --out /tmp/netsearch_executors
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from diffnas.config import load_config
from diffnas.network_search import run_netsearch
from diffnas.network_search.executors import ray_available
from diffnas.spaces import load_genotype


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="netsearch_executors")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    blocks = [load_genotype("DARTS_V1"), load_genotype("DARTS_V2")]
    records = {}
    executors = ["serial", "process"] + (["ray"] if ray_available() else [])
    for ex in executors:
        out = Path(a.out) / ex
        shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
        cfg = load_config(
            ["enhanced_gradient"],
            [
                "netsearch.generations=2",
                "netsearch.population=4",
                "netsearch.proxy_epochs=1",
                "netsearch.proxy_subset=0.3",
                "netsearch.channels=[4, 8]",
                "netsearch.blocks=[1, 2]",
                f"netsearch.executor={ex}",
                f"netsearch.workers={a.workers}",
                "threads=1",
                "log.progress=false",
            ],
        )
        start = time.monotonic()
        result = run_netsearch(cfg, blocks, out)
        took = time.monotonic() - start
        records[ex] = sorted(
            ({k: v for k, v in r.items() if k != "train_s"} for r in result.candidates),
            key=lambda r: r["key"],
        )
        errors = [(r["key"], r["val_error"]) for r in records[ex]]
        print(f"{ex}: {len(errors)} candidates in {took:.1f} s: {errors}")
    for ex in executors[1:]:
        print(f"{ex} == serial: {records[ex] == records['serial']}")


if __name__ == "__main__":
    main()
