"""Profile every darts-space zoo cell at the CIFAR size and the ImageNet mobile size.

Prints a markdown table: parameters, multiply-adds, batch-1 latency and latency relative to
DARTS_V2 measured in the same run (timings are only comparable within one run).

    PYTHONPATH=src python benchmarks/zoo_profile.py --threads 1 --repeats 20
"""

from __future__ import annotations

import argparse

import torch

from diffnas.retrain.network import resolve_model
from diffnas.retrain.profile import profile
from diffnas.spaces import zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch 1, median of {args.repeats}"
    )
    print()
    print("| cell | setting | params (M) | mult-adds (M) | latency (ms) | vs DARTS_V2 |")
    print("|---|---|---|---|---|---|")
    for network in ("cifar", "imagenet"):
        rows = []
        for name in zoo.names("darts"):
            spec = resolve_model(name, network=network)
            rows.append(
                (name, profile(spec, batch_sizes=(1,), repeats=args.repeats, warmup=args.warmup))
            )
        ref = dict(rows)["DARTS_V2"].latency_ms[1]
        setting = (
            "CIFAR 20 cells C=36 32x32" if network == "cifar" else "mobile 14 cells C=48 224x224"
        )
        for name, r in rows:
            assert r.check.ok, name
            lat = r.latency_ms[1]
            print(
                f"| {name} | {setting} | {r.params / 1e6:.3f} | {r.macs / 1e6:.1f} | "
                f"{lat:.1f} | {lat / ref:.2f} |"
            )


if __name__ == "__main__":
    main()
