"""The search-step speed benchmark: the engine against the plain supernet, in one run.

Workload: one first-order DARTS search step (an architecture step on a validation batch,
then a weight step on a training batch, as the `alternate` schedule takes them) of the
nb201 supernet (C=16, 5 cells per stage) or the darts supernet (8 cells, C=16), batch
64, 32x32 synthetic images. Each (space, implementation) runs in its own process, so
its peak resident memory is its own; the implementations alternate round by round so
that load on the machine hits both alike. FLOPs are counted analytically
(torch.utils.flop_counter: convolutions and matmuls, forward and the backward actually
taken) on the plain computation, and the same count divides every step time.

A third row, `bf16`, is the engine with `search.precision=bf16` (bfloat16 autocast of the
steps' forward and backward passes, float32 weights and losses), and a fourth, `bf16w`, the
engine with `search.precision=bf16_weights` (bf16 for the weight step only, the α-gradient
in float32), measured in the same rounds; the summary gives their speed relative to the
float32 engine's.

Contention mode (`contention=N`, `diffnas bench speed --contention N`): N busy processes
(each one Python loop, one core) run for the whole measurement, and the fp32 engine is
timed at every thread count from 1 to the usable cores, at the default (`threads: null`,
diffnas.utils.auto_threads, with the `diffnas` command's OpenMP wait policy: a short spin)
and at the previous default (all cores, GNU OpenMP's own spin-waiting). It prints each
one's step time relative to the best of them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffnas.loop import StepTimer
from diffnas.utils import reset_peak_rss, rss_mb

SPACES = {
    "nb201": ["space.name=nb201", "space.channels=16", "space.layers=5"],
    "darts": ["space.name=darts", "space.channels=16", "space.layers=8"],
}
IMPLS = ("plain", "engine", "bf16", "bf16w")
# the config each implementation adds (plain: the engine's supernet swapped for the plain one)
IMPL_OVERRIDES = {
    "plain": [],
    "engine": [],
    "bf16": ["search.precision=bf16"],
    "bf16w": ["search.precision=bf16_weights"],  # bf16 weight step, fp32 α-gradient
    "compiled": ["search.compile=cell"],  # --compile: inductor-compiled cells
    "bf16+c": ["search.precision=bf16", "search.compile=cell"],
}
COMPILED = ("compiled", "bf16+c")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_rate(threads: int, n: int = 1024, seconds: float = 1.5) -> float:
    """Sustained fp32 matmul FLOP/s (n x n by n x n), the machine's reference rate."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best, start, reps = 0.0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds or reps < 5:
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
        reps += 1
    return best


def overrides(space: str, batch_size: int, threads: int | None, extra: list[str]) -> list[str]:
    return [
        *SPACES[space],
        f"data.batch_size={batch_size}",
        "data.dataset=synthetic",
        f"threads={'null' if threads is None else threads}",
        "device=cpu",
        *extra,
    ]


