"""Search-step time by thread count and OpenMP wait policy, quiet and beside busy processes.

Each setting runs in its own process (GNU OpenMP reads OMP_WAIT_POLICY and GOMP_SPINCOUNT
when it loads), timing 3 rounds of `--steps` first-order search steps after a warm-up
step (the median of the rounds' seconds per step, `_search_steps.time_steps`), on the
README's first search by default (darts supernet, digits, batch 64). `--busy N` runs N
busy processes (a Python loop each) for the whole measurement. docs/engine.md ("Threads")
quotes it.

    python benchmarks/thread_policy.py              # quiet
    python benchmarks/thread_policy.py --busy 1
    python benchmarks/thread_policy.py --set space.name=nb201 --set data.dataset=synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from diffnas.bench.speed import Contention
from diffnas.openmp import without_wait_policy

SETTINGS = [  # (threads, environment)
    (1, {"OMP_WAIT_POLICY": "PASSIVE"}),
    (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    (2, {"OMP_WAIT_POLICY": "ACTIVE"}),
    (2, {"GOMP_SPINCOUNT": "10000"}),
    (2, {"GOMP_SPINCOUNT": "100000"}),
]


def worker(threads: int, steps: int, sets: list[str]) -> None:
    from _search_steps import time_steps

    # 3 rounds of `steps` steps after a warm-up step: the median seconds per step
    print(json.dumps(time_steps({"row": []}, [f"threads={threads}", *sets], steps, 3)["row"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--busy", type=int, default=0, help="busy processes beside the steps")
    p.add_argument("--timeout", type=float, default=120, help="seconds per setting")
    p.add_argument("--set", action="append", default=[], help="a config override")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker is not None:
        worker(a.worker, a.steps, a.set)
        return
    with Contention(a.busy):  # busy processes for the whole measurement
        for threads, env in SETTINGS:
            clean = without_wait_policy(dict(os.environ))
            cmd = [sys.executable, __file__, "--worker", str(threads), "--steps", str(a.steps)]
            cmd += [x for s in a.set for x in ("--set", s)]
            label = f"{threads} thread(s), " + ", ".join(f"{k}={v}" for k, v in env.items())
            try:
                out = subprocess.run(
                    cmd, env={**clean, **env}, capture_output=True, text=True, timeout=a.timeout
                )
            except subprocess.TimeoutExpired:
                print(f"{label:45} over {a.timeout:g} s", flush=True)
                continue
            if out.returncode:
                print(f"{label:45} failed:\n{out.stderr[-2000:]}", flush=True)
                continue
            step_s = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{label:45} {step_s:7.3f} s/step", flush=True)


if __name__ == "__main__":
    main()
