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


def _ray(*args: str) -> subprocess.Popen:
    """`ray start ... --block` in a session of its own (ended by its process group)."""
    ray = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen(
        [ray, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _status(address: str) -> str:
    ray = str(Path(sys.executable).with_name("ray"))
    out = subprocess.run(
        [ray, "status", "--address", address], env=_env(), capture_output=True, text=True
    )
    return out.stdout if out.returncode == 0 else ""


def _wait(what: str, ok, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.fixture
def cluster():
    from tests._dist_worker import free_port

    address = f"127.0.0.1:{free_port()}"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    nodes = [
        _ray(
            "--head",
            f"--port={address.split(':')[1]}",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        )
    ]
    try:
        _wait("the head node", lambda: bool(_status(address)))
        nodes.append(_ray(f"--address={address}", "--disable-usage-stats"))
        _wait("the worker node", lambda: _status(address).count("node_") >= 2)
        yield address
    finally:
        for node in nodes:  # `ray start --block` stops its node's processes on SIGTERM
            _signal_group(node, signal.SIGTERM)
        deadline = time.monotonic() + 10
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