def worker(
    space: str, impl: str, steps: int, batch_size: int, threads: int | None, extra: list[str]
) -> dict[str, Any]:
    """Time `steps` search steps in this process (after one warm-up step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from diffnas.config import load_config
    from diffnas.search import Searcher
    from diffnas.supernet.plain import make_plain

    torch.set_num_interop_threads(1)  # before any parallel work
    config = overrides(space, batch_size, threads, [*extra, *IMPL_OVERRIDES[impl]])
    s = Searcher(load_config(["darts"], config))
    if impl == "plain":
        make_plain(s.model)
    rss_built = rss_mb()
    it = s.data.train.epoch(0)
    train = next(it)
    t0 = time.perf_counter()
    s.arch_step(train, s.val_stream.next())  # warm-up: allocations, first-call overheads
    s.weight_step(train)  # (and, for the compiled rows, compiling)
    first_s = time.perf_counter() - t0
    warm_peak = rss_mb(peak=True)  # building, the first step and (compiled rows) compiling
    resettable = reset_peak_rss()
    step_times, data_times = [], []
    timer = StepTimer()
    for _ in range(steps):
        timer.restart()
        train, val = next(it), s.val_stream.next()
        data_times.append(timer.lap())
        s.arch_step(train, val)
        s.weight_step(train)
        step_times.append(data_times[-1] + timer.lap())
    steps_peak = rss_mb(peak=True)
    peak = max(warm_peak, steps_peak)
    flops = 0
    if impl == "plain":  # the count both implementations are rated by
        counter = FlopCounterMode(display=False)
        with counter:
            s.arch_step(train, val)
            s.weight_step(train)
        flops = counter.get_total_flops()
    return {
        "space": space,
        "impl": impl,
        "threads": s.threads,
        "step_s": statistics.median(step_times),
        "first_s": first_s,
        "data_share": sum(data_times) / sum(step_times),
        "flops": flops,
        "rss_built_mb": rss_built,
        "peak_rss_mb": peak,
        # the timed steps' own peak (resident memory then, including what the warm-up left
        # resident, such as compiled code), not the transient peak of compiling
        "steps_peak_rss_mb": steps_peak if resettable else peak,
    }


@dataclass
class Row:
    space: str
    impl: str
    step_s: float
    flops: int
    data_share: float
    peak_rss_mb: float
    rss_built_mb: float
    ratio: float
    steps_peak_rss_mb: float


def _env() -> dict[str, str]:
    """The workers' environment: this diffnas on the path (installed or not), and the
    `diffnas` command's OpenMP wait policy unless the caller's environment names one."""
    from diffnas.openmp import with_wait_policy

    src = str(Path(__file__).resolve().parents[2])  # the directory holding diffnas/
    return with_wait_policy(
        {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
        }
    )


def _measure(
    space: str,
    impl: str,
    steps: int,
    batch_size: int,
    threads: int | None,
    extra: list[str],
    env: dict[str, str],
) -> Any:
    """One worker process (its JSON result): `threads` None = the default (threads: null)."""
    cmd = [sys.executable, "-m", "diffnas.bench.speed", "--worker", space, impl, str(steps)]
    cmd += [str(batch_size), "auto" if threads is None else str(threads), json.dumps(extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode:
        raise RuntimeError(f"benchmark worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


BUSY = "import time\nend = time.monotonic() + 86400\nwhile time.monotonic() < end:\n    pass\n"


class Contention:
    """`n` busy processes (a Python loop each: one core) for the duration of a `with`."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Contention:
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", BUSY]))
        time.sleep(0.5 if self.n else 0)  # running before the first worker looks at the load
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()


def run(
    spaces: list[str],
    steps: int = 3,
    rounds: int = 2,
    batch_size: int = 64,
    threads: int | None = None,
    extra: list[str] | None = None,
    echo: Any = print,
    contention: int = 0,
    compile: bool = False,
) -> list[Row]:
    """Run the benchmark (one process per space, implementation and round); print a table.

    `threads` defaults to the rule every command follows (diffnas.utils.auto_threads),
    resolved once here so that every implementation runs with the same count. With
    `contention` > 0, the thread-count comparison under that many busy processes instead
    (`run_contention`)."""
    if contention:
        run_contention(spaces, contention, steps, rounds, batch_size, extra, echo)
        return []
    from diffnas.utils import auto_threads

    extra = extra or []
    threads = threads or auto_threads()[0]
    rate = matmul_rate(threads)
    echo(f"CPU: {cpu_model()} | torch {torch.__version__} | threads {threads}")
    echo(f"fp32 matmul rate (1024^3, best of runs): {rate / 1e9:.1f} GFLOP/s")
    env = _env()
    rows = []
    per_space: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for space in spaces:
        impls = [*IMPLS, *(COMPILED if compile else ())]
        results: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
        per_space[space] = results
        for _ in range(rounds):
            for impl in impls:
                r = _measure(space, impl, steps, batch_size, threads, extra, env)
                results[impl].append(r)
                echo(
                    f"  {space} {impl}: {r['step_s']:.3f} s/step, peak RSS "
                    f"{r['peak_rss_mb']:.0f} MB"
                )
        # ratio per round (adjacent processes), then the median over rounds
        ratios = {
            impl: [p["step_s"] / e["step_s"] for p, e in zip(results["plain"], results[impl])]
            for impl in impls[1:]
        }
        flops = results["plain"][0]["flops"]
        for impl in impls:
            rs = results[impl]
            rows.append(
                Row(
                    space,
                    impl,
                    statistics.median(r["step_s"] for r in rs),
                    flops,
                    statistics.median(r["data_share"] for r in rs),
                    max(r["peak_rss_mb"] for r in rs),
                    statistics.median(r["rss_built_mb"] for r in rs),
                    1.0 if impl == "plain" else statistics.median(ratios[impl]),
                    max(r["steps_peak_rss_mb"] for r in rs),
                )
            )
    echo(
        f"{'space':6} {'impl':8} {'step s':>7} {'GFLOP/step':>10} {'GFLOP/s':>8} "
        f"{'% matmul':>8} {'data %':>6} {'peak RSS MB':>11} {'steps peak':>10} {'RSS built':>9} "
        f"{'speedup':>7}"
    )
    for r in rows:
        echo(
            f"{r.space:6} {r.impl:8} {r.step_s:7.3f} {r.flops / 1e9:10.2f} "
            f"{r.flops / r.step_s / 1e9:8.1f} {100 * r.flops / r.step_s / rate:8.1f} "
            f"{100 * r.data_share:6.2f} {r.peak_rss_mb:11.0f} {r.steps_peak_rss_mb:10.0f} "
            f"{r.rss_built_mb:9.0f} {r.ratio:6.2f}x"
        )
    for space in spaces:
        p, e, *_ = (r for r in rows if r.space == space)
        echo(
            f"{space}: engine {e.ratio:.2f}x faster than plain (median of per-round ratios), "
            f"peak RSS {e.peak_rss_mb / p.peak_rss_mb:.2f} of plain "
            f"({(e.peak_rss_mb - e.rss_built_mb) / (p.peak_rss_mb - p.rss_built_mb):.2f} "
            f"counting only what the steps add)"
        )
        for impl in ("bf16", "bf16w", *(COMPILED if compile else ())):
            rs, es = per_space[space][impl], per_space[space]["engine"]
            ratio = statistics.median(pe["step_s"] / pr["step_s"] for pe, pr in zip(es, rs))
            peak = max(r["peak_rss_mb"] for r in rs) / e.peak_rss_mb
            steps = max(r["steps_peak_rss_mb"] for r in rs) / e.steps_peak_rss_mb
            first = (
                f"; first step (compiling) {statistics.median(r['first_s'] for r in rs):.1f} s"
                if impl in COMPILED
                else ""
            )
            echo(
                f"{space}: {impl} engine {ratio:.2f}x the fp32 engine's speed (median of "
                f"per-round ratios; >1 faster), peak RSS {peak:.2f} of it, "
                f"{steps:.2f} of it over the timed steps{first}"
            )
    return rows


