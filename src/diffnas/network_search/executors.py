"""Where candidates train: Ray tasks, a process pool (spawn), or this process.

Each executor yields results as candidates finish, so the caller stores every one at once;
results do not depend on the executor (a candidate's result is a function of its task).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from diffnas.errors import ConfigError, DiffnasError

Task = dict[str, Any]
Result = dict[str, Any]


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_executor(name: str) -> str:
    if name == "auto":
        return "ray" if ray_available() else "process"
    if name == "ray" and not ray_available():
        raise ConfigError(
            "netsearch.executor is 'ray' but ray is not installed; pip install 'diffnas[ray]' "
            "or set netsearch.executor: process"
        )
    return name


def worker_count(workers: int, n_tasks: int) -> int:
    return max(1, min(workers or os.cpu_count() or 1, n_tasks))


def run_serial(fn: Callable[[Task], Result], tasks: list[Task], workers: int) -> Iterator[Result]:
    del workers
    for task in tasks:
        yield fn(task)


def run_process(fn: Callable[[Task], Result], tasks: list[Task], workers: int) -> Iterator[Result]:
    """A spawn process pool (no fork of a torch process); results as they complete."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    if not tasks:
        return
    n = worker_count(workers, len(tasks))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = [pool.submit(fn, t) for t in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            raise DiffnasError(
                "a worker of the netsearch process pool died. Spawned workers import the main "
                "script: a script that calls diffnas.netsearch must do so under "
                "`if __name__ == '__main__':`. Otherwise a worker ran out of memory: lower "
                "netsearch.workers, or use netsearch.executor: serial"
            ) from None


def run_ray(
    fn: Callable[[Task], Result], tasks: list[Task], workers: int, address: str | None = None
) -> Iterator[Result]:
    """Ray tasks (one CPU each); `ray.init()` starts a local Ray unless `address` is given."""
    if not tasks:  # everything cached (a resumed run): no cluster to start
        return
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": address} if address else {}
        if not address and workers:
            kwargs["num_cpus"] = workers
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    remote = ray.remote(num_cpus=1)(fn)
    pending = [remote.remote(t) for t in tasks]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            yield ray.get(ref)


def executor(name: str, address: str | None = None) -> Callable[..., Iterator[Result]]:
    name = resolve_executor(name)
    if name == "ray":
        return lambda fn, tasks, workers: run_ray(fn, tasks, workers, address)
    if name == "process":
        return run_process
    if name == "serial":
        return run_serial
    raise ConfigError(f"unknown executor '{name}'")
