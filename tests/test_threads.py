"""The thread default (`threads: null`): the cores other processes leave free, and the
busy processes `diffnas bench speed --contention` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from diffnas import utils


@pytest.fixture
def keep_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_auto_threads_counts_other_processes_runnable_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the machine's runnable count, read 9 times, less this process's own runnable threads
    readings = iter([6, 3, 3, 9, 3, 4, 3, 3, 2])
    monkeypatch.setattr(utils, "_procs_running", lambda: next(readings))
    monkeypatch.setattr(utils, "_own_running", lambda: 1)
    monkeypatch.setattr(utils.time, "sleep", lambda s: None)
    assert utils.busy_elsewhere() == 2.0  # median of [5, 2, 2, 8, 2, 3, 2, 2, 1]
    for cores, procs, want in ((4, 2, 3), (4, 5, 1), (2, 1, 2), (2, 2, 1), (8, 1, 8)):
        monkeypatch.setattr(utils, "usable_cores", lambda c=cores: c)
        monkeypatch.setattr(utils, "_procs_running", lambda p=procs: p)
        assert utils.auto_threads()[0] == want, (cores, procs)
    monkeypatch.setattr(utils, "_procs_running", lambda: None)  # not Linux: all cores
    assert utils.auto_threads()[0] == 8


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads Linux's /proc")
def test_busy_process_is_seen_and_contention_ends_its_processes() -> None:
    from diffnas.bench.speed import Contention

    with Contention(2) as c:
        assert all(p.poll() is None for p in c.procs)
        assert utils._own_running() >= 1
        seen = utils.busy_elsewhere(samples=5, interval=0.01)
        assert seen is not None and seen >= 2  # the two loops, at least
    assert all(p.returncode is not None for p in c.procs)


def test_default_threads_follow_the_rule(
    monkeypatch: pytest.MonkeyPatch, keep_threads: None
) -> None:
    # (Searcher and Trainer call set_threads(config.threads); the search loop again per epoch)
    monkeypatch.setattr(utils, "usable_cores", lambda: 2)
    monkeypatch.setattr(utils, "busy_elsewhere", lambda: 1.0)
    assert utils.set_threads(None) == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(utils, "busy_elsewhere", lambda: 0.0)  # the load went away
    assert utils.set_threads(None) == 2 and torch.get_num_threads() == 2
    assert utils.set_threads(1) == 1 and torch.get_num_threads() == 1  # a count wins


def test_cli_makes_idle_openmp_threads_spin_briefly_unless_told_otherwise() -> None:
    code = (
        "import os, sys; from diffnas.cli import default_wait_policy; default_wait_policy(); "
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), "
        "'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = os.pathsep.join(["src", env.get("PYTHONPATH", "")])

    def policy(**extra: str) -> list[str]:
        run = subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True
        )
        return run.stdout.split() or [run.stderr]

    assert policy() == ["None", "10000", "False"]  # set before torch is imported
    assert policy(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None", "False"]
    assert policy(GOMP_SPINCOUNT="0") == ["None", "0", "False"]


def test_thread_probe_keeps_one_thread_unless_more_are_clearly_faster() -> None:
    from diffnas.loop import ThreadProbe

    # a warm-up step at n threads, then n, 1, n, 1
    for t_n, t_1, one in ((2.0, 1.0, True), (1.0, 1.05, True), (1.0, 1.2, False)):
        probe = ThreadProbe(2)
        used, verdict = [], None
        while verdict is None:
            used.append(probe.next_threads())
            verdict = probe.record(t_1 if used[-1] == 1 else t_n)
        assert used == [2, 2, 1, 2, 1]
        assert verdict is one, (t_n, t_1)
        keep = "1 thread" if one else "2 threads"
        assert f"{t_n:.3g} s with 2 threads and {t_1:.3g} s with 1: {keep}" in probe.note(one)


@pytest.mark.parametrize(("t_n", "one"), [(2.0, True), (0.5, False)])
def test_default_threads_probe_the_first_steps_then_keep_the_faster_count(
    t_n: float, one: bool, monkeypatch: pytest.MonkeyPatch, keep_threads: None, capsys
) -> None:
    """threads: null with 2 cores free: the first steps run at 2 threads (warm-up), 2, 1,
    2, 1; the rest of the run (the later epochs too) at the faster count. Step times are
    faked by thread count (1 thread: 1 s; 2 threads: t_n): the verdict must follow them."""
    from diffnas import loop
    from diffnas.callbacks.base import Callback
    from diffnas.search import Searcher

    from .conftest import tiny_config

    monkeypatch.setattr(utils, "auto_threads", lambda: (2, "test"))
    monkeypatch.setattr(
        loop.StepTimer, "lap", lambda self: 1.0 if torch.get_num_threads() == 1 else t_n
    )
    used: list[int] = []

    class Threads(Callback):
        name = "threads"

        def on_step_end(self, s) -> None:
            used.append(torch.get_num_threads())

    s = Searcher(tiny_config("nb201", epochs=2, threads="null"), callbacks=[Threads()])
    s.run_search()
    per_epoch = s.steps_per_epoch
    assert per_epoch >= 5 and len(used) == 2 * per_epoch
    # the step a probe times ran at the count set before it; the callback sees the count
    # after the step (the verdict is applied right after the last probe step)
    assert used[:4] == [2, 2, 1, 2]
    keep = 1 if one else 2
    assert used[4:] == [keep] * (len(used) - 4)
    note = capsys.readouterr().err
    assert f"{'1 thread' if one else '2 threads'} for this run" in note


def test_default_threads_follow_the_load_within_an_epoch(
    monkeypatch: pytest.MonkeyPatch, keep_threads: None
) -> None:
    """threads: null reads the load again every Loop.RECHECK_S seconds of steps, not only
    at an epoch's start: a busy process that arrives mid-epoch takes a core within one
    recheck. Steps are faked at 25 s with 2 threads, 30 s with 1 (the probe keeps 2)."""
    from diffnas import loop
    from diffnas.callbacks.base import Callback
    from diffnas.search import Searcher

    from .conftest import tiny_config

    free = {"cores": 2}
    monkeypatch.setattr(utils, "auto_threads", lambda: (free["cores"], "test"))
    monkeypatch.setattr(
        loop.StepTimer, "lap", lambda self: 30.0 if torch.get_num_threads() == 1 else 25.0
    )
    used: list[int] = []

    class Arrive(Callback):  # right after the probe's five steps
        name = "arrive"

        def on_step_end(self, s) -> None:
            used.append(torch.get_num_threads())
            if s.global_step == 5:
                free["cores"] = 1

    s = Searcher(tiny_config("nb201", epochs=1, threads="null"), callbacks=[Arrive()])
    s.run_search()
    assert s.one_thread is False and len(used) >= 6  # one epoch: no epoch-start read
    assert used[4] == 2  # the probe kept 2 threads
    assert used[5:] == [1] * (len(used) - 5)  # from the step after the arrival: 1 thread
