"""Search-step speed on a GPU (or any device): one process, several rows, JSON lines out.

A row is `space:impl:batch` (space nb201 or darts at `diffnas bench speed`'s sizes: nb201
C=16 with 5 cells per stage, darts 8 cells C=16; impl one of `diffnas.bench.speed`'s:
plain, engine, bf16, bf16w, compiled, bf16+c). A step is one first-order DARTS search step
(an architecture step on a validation batch, then a weight step), on synthetic 32x32
images. Each row is built, warmed up (the first step, which compiles for the compiled rows,
is timed on its own), then timed over `--steps` steps twice, with the device synchronised
before and after each timing only: the host runs ahead of the device inside a timing, as it
does in a search. `--profile N` adds, per row, the device's own busy time per step (the sum
of its kernels' times over N profiled steps, torch.profiler) and the kernel count: a step
time far above the busy time is launch-bound (the host cannot queue kernels as fast as the
device runs them), which CUDA graphs remove.

    python benchmarks/gpu_speed.py --device cuda --rows nb201:engine:64,darts:bf16:64 \\
        --steps 20 --profile 1 --out rows.jsonl
    python benchmarks/gpu_speed.py --device cpu --rows nb201:engine:8 --layers 1   # a check

Compiled rows take `--compile-mode` (reduce-overhead: CUDA graphs). A row that fails prints
its error and the others still run. The driver that runs this on a lent GPU, with the
whole nb201 search after it, is benchmarks/gpu_run.sh.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import traceback
from typing import Any

import torch

from diffnas.bench.speed import IMPL_OVERRIDES, SPACES


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_steps(s: Any, batches: list[Any], table: str | None = None) -> dict[str, float]:
    """Device busy time per step and kernels per step, over the given steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if s.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for train, val in batches:
            s.arch_step(train, val)
            s.weight_step(train)
        sync(s.device)
    busy_us, kernels = 0.0, 0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            busy_us += e.self_device_time_total
            kernels += 1
    n = len(batches)
    if table:  # the host's and the device's busiest operators, appended to this file
        with open(table, "a") as f:
            for key in ("self_cpu_time_total", "self_device_time_total"):
                f.write(prof.key_averages().table(sort_by=key, row_limit=15) + "\n")
    return {"busy_ms": busy_us / 1000 / n, "kernels": kernels / n}


def searcher(space: str, impl: str, batch: int, device: str, extra: list[str]) -> Any:
    """The Searcher of a row: `space` at bench speed's size, `impl`'s settings (plain: the
    plain supernet), synthetic 32x32 images, `extra` overrides last."""
    from diffnas.config import load_config
    from diffnas.search import Searcher
    from diffnas.supernet.plain import make_plain

    cfg = [
        *SPACES[space],
        f"data.batch_size={batch}",
        "data.dataset=synthetic",
        f"device={device}",
        "log.lookup=false",
        *IMPL_OVERRIDES[impl],
        *extra,
    ]
    s = Searcher(load_config(["darts"], cfg))
    if impl == "plain":
        make_plain(s.model)
    return s


def step_batches(s: Any, n: int) -> list[Any]:
    """n (training, validation) batch pairs, epoch after epoch of the training split."""
    it = (b for epoch in itertools.count() for b in s.data.train.epoch(epoch))
    return [(next(it), s.val_stream.next()) for _ in range(n)]


def run_rows(
    rows: str,
    measure: Any,
    describe: Any,
    out: str | None,
    stop_on_error: bool = False,
) -> None:
    """measure(space, impl, batch) for each `space:impl:batch` of `rows`: prints
    `describe(spec, result)`, appends the result to `out` as a JSON line; a failed row
    prints its error and the next one runs (with `stop_on_error`, exit 1)."""
    specs = rows.split(",")
    for spec in specs:  # every row checked before the first one runs
        parts = spec.split(":")
        if len(parts) != 3 or parts[0] not in SPACES or parts[1] not in IMPL_OVERRIDES:
            raise SystemExit(
                f"row {spec!r}: expected space:impl:batch with space one of "
                f"{', '.join(SPACES)} and impl one of {', '.join(IMPL_OVERRIDES)}, "
                "e.g. nb201:bf16:64"
            )
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise SystemExit(f"row {spec!r}: the batch size must be a positive integer")
    for spec in specs:
        space, impl, batch = spec.split(":")
        try:
            r = measure(space, impl, int(batch))
        except Exception:  # a failed row reports, and the next one runs
            traceback.print_exc()
            print(f"row {spec}: FAILED", flush=True)
            if stop_on_error:
                sys.exit(1)
            continue
        print(describe(spec, r), flush=True)
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(r) + "\n")


