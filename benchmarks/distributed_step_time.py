"""Data-parallel search: step time of 2 ranks (gloo, one thread each) vs 1 process.

Times search steps (architecture step + weight step, first-order DARTS, `alternate`
schedule) of the same global batch: in one process with one thread, on `--ranks` processes
of one thread each started with the environment torchrun sets (diffnas.distributed shards
each batch and averages the gradients), and with `--also-threads` in one process with
`--ranks` threads. Prints seconds per step and the ratios measured in this run; on a busy machine
only the ratios mean anything, and even they move with the load.

    PYTHONPATH=src python benchmarks/distributed_step_time.py --space nb201
    PYTHONPATH=src python benchmarks/distributed_step_time.py --space darts
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def config_overrides(a: argparse.Namespace, threads: int) -> list[str]:
    out = [
        f"space.name={a.space}",
        f"space.channels={a.channels}",
        "data.dataset=synthetic",
        f"data.batch_size={a.batch_size}",
        f"threads={threads}",
        "log.progress=false",
        "log.lookup=false",
    ]
    if a.layers is not None:
        out.append(f"space.layers={a.layers}")
    return out


def time_steps(a: argparse.Namespace, threads: int) -> float:
    """Median seconds per search step (after one warm-up step) in this process / rank."""
    import torch.distributed as dist

    from diffnas import distributed
    from diffnas.config import load_config
    from diffnas.search import Searcher

    s = Searcher(load_config(["darts"], config_overrides(a, threads)))
    batches = s.data.train.epoch(0)
    s.search_step(next(batches))
    times = []
    for _ in range(a.steps):
        batch = next(batches)
        if distributed.active():
            dist.barrier()
        start = time.perf_counter()
        s.search_step(batch)
        if distributed.active():
            dist.barrier()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_ranks(a: argparse.Namespace) -> float:
    port, procs = free_port(), []
    for r in range(a.ranks):
        env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        env.update(
            RANK=str(r),
            LOCAL_RANK=str(r),
            WORLD_SIZE=str(a.ranks),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        cmd = [sys.executable, __file__, *sys.argv[1:], "--as-rank"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a rank failed: exit codes {[p.returncode for p in procs]}")
    return float(json.loads(outs[0].strip().splitlines()[-1])["step_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nb201", choices=["nb201", "darts"])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, help="nb201: cells per stage; darts: cells")
    p.add_argument("--batch-size", type=int, default=64, help="the global batch")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--also-threads", action="store_true", help="time 1 process, RANKS threads")
    p.add_argument("--as-rank", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.as_rank:
        step = time_steps(a, 1)
        if os.environ["RANK"] == "0":
            print(json.dumps({"step_s": step}))
        return
    one = time_steps(a, 1)
    ranks = run_ranks(a)
    print(
        f"{a.space} (C={a.channels}, layers={a.layers or 'default'}, global batch "
        f"{a.batch_size}), seconds per search step (median of {a.steps}):\n"
        f"  1 process, 1 thread:           {one:.3f}\n"
        f"  {a.ranks} ranks (gloo), 1 thread each: {ranks:.3f}\n"
        f"  speed-up of {a.ranks} ranks over 1 process, 1 thread: {one / ranks:.2f}x"
    )
    if a.also_threads:
        threads = time_steps(a, a.ranks)
        print(f"  1 process, {a.ranks} threads:         {threads:.3f}")


if __name__ == "__main__":
    main()
