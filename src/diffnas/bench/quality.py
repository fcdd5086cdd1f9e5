"""The quality bench: methods × seeds searched under one protocol, and the table they make.

A method is one or more config layers (a preset name or file, plus `key=value` overrides);
the protocol is layered after it, so the method keeps its own optimizer settings and parts
while the protocol fixes the budget (space size, data, resolution, epochs). Runs go to
`OUT/runs/<method>-s<seed>`, in parallel processes or as Ray tasks on a cluster (the
executors of diffnas.network_search.executors); a run whose `bench.json` says `done` is
finished and skipped, a run with a checkpoint is resumed, anything else starts fresh. The table
(Markdown and CSV) and the plot of NB201 lookup accuracy per epoch are rebuilt from the
run directories, so they always show what is on disk.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffnas.config import Config, from_dict, load_config, to_dict
from diffnas.errors import ConfigError, DiffnasError

if TYPE_CHECKING:  # runtime imports are local: `diffnas --help` must not import torch
    from diffnas.run import DirLock
    from diffnas.spaces.genotype import Genotype

DEFAULT_PROTOCOL = "protocols/nb201_cpu"
# the robust methods of the table, plain DARTS, and the random-search baseline (RDARTS needs
# per-cell α, which the nb201 space does not have: add it for a darts-space protocol)
DEFAULT_METHODS = (
    "darts_prime",
    "aca",
    "pc_darts",
    "gdas",
    "beta_darts",
    "rdarts:rdarts+space.cells=NNN",  # one α per stage: RDARTS compares same-type cells
    "darts",
    "random_search",
    "darts_long:darts+search.epochs=32",  # exact epochs: 4x the protocol's DARTS search
)
BENCH_FILE = "bench.json"
BENCH_ERROR = "bench_error.txt"


@dataclass(frozen=True)
class MethodSpec:
    """`[LABEL:]LAYER[+LAYER...]`: config layers (presets/files) and `key=value` overrides.

    `aca` -> label aca, layers [aca]; `darts_long:darts+search.epochs=40` -> label
    darts_long, layers [darts], overrides [search.epochs=40] (applied after the protocol).
    """

    label: str
    configs: tuple[str, ...]
    overrides: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        label, sep, rest = text.partition(":")
        if not sep:
            label, rest = "", text
        items = [p.strip() for p in rest.split("+")]
        if not rest.strip() or any(not p for p in items):
            raise ConfigError(
                f"method '{text}' must look like [LABEL:]CONFIG[+CONFIG...][+key=value...], "
                f"e.g. darts_prime or darts_long:darts+search.epochs=40"
            )
        configs = tuple(p for p in items if "=" not in p)
        overrides = tuple(p for p in items if "=" in p)
        if not configs:
            raise ConfigError(f"method '{text}' names no config (preset or file)")
        if not label:
            label = "+".join(Path(c).stem if c.endswith((".yaml", ".yml")) else c for c in configs)
        if not label.replace("_", "").replace("-", "").replace("+", "").isalnum():
            raise ConfigError(
                f"method label '{label}' may only hold letters, digits, '_', '-' and '+'"
            )
        return cls(label, configs, overrides)


@dataclass
class Job:
    method: str
    seed: int
    run_dir: Path
    config: dict[str, Any]  # the resolved Config as plain data (picklable)


@dataclass
class BenchPlan:
    jobs: list[Job]
    protocol: str
    threads: int
    parallel: int
    skipped: list[Job] = field(default_factory=list)


def resolve_config(
    method: MethodSpec,
    protocol: str | None,
    seed: int,
    extra: Sequence[str] = (),
    threads: int | None = None,
) -> Config:
    """method layers, then the protocol, then the method's overrides, the seed, `extra`."""
    sources = list(method.configs) + ([protocol] if protocol else [])
    overrides = [*method.overrides, f"seed={seed}", *extra, "log.progress=false"]
    if threads is not None:
        overrides.append(f"threads={threads}")
    return load_config(sources, overrides)


