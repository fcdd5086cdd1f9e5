"""Search-step time by thread count and OpenMP wait policy, quiet and beside busy processes.

Each setting runs in its own process (GNU OpenMP reads OMP_WAIT_POLICY and GOMP_SPINCOUNT
when it loads), timing `--steps` first-order search steps after a warm-up step, on the
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
import statistics
import subprocess
import sys
import time

SETTINGS = [  # (threads, environment)
    (1, {"OMP_WAIT_POLICY": "PASSIVE"}),
    (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    (2, {"OMP_WAIT_POLICY": "ACTIVE"}),
    (2, {"GOMP_SPINCOUNT": "10000"}),
    (2, {"GOMP_SPINCOUNT": "100000"}),
]


def worker(threads: int, steps: int, sets: list[str]) -> None:
    from diffnas.config import load_config
    from diffnas.search import Searcher

    s = Searcher(load_config(["darts"], [f"threads={threads}", *sets]))
    it = s.data.train.epoch(0)
    batches = [(next(it), s.val_stream.next()) for _ in range(steps + 1)]
    s.arch_step(*batches[0])
    s.weight_step(batches[0][0])
    times = []
    for train, val in batches[1:]:
        t = time.perf_counter()
        s.arch_step(train, val)
        s.weight_step(train)
        times.append(time.perf_counter() - t)
    print(json.dumps(times))


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
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        for threads, env in SETTINGS:
            clean = {
                k: v
                for k, v in os.environ.items()
                if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
            }
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
            times = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{label:45} {statistics.median(times):7.3f} s/step  "
                f"({', '.join(f'{t:.3f}' for t in times)})",
                flush=True,
            )
    finally:
        for b in busy:
            b.kill()
            b.wait()


if __name__ == "__main__":
    main()
