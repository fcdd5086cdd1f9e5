"""The network-level search loop (pymoo NSGA-II, ask/tell) and its outputs.

Run directory: config.yaml, blocks.json (the blocks the genome chooses from),
candidates.jsonl (one line per evaluated candidate, appended as each finishes: a resumed
run re-evaluates none of them), pareto.csv / pareto.json / pareto.png (the front of every
feasible candidate: validation error vs parameters), network.json (the chosen network: a
genotype with a `network` section that `diffnas train/profile/export` accept) and, when the
block search ran from the same command, its run directory block_search/.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffnas.config import Config, dump_config, load_config, to_dict
from diffnas.errors import CheckpointError, ConfigError, require_extra
from diffnas.network_search.executors import make_executor, resolve_executor
from diffnas.network_search.genome import Candidate, GenomeSpace, network_genotype
from diffnas.network_search.proxy import (
    _DATASETS,
    evaluate_task,
    make_task,
    network_params,
    proxy_config,
)
from diffnas.run import claim_directory
from diffnas.spaces.genotype import Genotype
from diffnas.utils import append_jsonl, atomic_write_text, read_jsonl

CANDIDATES = "candidates.jsonl"
BLOCKS = "blocks.json"
NETWORK = "network.json"
BLOCK_SEARCH = "block_search"

Log = Callable[[str], None]


@dataclass
class NetsearchResult:
    run_dir: Path
    front: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    genotype: Genotype | None  # the chosen network (None: no feasible candidate)
    candidates: list[dict[str, Any]] = field(repr=False)
    evaluated: int = 0  # candidates trained by this call (0 for a finished run resumed)

    def __str__(self) -> str:
        lines = [f"Pareto front ({len(self.front)} networks, validation error vs parameters):"]
        for r in self.front:
            lines.append(f"  {r['params']:>9,d} params  {r['val_error']:6.2f} % error  {r['key']}")
        if self.chosen is not None:
            lines.append(
                f"chosen: {self.chosen['key']} ({self.chosen['params']:,d} params, "
                f"{self.chosen['val_error']:.2f} % validation error) -> {self.run_dir / NETWORK}"
            )
        else:
            lines.append("no candidate met the parameter budget")
        lines.append(f"run directory: {self.run_dir}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the front
def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["val_error"] <= b["val_error"]
        and a["params"] <= b["params"]
        and (a["val_error"] < b["val_error"] or a["params"] < b["params"])
    )


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The non-dominated feasible records (fewest parameters first)."""
    pts = sorted(
        (r for r in records if r["feasible"] and r.get("val_error") is not None),
        key=lambda r: (r["params"], r["val_error"], r["key"]),
    )
    front: list[dict[str, Any]] = []
    for r in pts:
        if not front or r["val_error"] < front[-1]["val_error"]:
            front.append(r)
    return front


def knee(front: list[dict[str, Any]]) -> dict[str, Any]:
    """The front's point farthest from the line through its two ends (both axes scaled to [0, 1])."""
    if len(front) < 3:
        return min(front, key=lambda r: (r["val_error"], r["params"]))
    p = np.array([[r["params"], r["val_error"]] for r in front], dtype=float)
    p = (p - p.min(0)) / np.maximum(p.max(0) - p.min(0), 1e-12)
    a, b = p[0], p[-1]
    d = b - a
    dist = np.abs(d[0] * (p[:, 1] - a[1]) - d[1] * (p[:, 0] - a[0])) / np.linalg.norm(d)
    return front[int(np.argmax(dist))]


def choose(front: list[dict[str, Any]], rule: str) -> dict[str, Any] | None:
    if not front:
        return None
    if rule == "knee":
        return knee(front)
    return min(front, key=lambda r: (r["val_error"], r["params"]))


# --------------------------------------------------------------------------- files
def read_candidates(path: Path) -> dict[str, dict[str, Any]]:
    # a line cut by a kill ends the file: that candidate is evaluated again
    return {rec["key"]: rec for rec in read_jsonl(path)}


def append_record(path: Path, record: dict[str, Any]) -> None:
    append_jsonl(path, record)


def save_blocks(path: Path, blocks: list[Genotype]) -> None:
    from diffnas.derive.top_k import save_blocks as save

    save(path, [(None, g) for g in blocks])


def write_outputs(
    run_dir: Path,
    records: list[dict[str, Any]],
    front: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    budget: int,
    title: str,
) -> None:
    cols = ["params", "val_error", "val_acc", "stages", "channels", "blocks", "key"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["rank", *cols])
    for i, r in enumerate(front):
        writer.writerow(
            [i + 1] + ["-".join(map(str, r[c])) if isinstance(r[c], list) else r[c] for c in cols]
        )
    atomic_write_text(run_dir / "pareto.csv", buf.getvalue())
    summary = {
        "budget": budget,
        "evaluated": len(records),
        "feasible": sum(r["feasible"] for r in records),
        "front": front,
        "chosen": chosen,
    }
    atomic_write_text(run_dir / "pareto.json", json.dumps(summary, indent=1) + "\n")
    plot_front(run_dir / "pareto.png", records, front, chosen, budget, title)


