"""Where tasks run: Ray tasks (a local Ray or a cluster's address), a process pool
(spawn), or this process. One set of executors serves the network-level search (a task:
a candidate to train) and `diffnas bench quality` (a task: a search).

Each executor yields results as tasks finish, so the caller stores every one at once;
results do not depend on the executor (a result is a function of its task). With
`on_error`, a task whose worker failed (a crashed process, a lost Ray node) yields
`on_error(task, exception)` instead of ending the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from diffnas.errors import ConfigError, DiffnasError
from diffnas.utils import exit_with_parent

Task = Any
Result = dict[str, Any]
OnError = Callable[[Task, BaseException], Result]


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
            "the executor is 'ray' (netsearch.executor or --executor) but ray is not "
            'installed: pip install "diffnas[ray]", or use the process executor'
        )
    return name


def worker_count(workers: int) -> int:
    return max(1, workers or os.cpu_count() or 1)


class Executor:
    """Runs tasks, yielding results as they finish; workers live until `close`."""

    def __init__(self, workers: int) -> None:
        self.workers = worker_count(workers)

    def run(
        self, fn: Callable[[Task], Result], tasks: list[Task], on_error: OnError | None = None
    ) -> Iterator[Result]:
        for task in tasks:
            try:
                result = fn(task)
            except Exception as exc:
                if on_error is None:
                    raise
                result = on_error(task, exc)
            yield result

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """In the calling process, one task after the other."""


class ProcessExecutor(Executor):
    """A spawn process pool (no fork of a torch process), kept for every generation.

    Its workers end with the process that started them (`exit_with_parent`, checked every
    `watch_s` seconds): a netsearch killed with SIGKILL leaves no worker training on.
    """

    def __init__(self, workers: int, watch_s: float = 1.0) -> None:
        super().__init__(workers)
        self.pool: Any = None
        self.watch_s = watch_s

    def run(
        self, fn: Callable[[Task], Result], tasks: list[Task], on_error: OnError | None = None
    ) -> Iterator[Result]:
        if not tasks:  # everything cached (a resumed run): no workers to start
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        if self.pool is None:
            ctx = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=ctx,
                initializer=exit_with_parent,
                initargs=(os.getpid(), self.watch_s),
            )
        futures = {self.pool.submit(fn, t): t for t in tasks}
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:
                    if on_error is None:
                        raise
                    result = on_error(futures[future], exc)
                yield result
        except BrokenProcessPool:
            raise DiffnasError(
                "a worker of the netsearch process pool died. Spawned workers import the main "
                "script: a script that calls diffnas.netsearch must do so under "
                "`if __name__ == '__main__':`. Otherwise a worker ran out of memory: lower "
                "netsearch.workers, or use netsearch.executor: serial"
            ) from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


class RayExecutor(Executor):
    """Ray tasks (`cpus` CPUs each); `ray.init()` starts a local Ray unless `address` names
    a running cluster (`ray start --head` on one node, `ray start --address` on the others;
    every node needs diffnas installed, and the task's data where its config says)."""

    def __init__(self, workers: int, address: str | None = None, cpus: int = 1) -> None:
        self.explicit_workers = workers
        super().__init__(workers)
        self.address = address
        self.cpus = max(1, cpus)
        self.started = False

    def run(
        self, fn: Callable[[Task], Result], tasks: list[Task], on_error: OnError | None = None
    ) -> Iterator[Result]:
        if not tasks:  # everything cached (a resumed run): no cluster to start
            return
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address} if self.address else {}
            if not self.address and self.explicit_workers:
                kwargs["num_cpus"] = self.explicit_workers
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
            self.started = True
        remote = ray.remote(num_cpus=self.cpus)(fn)  # a crashed worker: retried by Ray
        refs = {remote.remote(t): t for t in tasks}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task raised, or its worker died
                    if on_error is None:
                        raise
                    result = on_error(refs[ref], exc)
                yield result

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def make_executor(
    name: str, workers: int, address: str | None = None, cpus_per_task: int = 1
) -> Executor:
    """`name`: auto, ray, process or serial; `workers`: parallel tasks of the process pool
    (and a local Ray's CPUs), 0 = the CPU count; `cpus_per_task`: what a Ray task asks for."""
    name = resolve_executor(name)
    if name == "ray":
        return RayExecutor(workers, address, cpus_per_task)
    if name == "process":
        return ProcessExecutor(workers)
    if name == "serial":
        return SerialExecutor(workers)
    raise ConfigError(f"unknown executor '{name}'")
