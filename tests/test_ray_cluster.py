"""`diffnas bench quality --executor ray` on a Ray cluster of this machine: a head node and
one worker node started with `ray start` on loopback addresses. A 2-method x 2-seed bench
runs through it; its driver is killed with SIGKILL once a search has finished, and the
same command resumes it without running the finished searches again."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = """\
space: {name: nb201, channels: 4, layers: 1}
data: {dataset: digits, subset: 0.1, batch_size: 16}
search: {epochs: 1}
log: {lookup: false}
threads: 1
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT / "src"),  # the workers import this diffnas
        OMP_NUM_THREADS="1",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def _ray(log: Path, *args: str) -> subprocess.Popen:
    """`ray start ... --block` in a session of its own (ended by its process group)."""
    ray = str(Path(sys.executable).with_name("ray"))
    with open(log, "w") as fh:
        return subprocess.Popen(
            [ray, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", *args],
            env=_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _started(node: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    """Wait until `ray start` says its node runs (it prints this once the node is up)."""
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        if node.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"ray start failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _wait(what: str, ok, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.fixture
def cluster():
    from tests._dist_worker import free_port

    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    head = ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
    nodes = [_ray(temp / "head.log", *head, "--disable-usage-stats")]
    try:
        _started(nodes[0], temp / "head.log")
        worker = [f"--address=127.0.0.1:{port}", "--disable-usage-stats"]
        nodes.append(_ray(temp / "worker.log", *worker))
        _started(nodes[1], temp / "worker.log")
        yield f"127.0.0.1:{port}"
    finally:
        for node in nodes:  # `ray start --block` stops its node's processes on SIGTERM
            _signal_group(node, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for node in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(max(0.1, deadline - time.monotonic()))
        for node in nodes:  # what did not stop in time: its process group, by its id
            _signal_group(node, signal.SIGKILL)
            node.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _signal_group(node: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, sig)


def _bench(out: Path, protocol: Path, address: str) -> list[str]:
    return [
        sys.executable, "-m", "diffnas", "bench", "quality",
        "--methods", "darts", "gdas", "--seeds", "0", "1",
        "--protocol", str(protocol), "--out", str(out),
        "--executor", "ray", "--ray-address", address,
    ]  # fmt: skip


def _done(out: Path) -> dict[str, str]:
    found = {}
    for f in sorted(out.glob("runs/*/bench.json")):
        text = f.read_text()
        if json.loads(text).get("status") == "done":
            found[f.parent.name] = text
    return found


def test_bench_on_a_ray_cluster_resumes_after_its_driver_is_killed(tmp_path, cluster) -> None:
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL)
    out = tmp_path / "bench"
    driver = subprocess.Popen(
        _bench(out, protocol, cluster), cwd=tmp_path, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait("a finished search", lambda: bool(_done(out)) or driver.poll() is not None, 120)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finished = _done(out)
    assert 1 <= len(finished) < 4, finished

    again = subprocess.run(
        _bench(out, protocol, cluster), cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{4 - len(finished)} search(es) to run, {len(finished)} finished already" in (
        again.stderr
    )
    now = _done(out)
    assert sorted(now) == ["darts-s0", "darts-s1", "gdas-s0", "gdas-s1"]
    for name, record in finished.items():  # not run again: the same record, byte for byte
        assert now[name] == record
    rows = (out / "quality.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all(",done," in r for r in rows)
