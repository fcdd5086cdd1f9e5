"""The OpenMP wait policy the `diffnas` command sets (no torch import: it must be set
before torch loads its GNU OpenMP, which reads it then)."""

from __future__ import annotations

# How long an idle OpenMP thread spins before it sleeps, unless the environment names a
# wait policy: 10,000 iterations, some microseconds. GNU OpenMP's default, 300,000, holds
# the cores other processes want; sleeping at once (OMP_WAIT_POLICY=PASSIVE) makes every
# small op wake a thread. nb201 step, 2 threads, 2-core EPYC: quiet 1.91 s (PASSIVE 2.61,
# 1 thread 3.08); beside a busy process 5.52 s (PASSIVE 3.81), where the thread rule
# takes 1 thread (3.01) within `Loop.RECHECK_S` (docs/engine.md, "Threads").
WAIT_POLICY = {"GOMP_SPINCOUNT": "10000"}
# the variables that name a wait policy (either one set: the environment's choice stands)
WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def with_wait_policy(env: dict[str, str]) -> dict[str, str]:
    """env, plus `WAIT_POLICY` where it names no wait policy (`WAIT_KEYS`)."""
    if any(k in env for k in WAIT_KEYS):
        return dict(env)
    return {**env, **WAIT_POLICY}


def without_wait_policy(env: dict[str, str]) -> dict[str, str]:
    """env with no wait policy named: GNU OpenMP's own default."""
    return {k: v for k, v in env.items() if k not in WAIT_KEYS}