def run_contention(
    spaces: list[str],
    n_busy: int,
    steps: int = 3,
    rounds: int = 2,
    batch_size: int = 64,
    extra: list[str] | None = None,
    echo: Any = print,
) -> dict[str, dict[str, float]]:
    """The fp32 engine's step under `n_busy` busy processes at each thread count, at the
    default and at the previous default; returns {space: {setting: median step s}}.

    Settings: `1` .. `cores` threads (the `diffnas` command's wait policy), `default`
    (threads: null), `spin` (all cores with GNU OpenMP's default spin-waiting: the default
    before). They alternate within each round, so that changes in the machine's other load
    hit all alike; only ratios within one run mean anything."""
    from diffnas.openmp import without_wait_policy
    from diffnas.utils import usable_cores

    extra = extra or []
    cores = usable_cores()
    env = _env()
    spin_env = without_wait_policy(env)
    settings: list[tuple[str, int | None, dict[str, str]]] = [
        *((str(t), t, env) for t in range(1, cores + 1)),
        ("default", None, env),
        ("spin", cores, spin_env),
    ]
    echo(
        f"CPU: {cpu_model()} | torch {torch.__version__} | {cores} usable cores | "
        f"{n_busy} busy process(es) running throughout"
    )
    out: dict[str, dict[str, float]] = {}
    with Contention(n_busy):
        for space in spaces:
            times: dict[str, list[float]] = {name: [] for name, _, _ in settings}
            chosen: list[int] = []
            for _ in range(rounds):
                for name, threads, e in settings:
                    r = _measure(space, "engine", steps, batch_size, threads, extra, e)
                    times[name].append(r["step_s"])
                    if threads is None:
                        chosen.append(int(r["threads"]))
                    echo(f"  {space} threads={name}: {r['step_s']:.3f} s/step")
            med = {name: statistics.median(ts) for name, ts in times.items()}
            out[space] = med
            best = min(med[str(t)] for t in range(1, cores + 1))
            echo(f"{'space':6} {'threads':28} {'step s':>8} {'x best':>7}")
            for name, _, _ in settings:
                label = {
                    "default": f"default (chose {'/'.join(map(str, chosen))})",
                    "spin": f"{cores}, spin-wait (old default)",
                }.get(name, name)
                echo(f"{space:6} {label:28} {med[name]:8.3f} {med[name] / best:6.2f}x")
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        space, impl, steps, bs, threads, extra = sys.argv[2:8]
        n = None if threads == "auto" else int(threads)
        result = worker(space, impl, int(steps), int(bs), n, json.loads(extra))
        print(json.dumps(result))
