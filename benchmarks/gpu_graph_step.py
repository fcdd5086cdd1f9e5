"""How fast a search step runs on a GPU once its kernel launches are gone (CUDA only).

The first-order DARTS step of benchmarks/gpu_speed.py (an architecture step, then a weight
step, on fixed batches) is captured whole as one CUDA graph and replayed, beside the same
Searcher's eager step. This measures what the GPU path could gain from graphs (an eager
nb201 step was launch-bound on an H200: docs/engine.md, "The GPU path"); the search itself
does not replay whole-step graphs (a graph freezes every host-side decision: schedules,
samplers, learning-rate changes, finiteness checks).

Correctness is checked, not assumed: from one saved state (weights, α, optimizer state),
K eager steps and K replays must end at the same α and weights (float tolerance).

    python benchmarks/gpu_graph_step.py --rows nb201:engine:64,nb201:bf16:64 --steps 20
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from gpu_speed import run_rows, searcher, step_batches


def _state(s: Any) -> list[torch.Tensor]:
    """Every tensor a step changes in place: weights, α, BN buffers, optimizer state."""
    out = [*s.model.parameters(), *s.arch_parameters(), *s.model.buffers()]
    for opt in (s.w_opt, s.a_opt):
        out += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return out


def _time(fn: Any, steps: int) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps * 1000


def row(space: str, impl: str, batch: int, steps: int, check: int) -> dict[str, Any]:
    s = searcher(space, impl, batch, "cuda", [])
    for group in s.a_opt.param_groups:  # Adam keeps its step count on the device
        group["capturable"] = True
    ((train, val),) = step_batches(s, 1)

    def eager() -> None:
        s.arch_step(train, val)
        s.weight_step(train)

    side = torch.cuda.Stream()  # warm-up off the capturing stream (torch.cuda.graphs' recipe)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            eager()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    t0 = time.perf_counter()
    with torch.cuda.graph(graph):
        eager()
    capture_s = time.perf_counter() - t0
    eager_ms = [_time(eager, steps) for _ in range(2)]
    graph_ms = [_time(graph.replay, steps) for _ in range(2)]
    # the same K steps both ways from one saved state
    saved = [t.detach().clone() for t in _state(s)]
    for _ in range(check):
        eager()
    after_eager = [t.detach().clone() for t in _state(s)]
    with torch.no_grad():
        for t, v in zip(_state(s), saved):
            t.copy_(v)
    for _ in range(check):
        graph.replay()
    torch.cuda.synchronize()
    worst = 0.0
    for t, ref in zip(_state(s), after_eager):
        if t.is_floating_point() and ref.numel():
            err = float(
                (t.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-12)
            )
            worst = max(worst, err)
    return {
        "space": space,
        "impl": impl,
        "batch": batch,
        "eager_ms": eager_ms,
        "graph_ms": graph_ms,
        "capture_s": round(capture_s, 2),
        "check_steps": check,
        "worst_rel_diff": worst,
        "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", required=True, help="comma-separated space:impl:batch")
    p.add_argument("--steps", type=int, default=20, help="steps per timing (two timings each)")
    p.add_argument("--check", type=int, default=3, help="steps compared, eager against replay")
    p.add_argument("--out", help="append each row as a JSON line here")
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_graph_step.py needs a CUDA GPU (CUDA graphs); none is visible")

    def describe(spec: str, r: dict[str, Any]) -> str:
        return (
            f"{spec:>18}  eager {' / '.join(f'{t:.2f}' for t in r['eager_ms'])} ms"
            f"  graph {' / '.join(f'{t:.2f}' for t in r['graph_ms'])} ms"
            f"  capture {r['capture_s']} s  replay vs eager {r['worst_rel_diff']:.1e}"
            f"  peak {r['peak_mb']} MB"
        )

    run_rows(
        a.rows,
        lambda space, impl, batch: row(space, impl, batch, a.steps, a.check),
        describe,
        a.out,
    )


if __name__ == "__main__":
    main()