def row(
    space: str,
    impl: str,
    batch: int,
    device: str,
    steps: int,
    layers: int | None,
    compile_mode: str,
    profile: int,
    sets: list[str],
    table: str | None = None,
) -> dict[str, Any]:
    extra = [f"space.layers={layers}"] if layers else []
    if "search.compile=cell" in IMPL_OVERRIDES[impl]:
        extra.append(f"search.compile_mode={compile_mode}")
    s = searcher(space, impl, batch, device, [*extra, *sets])
    batches = step_batches(s, steps + 3)
    t0 = time.perf_counter()
    s.arch_step(*batches[0])
    s.weight_step(batches[0][0])
    sync(s.device)
    first_s = time.perf_counter() - t0
    for train, val in batches[1:3]:  # warm-up (CUDA graphs are recorded at the 2nd-3rd call)
        s.arch_step(train, val)
        s.weight_step(train)
    sync(s.device)
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
    times = []
    for _ in range(2):
        sync(s.device)
        t = time.perf_counter()
        for train, val in batches[3:]:
            s.arch_step(train, val)
            s.weight_step(train)
        sync(s.device)
        times.append((time.perf_counter() - t) / steps * 1000)
    out: dict[str, Any] = {
        "space": space,
        "impl": impl,
        "batch": batch,
        "device": str(s.device),
        "precision": s.precision.name,
        "step_ms": times,
        "first_s": round(first_s, 2),
    }
    if s.device.type == "cuda":
        out["peak_mb"] = round(torch.cuda.max_memory_allocated(s.device) / 2**20, 1)
    if profile:
        if table:
            with open(table, "a") as f:
                f.write(f"=== {space}:{impl}:{batch}\n")
        out.update(profile_steps(s, batches[3 : 3 + profile], table))
    if s.compile_note is not None:
        out["compile"] = s.compile_note
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", required=True, help="comma-separated space:impl:batch")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20, help="steps per timing (two timings)")
    p.add_argument("--layers", type=int, help="override space.layers (quick checks)")
    p.add_argument("--compile-mode", default="reduce-overhead")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="profile this many steps: device busy time and kernels per step (the profiler's "
        "bookkeeping of ~15,000 kernels a step takes tens of seconds a step)",
    )
    p.add_argument("--set", action="append", default=[], help="a config override (repeatable)")
    p.add_argument("--out", help="append each row as a JSON line here")
    p.add_argument("--table", help="with --profile: append the busiest operators here")
    p.add_argument("--stop-on-error", action="store_true", help="exit 1 at the first failure")
    a = p.parse_args()
    if a.device.startswith("cuda"):
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)

    def measure(space: str, impl: str, batch: int) -> dict[str, Any]:
        return row(
            space,
            impl,
            batch,
            a.device,
            a.steps,
            a.layers,
            a.compile_mode,
            a.profile,
            a.set,
            a.table,
        )

    def describe(spec: str, r: dict[str, Any]) -> str:
        ms = " / ".join(f"{t:.2f}" for t in r["step_ms"])
        busy = f"  busy {r['busy_ms']:.2f} ms, {r['kernels']:.0f} kernels" if "busy_ms" in r else ""
        return (
            f"{spec:>20}  {ms} ms/step (median of 2: {statistics.median(r['step_ms']):.2f})"
            f"  first {r['first_s']} s  peak {r.get('peak_mb', '-')} MB{busy}"
        )

    run_rows(a.rows, measure, describe, a.out, a.stop_on_error)


if __name__ == "__main__":
    main()
