"""GDAS vs DARTS: search-step time when only the sampled op of each edge is computed.

Times full search steps (architecture + weight step) of the same supernet with the
`softmax` relaxation (every op of every edge) and the `gumbel` one (GDAS: one sampled op
per edge), in turns, and reports the ratio measured in this run.

    PYTHONPATH=src python benchmarks/gdas_step_time.py --space nb201 --threads 1
"""

from __future__ import annotations

import argparse

from _search_steps import time_steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nb201", choices=["nb201", "darts"])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, help="nb201: cells per stage; darts: cells")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    base = [
        f"space.name={a.space}",
        f"space.channels={a.channels}",
        "data.dataset=synthetic",
        f"data.batch_size={a.batch_size}",
        f"threads={a.threads}",
        f"device={a.device}",
        "log.progress=false",
    ]
    if a.layers is not None:
        base.append(f"space.layers={a.layers}")
    t = time_steps(
        {
            "softmax (DARTS)": ["search.relaxation=softmax"],
            "gumbel (GDAS)": ["search.relaxation=gumbel"],
        },
        base,
        a.steps,
        a.rounds,
    )
    soft, gumbel = t["softmax (DARTS)"], t["gumbel (GDAS)"]
    print(
        f"{a.space} supernet C={a.channels}, batch {a.batch_size}, {a.threads} thread(s), {a.device}"
    )
    for name, sec in t.items():
        print(f"  {name:16s} {sec:7.3f} s per search step")
    print(f"  GDAS step time = {gumbel / soft:.2f} x DARTS ({soft / gumbel:.1f}x faster)")


if __name__ == "__main__":
    main()