def plot_front(
    path: Path,
    records: list[dict[str, Any]],
    front: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    budget: int,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    done = [r for r in records if r["feasible"] and r.get("val_error") is not None]
    ax.scatter(
        [r["params"] / 1e6 for r in done],
        [r["val_error"] for r in done],
        s=14,
        c="0.65",
        label=f"evaluated ({len(done)})",
    )
    if front:
        ax.plot(
            [r["params"] / 1e6 for r in front],
            [r["val_error"] for r in front],
            "o-",
            c="tab:red",
            ms=5,
            label=f"Pareto front ({len(front)})",
        )
    if chosen is not None:
        ax.scatter(
            [chosen["params"] / 1e6],
            [chosen["val_error"]],
            marker="*",
            s=220,
            c="tab:blue",
            zorder=6,
            label="chosen",
        )
    ax.axvline(budget / 1e6, ls="--", c="k", lw=1, label=f"budget {budget / 1e6:g} M")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("validation error after proxy training (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.6)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the search
def genome_space(config: Config, n_blocks: int) -> GenomeSpace:
    n = config.netsearch
    return GenomeSpace(n.stages, n.blocks[0], n.blocks[1], tuple(n.channels), n_blocks)


def run_netsearch(
    config: Config,
    blocks: list[Genotype],
    run_dir: str | Path,
    log: Log | None = None,
    dataset: Any = None,
) -> NetsearchResult:
    """NSGA-II over networks of `blocks`; resumes from run_dir/candidates.jsonl if present."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.problems.static import StaticProblem

    from diffnas.data.loader import prepare_dataset

    say = log or (lambda _m: None)
    n = config.netsearch
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "config.yaml").exists():
        atomic_write_text(path / "config.yaml", dump_config(config))
    if n.top_k is not None:
        blocks = blocks[: n.top_k]
    if not (path / BLOCKS).exists():
        save_blocks(path / BLOCKS, blocks)
    space = genome_space(config, len(blocks))
    if any(b.space != "darts" for b in blocks):
        raise ConfigError(
            "the network search builds darts networks from darts blocks; search the blocks "
            "with space.name: darts"
        )

    ds = dataset if dataset is not None else prepare_dataset(config.data)
    proxy = proxy_config(n, config.data, config.seed, config.seed, config.device)
    _DATASETS.clear()
    _DATASETS[repr(to_dict(proxy.data))] = ds  # the serial executor reuses it
    device = config.device
    if device == "auto":
        device = "cpu" if resolve_executor(n.executor) != "serial" else device
    pool = make_executor(n.executor, n.workers, n.ray_address)
    file = path / CANDIDATES
    cache = read_candidates(file)
    trained = 0

    def evaluate(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal trained
        cands: list[Candidate] = [space.decode(row) for row in x.astype(int).tolist()]
        tasks = []
        pending: dict[str, dict[str, Any]] = {}
        for c in cands:
            if c.key in cache or c.key in pending:
                continue
            g = network_genotype(blocks, c)
            params = network_params(g, ds.num_classes, ds.in_channels)
            rec: dict[str, Any] = {
                "key": c.key,
                "genome": space.encode(c),
                "stages": list(c.stages),
                "channels": c.channels,
                "blocks": list(c.blocks),
                "params": params,
                "feasible": params <= n.budget,
                "val_error": None,
            }
            if rec["feasible"]:
                pending[c.key] = rec
                tasks.append(make_task(c.key, g, n, config.data, config.seed, device))
            else:  # over the budget: infeasible, not trained
                cache[c.key] = rec
                append_record(file, rec)
        for result in pool.run(evaluate_task, tasks):
            rec = pending.pop(result["key"]) | result
            cache[rec["key"]] = rec
            append_record(file, rec)
            trained += 1
            say(
                f"  {rec['key']}: {rec['params']:,d} params, {rec['val_error']:.2f} % error "
                f"({rec['train_s']:.0f} s)"
            )
        f = np.array(
            [
                [
                    cache[c.key]["val_error"] if cache[c.key]["feasible"] else 100.0,
                    cache[c.key]["params"],
                ]
                for c in cands
            ],
            dtype=float,
        )
        g_ = np.array([[cache[c.key]["params"] - n.budget] for c in cands], dtype=float)
        return f, g_

    problem = Problem(
        n_var=space.n_var,
        n_obj=2,
        n_ieq_constr=1,
        xl=np.array(space.lower),
        xu=np.array(space.upper),
        vtype=int,
    )
    algorithm = NSGA2(
        pop_size=n.population,
        sampling=IntegerRandomSampling(),
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    algorithm.setup(problem, termination=("n_gen", n.generations), seed=config.seed, verbose=False)
    seen: list[str] = []
    gen = 0
    start = time.monotonic()
    with pool:  # workers (process pool, local Ray) live for the whole search
        while algorithm.has_next():
            pop = algorithm.ask()
            x = pop.get("X")
            f, g_ = evaluate(x)
            Evaluator().eval(StaticProblem(problem, F=f, G=g_), pop)
            algorithm.tell(infills=pop)
            gen += 1
            for row in x.astype(int).tolist():
                key = space.decode(row).key
                if key not in seen:
                    seen.append(key)
            records = [cache[k] for k in seen]
            front = pareto_front(records)
            best = min((r["val_error"] for r in front), default=float("nan"))
            say(
                f"generation {gen}/{n.generations}: {len(seen)} networks, front {len(front)}, "
                f"best error under budget {best:.2f} % ({time.monotonic() - start:.0f} s)"
            )

    records = [cache[k] for k in seen]
    front = pareto_front(records)
    chosen = choose(front, n.choose)
    genotype = None
    if chosen is not None:
        c = space.decode(chosen["genome"])
        genotype = network_genotype(blocks, c, name=f"netsearch-{c.key}")
        genotype.info.update(
            {
                "params": chosen["params"],
                "proxy_val_error": chosen["val_error"],
                "chosen_by": n.choose,
                "budget": n.budget,
                "dataset": ds.label,
            }
        )
        genotype.save(path / NETWORK)
    res = config.data.resolution
    title = (
        f"{ds.label}{f' at {res}x{res}' if res else ''}: NSGA-II {n.generations} gen x "
        f"{n.population}, proxy {n.proxy_epochs} ep on {n.proxy_subset:g} of train "
        f"({n.holdout:g} held out)"
    )
    write_outputs(path, records, front, chosen, n.budget, title)
    return NetsearchResult(path, front, chosen, genotype, records, trained)


# --------------------------------------------------------------------------- two stages
def default_path(config: Config, root: str = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"netsearch-{config.method}-{config.data.dataset}-{stamp}"


def netsearch(
    config: Config,
    *,
    out: str | Path | None = None,
    from_runs: list[str | Path] | None = None,
    progress: bool | None = None,
    log: Log | None = None,
) -> NetsearchResult:
    """Both stages: the block search (unless `from_runs` gives its runs), then NSGA-II.

    The block search runs with `config` (a `top_k` derivation saves several blocks) into
    out/block_search; its blocks (blocks.json, else genotype.json) feed the network search.
    """
    from diffnas.derive.top_k import load_blocks

    require_extra("netsearch", "pymoo", "matplotlib", what="diffnas netsearch")
    say = log or (lambda _m: None)
    path = Path(out) if out is not None else Path(config.out or default_path(config))
    if (path / "config.yaml").exists():
        raise CheckpointError(
            f"'{path}' already holds a network search; continue it with --resume {path}, or "
            f"choose another --out"
        )
    # a directory diffnas did not make is never written into; one writer at a time
    lock, _ = claim_directory(path, "netsearch", what="network search directory")
    try:
        atomic_write_text(path / "config.yaml", dump_config(config))
        if from_runs:
            blocks = [b for src in from_runs for b in load_blocks(src)]
            top_k = config.netsearch.top_k
            save_blocks(path / BLOCKS, blocks[:top_k] if top_k else blocks)
        return _continue(path, config, progress, say)
    finally:
        if lock is not None:
            lock.release()


def resume_netsearch(
    run_dir: str | Path, *, progress: bool | None = None, log: Log | None = None
) -> NetsearchResult:
    """Continue a killed network search (and its block search, if that was not done)."""
    require_extra("netsearch", "pymoo", "matplotlib", what="diffnas netsearch")
    path = Path(run_dir)
    if not (path / "config.yaml").exists():
        raise CheckpointError(f"'{run_dir}' is not a network search directory (no config.yaml)")
    # locked for the resume; a directory of an older diffnas (no marker) is adopted
    lock, _ = claim_directory(
        path, "netsearch", adopt=lambda e: "config.yaml" in e, what="network search directory"
    )
    try:
        config: Config = load_config([str(path / "config.yaml")])
        return _continue(path, config, progress, log or (lambda _m: None))
    finally:
        if lock is not None:
            lock.release()


def _continue(path: Path, config: Config, progress: bool | None, say: Log) -> NetsearchResult:
    import diffnas
    from diffnas.derive.top_k import load_blocks

    if not (path / BLOCKS).exists():
        stage1 = path / BLOCK_SEARCH
        if (stage1 / "checkpoint.pt").exists():
            say(f"resuming the block search in {stage1}")
            diffnas.resume(stage1, progress=progress)
        else:
            say(f"block search ({config.method}) in {stage1}")
            # a block search killed before its first checkpoint starts again in place
            diffnas.search(config, out=stage1, progress=progress)
        save_blocks(path / BLOCKS, load_blocks(stage1))
    blocks = load_blocks(path / BLOCKS)
    say(f"network search over {len(blocks)} block(s), budget {config.netsearch.budget:,d} params")
    return run_netsearch(config, blocks, path, log=say)