def run_name(method: str, seed: int) -> str:
    """A run's folder name under OUT/runs, and its name for `--only`."""
    return f"{method}-s{seed}"


def run_dir_for(out: Path, method: str, seed: int) -> Path:
    return out / "runs" / run_name(method, seed)


def is_finished(run_dir: Path) -> bool:
    path = run_dir / BENCH_FILE
    if not path.exists():
        return False
    import json

    try:
        return json.loads(path.read_text()).get("status") == "done"
    except (OSError, ValueError):
        return False


def plan(
    methods: Sequence[MethodSpec],
    seeds: Sequence[int],
    out: Path,
    protocol: str | None = DEFAULT_PROTOCOL,
    extra: Sequence[str] = (),
    jobs: int | None = None,
    threads: int | None = None,
    cores: int | None = None,
    only: Sequence[str] | None = None,
) -> BenchPlan:
    """Every (method, seed) run; seed-major order, so a cut-short bench covers every method.
    `only`: run just these of the grid, named as their folders (`METHOD-sSEED`); the others
    are neither run nor skipped (the table still covers them as they are on disk)."""
    labels = [m.label for m in methods]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ConfigError(f"method labels must be unique, repeated: {', '.join(sorted(dup))}")
    if only is not None:
        grid = [run_name(m, s) for s in seeds for m in labels]
        unknown = [r for r in only if r not in grid]
        if unknown:
            raise ConfigError(
                f"--only names runs of the grid as METHOD-sSEED; not in it: {', '.join(unknown)} "
                f"(the grid of --methods x --seeds: {', '.join(grid)})"
            )
    cores = cores or os.cpu_count() or 1
    # the cores are shared among the searches running at once: one thread each unless
    # --jobs says how many run at once
    if threads is None:
        threads = max(1, cores // jobs) if jobs else 1
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    parallel = jobs or max(1, cores // threads)
    if parallel < 1:
        raise ConfigError(f"--jobs must be >= 1, got {parallel}")
    result = BenchPlan([], protocol or "", threads, parallel)
    for seed in seeds:
        for m in methods:
            if only is not None and run_name(m.label, seed) not in only:
                continue
            cfg = resolve_config(m, protocol, seed, extra, threads)
            job = Job(m.label, seed, run_dir_for(out, m.label, seed), to_dict(cfg))
            check_same_settings(job)
            (result.skipped if is_finished(job.run_dir) else result.jobs).append(job)
    return result


OUT_FILES = {
    "runs",
    "quality.md",
    "quality.csv",
    "quality.png",
    "quality.tmp.png",
    ".storage-check",
}


def claim_out(out: Path, lock: bool = True) -> DirLock | None:
    """Make OUT the bench's directory (created, or empty, or an older bench's output) and
    lock it for the bench's life: two benches writing one OUT would mix their rows."""
    from diffnas.run import claim_directory

    held, _ = claim_directory(
        out,
        "bench",
        adopt=lambda entries: set(entries) <= OUT_FILES,
        lock=lock,
        what="bench output directory",
    )
    return held


def _bench_run_dir(entries: list[str]) -> bool:
    """A run directory an older bench wrote (before marker files): bench files or a checkpoint."""
    from diffnas.run import RunDir

    return bool({BENCH_FILE, BENCH_ERROR, RunDir.CHECKPOINT} & set(entries))


# keys that do not change a run's result: a rerun may change them freely
NEUTRAL_KEYS = ("threads", "out", "log", "checkpoint", "data.cache_dir")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def settings_differences(wanted: dict[str, Any], run_dir: Path) -> list[str]:
    """`key: run's value -> wanted value` for each setting in which the run directory's
    resolved config differs from `wanted` (NEUTRAL_KEYS left out); [] when they agree."""
    from diffnas.run import RunDir

    run = RunDir(run_dir)
    try:
        have = to_dict(run.load_config())
    except Exception as exc:  # unreadable, or from another diffnas version
        return [f"its config.yaml cannot be read ({type(exc).__name__})"]
    a, b = _flat(have), _flat(wanted)
    neutral = lambda k: any(k == n or k.startswith(n + ".") for n in NEUTRAL_KEYS)  # noqa: E731
    return [
        f"{k}: {a.get(k, '(unset)')!r} there, {b.get(k, '(unset)')!r} now"
        for k in sorted(set(a) | set(b))
        if not neutral(k) and a.get(k) != b.get(k)
    ]


def check_same_settings(job: Job) -> None:
    """Refuse to skip or resume a run that was made with other settings than the job's.

    A finished run is tabled as it is and a checkpointed run resumes with its own config: a
    rerun with other --epochs or --set would otherwise table old runs as if they matched.
    A run with neither is started again from scratch (with the job's settings).
    """
    from diffnas.run import RunDir

    run = RunDir(job.run_dir)
    if not (is_finished(job.run_dir) or run.checkpoint_path.exists()):
        return
    diffs = settings_differences(job.config, job.run_dir)
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise ConfigError(
            f"'{job.run_dir}' was searched with other settings than this bench asks for: "
            f"{'; '.join(diffs[:3])}{more}. Give the new settings their own --out, or delete "
            f"that run directory to search it again"
        )


def run_job(job: Job) -> dict[str, Any]:
    """One search (or its resumption); writes and returns the run's bench.json record."""
    from diffnas.run import RunDir, claim_directory
    from diffnas.search import resume, search
    from diffnas.utils import atomic_write_json

    run = RunDir(job.run_dir)
    record: dict[str, Any] = {"method": job.method, "seed": job.seed}
    start = time.monotonic()
    resumed = run.checkpoint_path.exists()
    try:
        # the run directory is the bench's: a directory someone else put there is refused
        claim_directory(run.path, "search", adopt=_bench_run_dir, lock=False)
    except DiffnasError as exc:
        return record | {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    prior = prior_wall(run.path) if resumed else 0.0
    # a record of the running search: if it is killed, the next bench's resume counts its
    # wall time up to its last checkpoint (prior_wall)
    record |= {"started_unix": round(time.time(), 3), "prior_wall_s": prior}
    # the machine this invocation ran on: a table completed over several sittings may mix
    # CPUs, whose wall times do not compare
    import torch

    from diffnas.bench.speed import cpu_model

    record |= {"cpu": cpu_model(), "torch": torch.__version__}
    atomic_write_json(run.path / BENCH_FILE, record | {"status": "running"})
    try:
        if resumed:
            resume(run.path, progress=False)
        else:  # a start killed before its first checkpoint starts again in place
            search(from_dict(Config, job.config), out=run.path, progress=False)
        record["status"] = "done"
    except Exception as exc:  # a failed run is a row of the table, not the end of the bench
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        (run.path / BENCH_ERROR).write_text(traceback.format_exc())
    record["wall_s"] = round(time.monotonic() - start, 2)
    record["resumed"] = resumed
    # over every invocation of the search (each killed one up to its last checkpoint: the
    # work after it was lost and done again); None when an older bench left no record
    record["total_wall_s"] = None if prior is None else round(prior + record["wall_s"], 2)
    # a failed run's record marks its row; the next bench tries it again (not "done")
    atomic_write_json(run.path / BENCH_FILE, record)
    return record


def prior_wall(run_dir: Path) -> float | None:
    """Wall seconds spent on a killed run before this resumption: what its earlier
    invocations recorded, the last one counted from its start to its last checkpoint. None
    when the killed invocation left no `running` record (a bench before this one)."""
    import json

    from diffnas.run import RunDir

    try:
        rec = json.loads((run_dir / BENCH_FILE).read_text())
        started, prior = float(rec["started_unix"]), rec["prior_wall_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if prior is None:
        return None
    checkpoint = run_dir / RunDir.CHECKPOINT
    upto = checkpoint.stat().st_mtime - started if checkpoint.exists() else 0.0
    return float(prior) + max(0.0, upto)


STORAGE_CHECK = ".storage-check"  # OUT/this: a token a task reads to see OUT is shared


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """A job run where its task lands (a process of the pool, or a Ray worker).

    Where OUT is shared storage (the task reads the driver's token in OUT), the search
    runs in its run directory there. Elsewhere (a Ray node without OUT) it runs in a local
    temporary directory, seeded with the run directory the driver sent (a run to resume),
    and the finished directory goes back to the driver in the record (`files`, a tar).
    """
    job: Job = task["job"]
    token = task.get("token")
    check = job.run_dir.parent.parent / STORAGE_CHECK
    try:
        shared = token is None or check.read_text() == token
    except OSError:
        shared = False
    if shared:
        return run_job(job)
    import tempfile
    from dataclasses import replace

    with tempfile.TemporaryDirectory(prefix="diffnas-bench-") as tmp:
        local = Path(tmp) / job.run_dir.name
        if task.get("files"):
            _unpack(task["files"], local)
        record = run_job(replace(job, run_dir=local))
        record["files"] = _pack(local)
        record["ran_on"] = "local storage of the worker, sent back"
    return record


def _pack(run_dir: Path) -> bytes:
    """A run directory as a gzip'ed tar (its lock file left out)."""
    import tarfile

    from diffnas.run import LOCK

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(run_dir.iterdir()):
            if f.name != LOCK and f.is_file():
                tar.add(f, arcname=f.name)
    return buf.getvalue()


def _unpack(data: bytes, run_dir: Path) -> None:
    """Make `run_dir` hold exactly the files of a `_pack` archive (plain files only)."""
    import shutil
    import tarfile

    tmp = run_dir.with_name(f".{run_dir.name}.incoming")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name.startswith(".."):
                raise DiffnasError(f"a returned run directory holds '{member.name}'")
            src = tar.extractfile(member)
            assert src is not None
            (tmp / member.name).write_bytes(src.read())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    os.replace(tmp, run_dir)


def _failed(task: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The record of a job whose worker died (a crashed process, a lost Ray node)."""
    job: Job = task["job"]
    return {
        "method": job.method,
        "seed": job.seed,
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
    }


EXECUTORS = ("process", "ray", "serial")


def execute(
    bench: BenchPlan,
    on_done: Callable[[Job, dict[str, Any]], None] | None = None,
    executor: str = "process",
    address: str | None = None,
) -> list[dict[str, Any]]:
    """Run the plan's jobs on an executor of diffnas.network_search.executors: `process`
    (`parallel` spawned processes at a time; inline when parallel == 1), `ray` (a task of
    `threads` CPUs per job, on the cluster at `address` or a local Ray) or `serial`.

    A job whose worker dies is a failed row; finished runs are on disk (or sent back and
    unpacked) as each job ends, so a killed bench resumes without re-running them."""
    from diffnas.network_search.executors import make_executor

    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got '{executor}'")
    if executor == "process" and (bench.parallel == 1 or len(bench.jobs) <= 1):
        executor = "serial"
    jobs = {(j.method, j.seed): j for j in bench.jobs}
    token = None
    if executor == "ray" and bench.jobs:
        import secrets

        from diffnas.run import RunDir
        from diffnas.utils import atomic_write_text

        out = bench.jobs[0].run_dir.parent.parent
        token = secrets.token_hex(16)
        atomic_write_text(out / STORAGE_CHECK, token)
        for job in bench.jobs:  # absolute paths: a Ray worker's directory is not ours
            job.run_dir = job.run_dir.resolve()
    tasks = []
    for job in bench.jobs:
        task: dict[str, Any] = {"job": job, "token": token}
        if token is not None and RunDir(job.run_dir).checkpoint_path.exists():
            task["files"] = _pack(job.run_dir)  # a run to resume, for a node without OUT
        tasks.append(task)
    records = []
    with make_executor(executor, bench.parallel, address, bench.threads) as pool:
        for rec in pool.run(run_task, tasks, on_error=_failed):
            job = jobs[(rec["method"], rec["seed"])]
            files = rec.pop("files", None)
            if files is not None:
                _unpack(files, job.run_dir)
            records.append(rec)
            if on_done:
                on_done(job, rec)
    return records


# =========================================================================== the table
@dataclass
class Row:
    method: str
    seed: int
    status: str  # done, partial (running or killed), failed, missing
    epochs_done: int
    epochs: int
    wall_s: float | None
    search_s: float | None
    cell: str
    lookup_acc: float | None
    param_free_share: float | None
    curve: list[float | None]
    none_edges: int | None = None  # edges of the derived cell that compute nothing
    times: list[float | None] = field(default_factory=list)  # search-loop seconds per epoch end

    def csv(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seed": self.seed,
            "status": self.status,
            "epochs": f"{self.epochs_done}/{self.epochs}" if self.epochs else "",
            "wall_s": _num(self.wall_s, 1),
            "search_s": _num(self.search_s, 1),
            "cell": self.cell,
            "lookup_acc": _num(self.lookup_acc, 2),
            "param_free_share": _num(self.param_free_share, 3),
            "none_edges": "" if self.none_edges is None else str(self.none_edges),
        }


def _num(v: float | None, digits: int) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def cell_string(g: Genotype | None) -> str:
    """The NB201 string of an nb201 genotype; other spaces: a compact op list."""
    if g is None:
        return ""
    if g.space == "nb201":
        from diffnas.spaces.nb201 import to_nb201_string

        return to_nb201_string(g)
    return " / ".join(",".join(e.op for e in c.edges) for c in g.cells)


def _wall(bench: dict[str, Any]) -> float | None:
    """A finished run's wall time over all its invocations; None for a resumed run whose
    earlier invocations are unknown."""
    if not bench.get("resumed"):
        return bench.get("wall_s")
    total = bench.get("total_wall_s")
    return None if total is None else float(total)


def read_row(run_dir: Path, method: str, seed: int) -> Row:
    import json

    from diffnas.run import RunDir  # imports torch: not at module level (`diffnas --help`)

    run = RunDir(run_dir)
    records = run.read_metrics() if run.path.exists() else []
    epochs = 0
    if run.config_path.exists():
        try:
            epochs = run.load_config().search.epochs
        except Exception:  # a config from another diffnas version: show what we can
            epochs = 0
    bench: dict[str, Any] = {}
    if (run.path / BENCH_FILE).exists():
        bench = json.loads((run.path / BENCH_FILE).read_text())
    if bench.get("status") in ("done", "failed"):
        status = bench["status"]
    elif records:
        status = "partial"
    else:
        status = "missing"
    last = records[-1] if records else {}
    raw = last.get("genotype")
    if status == "done" and run.genotype_path.exists():
        raw = json.loads(run.genotype_path.read_text())
    from diffnas.spaces.genotype import Genotype

    genotype = Genotype.from_json(raw) if raw else None  # parsed once for every column
    lookup = last.get("lookup_acc")
    if status == "done" and genotype is not None:
        lookup = _lookup(genotype, lookup)
    return Row(
        method=method,
        seed=seed,
        status=status,
        epochs_done=len(records),
        epochs=epochs,
        wall_s=_wall(bench) if status == "done" else None,
        search_s=last.get("time_s"),
        cell=cell_string(genotype),
        lookup_acc=lookup,
        param_free_share=_param_free(genotype, last.get("param_free_share")),
        curve=[r.get("lookup_acc") for r in records],
        none_edges=_none_edges(genotype),
        times=[r.get("time_s") for r in records],
    )


def _lookup(g: Genotype, fallback: float | None) -> float | None:
    from diffnas.nasbench import nb201

    if g.space != "nb201" or not nb201.available():
        return fallback
    return nb201.lookup(g)


def _param_free(g: Genotype | None, fallback: float | None) -> float | None:
    if g is None:
        return fallback
    from diffnas.spaces import space_for

    return space_for(g).param_free_share(g)


def _none_edges(g: Genotype | None) -> int | None:
    return None if g is None else sum(e.op == "none" for c in g.cells for e in c.edges)


def collect_rows(out: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[Row]:
    return [read_row(run_dir_for(out, m, s), m, s) for m in methods for s in seeds]


@dataclass
class Summary:
    method: str
    done: int
    runs: int
    mean: float | None
    std: float | None
    best: float | None
    worst: float | None
    param_free: float | None
    wall_s: float | None
    none_edges: float | None = None


def summarize(rows: Sequence[Row]) -> list[Summary]:
    out = []
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        done = [r for r in mine if r.status == "done" and r.lookup_acc is not None]
        accs = [float(r.lookup_acc) for r in done if r.lookup_acc is not None]
        walls = [r.wall_s for r in done if r.wall_s is not None]
        pf = [r.param_free_share for r in done if r.param_free_share is not None]
        nones = [r.none_edges for r in done if r.none_edges is not None]
        out.append(
            Summary(
                method,
                len(done),
                len(mine),
                statistics.fmean(accs) if accs else None,
                statistics.stdev(accs) if len(accs) > 1 else None,
                max(accs) if accs else None,
                min(accs) if accs else None,
                statistics.fmean(pf) if pf else None,
                statistics.fmean(walls) if walls else None,
                statistics.fmean(nones) if nones else None,
            )
        )
    return out


def markdown(rows: Sequence[Row], title: str = "") -> str:
    buf = io.StringIO()
    if title:
        buf.write(f"{title}\n\n")
    buf.write(
        "| method | runs done | NB201 lookup acc. mean ± std (%) | best | worst "
        "| param-free share | `none` edges | mean wall (s) |\n|---|---|---|---|---|---|---|---|\n"
    )
    for s in summarize(rows):
        mean = _num(s.mean, 2) + (f" ± {s.std:.2f}" if s.std is not None else "")
        buf.write(
            f"| {s.method} | {s.done}/{s.runs} | {mean or '–'} | {_num(s.best, 2) or '–'} "
            f"| {_num(s.worst, 2) or '–'} | {_num(s.param_free, 2) or '–'} "
            f"| {_num(s.none_edges, 1) or '–'} | {_num(s.wall_s, 0) or '–'} |\n"
        )
    buf.write(
        "\n| method | seed | status | epochs | wall (s) | search loop (s) | derived cell "
        "| NB201 lookup acc. (%) | param-free share | `none` edges |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        c = r.csv()
        # a table cell: the NB201 string's `|` escaped so Markdown keeps the columns
        cell = "`" + c["cell"].replace("|", "\\|") + "`" if c["cell"] else ""
        buf.write(
            f"| {r.method} | {r.seed} | {r.status} | {c['epochs']} | {c['wall_s']} "
            f"| {c['search_s']} | {cell} | {c['lookup_acc']} | {c['param_free_share']} "
            f"| {c['none_edges']} |\n"
        )
    return buf.getvalue()


def write_csv(rows: Sequence[Row], path: Path) -> None:
    buf = io.StringIO()
    fields = list(rows[0].csv()) if rows else ["method", "seed"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.csv())
    from diffnas.utils import atomic_write_text

    atomic_write_text(path, buf.getvalue())


def _style(i: int) -> tuple[str, str]:
    """The i-th method's colour and mean-line style: matplotlib's ten colours repeat, so
    every ten methods the line style changes (solid, dashed, dotted) to keep methods apart."""
    return f"C{i % 10}", ("-", "--", ":")[(i // 10) % 3]


def plot(rows: Sequence[Row], path: Path, title: str = "") -> None:
    """NB201 lookup accuracy over search epochs: per method the mean over seeds (thick) and
    each seed (thin)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    methods = list(dict.fromkeys(r.method for r in rows))
    for i, method in enumerate(methods):
        color, ls = _style(i)
        curves = [[v for v in r.curve] for r in rows if r.method == method and r.curve]
        for c in curves:
            xs = [e + 1 for e, v in enumerate(c) if v is not None]
            ax.plot(xs, [v for v in c if v is not None], color=color, alpha=0.3, lw=0.8)
        if not curves:
            continue
        n = max(len(c) for c in curves)
        mean = []
        for e in range(n):
            vals = [float(v) for c in curves if e < len(c) and (v := c[e]) is not None]
            mean.append(statistics.fmean(vals) if vals else math.nan)
        ax.plot(
            range(1, n + 1),
            mean,
            color=color,
            ls=ls,
            lw=2.0,
            label=f"{method} ({len(curves)})",
        )
    ax.axhline(94.07, color="grey", ls=":", lw=1.0, label="table optimum 94.07")
    ax.set_xlabel("search epoch")
    ax.set_ylabel("NB201 lookup accuracy of the derived cell (%)")
    ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


# =========================================================================== anytime
DEFAULT_MINUTES = (5.0, 15.0, 30.0, 60.0)


def anytime_at(row: Row, minutes: float) -> float | None:
    """The lookup accuracy of the cell `row`'s search would have given had it been stopped
    after `minutes` of search loop: the cell derived at the end of the last epoch finished by
    then (`time_s` of metrics.jsonl, cumulative over resumes). A finished search that took
    less gives its final cell; None when no epoch had ended by then, or the run stopped
    before `minutes` without finishing (it cannot say what it would have found)."""
    limit = minutes * 60.0
    ended = [(acc, t) for acc, t in zip(row.curve, row.times) if t is not None and t <= limit]
    if not ended:
        return None
    if len(ended) == len(row.times):  # every recorded epoch ended within the budget
        return row.lookup_acc if row.status == "done" else None
    return ended[-1][0]


@dataclass
class AnytimePoint:
    method: str
    minutes: float
    runs: int  # runs with a value at this budget
    mean: float | None
    best: float | None
    worst: float | None


def anytime(rows: Sequence[Row], minutes: Sequence[float] = DEFAULT_MINUTES) -> list[AnytimePoint]:
    """Per method and budget: mean, best and worst over seeds of `anytime_at`."""
    out = []
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        for m in minutes:
            vals = [float(v) for r in mine if (v := anytime_at(r, m)) is not None]
            out.append(
                AnytimePoint(
                    method,
                    m,
                    len(vals),
                    statistics.fmean(vals) if vals else None,
                    max(vals) if vals else None,
                    min(vals) if vals else None,
                )
            )
    return out


def anytime_markdown(rows: Sequence[Row], minutes: Sequence[float] = DEFAULT_MINUTES) -> str:
    """A table method × budget: mean (best/worst, runs) of the lookup accuracy."""
    points = anytime(rows, minutes)
    head = " | ".join(f"{m:g} min" for m in minutes)
    buf = io.StringIO()
    buf.write(
        "Anytime: NB201 lookup accuracy (%) of the cell derived at the last epoch ended within "
        "each budget of search-loop time, mean over seeds (best / worst, seeds with a value).\n\n"
    )
    buf.write(f"| method | {head} |\n|---|{'---|' * len(minutes)}\n")
    for method in dict.fromkeys(p.method for p in points):
        cells = []
        for p in (p for p in points if p.method == method):
            if p.mean is None:
                cells.append("–")
            else:
                cells.append(f"{p.mean:.2f} ({p.best:.2f} / {p.worst:.2f}, {p.runs})")
        buf.write(f"| {method} | {' | '.join(cells)} |\n")
    return buf.getvalue()


def anytime_ylim(rows: Sequence[Row]) -> tuple[float, float]:
    """The full panel's y range: down to the lowest final or 5-minute cell (so a method that
    ended low, e.g. in a skip or pooling collapse, stays visible), not below 0; up to just
    above the table optimum."""
    lows = [float(r.lookup_acc) for r in rows if r.lookup_acc is not None]
    lows += [float(v) for r in rows if (v := anytime_at(r, 5.0)) is not None]
    bottom = min([80.0, *lows]) - 1.0
    return max(0.0, math.floor(bottom)), 95.0


def plot_anytime(rows: Sequence[Row], path: Path, title: str = "", zoom: float = 90.0) -> None:
    """Lookup accuracy against search minutes: per seed the step curve of the cell derived
    at each epoch's end (thin), per method the mean over seeds at each minute (thick). Two
    panels of the same curves: the whole range (every final cell visible) and a zoom above
    `zoom` %, where the methods that work differ by tenths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    methods = list(dict.fromkeys(r.method for r in rows))
    longest = max((t for r in rows for t in r.times if t is not None), default=60.0) / 60.0
    grid = [longest * i / 200 for i in range(1, 201)]
    for i, method in enumerate(methods):
        color, ls = _style(i)
        mine = [r for r in rows if r.method == method and r.times]
        if not mine:
            continue
        steps = []
        for r in mine:
            pts = [
                (t / 60.0, a) for a, t in zip(r.curve, r.times) if t is not None and a is not None
            ]
            if pts:
                steps.append(([p[0] for p in pts], [p[1] for p in pts]))
        xs, ys = [], []
        for m in grid:
            vals = [float(v) for r in mine if (v := anytime_at(r, m)) is not None]
            if len(vals) == len(mine):  # the mean only where every seed has a value
                xs.append(m)
                ys.append(statistics.fmean(vals))
        for k, ax in enumerate(axes):
            for sx, sy in steps:
                ax.step(sx, sy, where="post", color=color, alpha=0.3, lw=0.8)
            label = f"{method} ({len(mine)})" if k == 0 else None
            ax.plot(xs, ys, color=color, ls=ls, lw=2.0, label=label)
    for k, ax in enumerate(axes):
        ax.axhline(
            94.07, color="grey", ls=":", lw=1.0, label="table optimum 94.07" if k == 0 else None
        )
        ax.set_xlabel("search minutes (search loop, cumulative over resumes)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("NB201 lookup accuracy of the derived cell (%)")
    axes[0].set_ylim(*anytime_ylim(rows))
    axes[0].set_title("whole range", fontsize=9)
    axes[1].set_ylim(zoom, 94.5)
    axes[1].set_title(f"zoom: above {zoom:g} %", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.legend(fontsize=8, loc="lower center", ncol=min(7, len(methods) + 1))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def plot_available() -> bool:
    """quality.png needs matplotlib (the `report` extra); the table and CSV do not."""
    from importlib.util import find_spec

    return find_spec("matplotlib") is not None


def write_outputs(
    out: Path,
    methods: Sequence[str],
    seeds: Sequence[int],
    title: str = "",
    minutes: Sequence[float] = DEFAULT_MINUTES,
) -> list[Row]:
    """quality.md (the table, then the anytime table), quality.csv, quality.png (accuracy over
    epochs) and anytime.png (accuracy over search minutes) in `out`, from the run
    directories."""
    from diffnas.utils import atomic_write_text

    rows = collect_rows(out, methods, seeds)
    atomic_write_text(
        out / "quality.md", markdown(rows, title) + "\n" + anytime_markdown(rows, minutes)
    )
    write_csv(rows, out / "quality.csv")
    if plot_available():
        plot(rows, out / "quality.png", title)
        plot_anytime(rows, out / "anytime.png", title)
    return rows
