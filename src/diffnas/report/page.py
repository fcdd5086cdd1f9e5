"""The run report: one self-contained report.html from a run directory's files.

Plots (matplotlib, PNGs embedded as base64) every numeric per-epoch series of metrics.jsonl,
the op-weight evolution per α key (mean over edges, and each edge's ops over the epochs) and
the genotype as text and drawn as graphs; works on a run still in progress.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffnas.errors import DiffnasError
from diffnas.report.draw import draw_genotype, edge_label, plot_edge_weights
from diffnas.run import RunDir
from diffnas.spaces.genotype import Genotype
from diffnas.utils import atomic_write_text

REPORT = "report.html"

# series plotted first, together, with readable titles; everything else numeric follows
KNOWN_GROUPS: list[tuple[str, list[str], str]] = [
    ("Loss", ["train_loss", "val_loss"], "cross-entropy"),
    ("Accuracy", ["train_acc", "val_acc"], "%"),
    # lookup_acc: the analog-nasbench table; nb201_file_acc: NAS-Bench-201's own file
    (
        "NAS-Bench-201 lookup accuracy",
        ["lookup_acc", "nb201_file_acc"],
        "CIFAR-10 test accuracy, %",
    ),
    ("Share of parameter-free ops in the derived genotype", ["param_free_share"], "share"),
]
# keys that are not per-epoch series (or are drawn elsewhere)
SKIP = {"epoch", "genotype", "alpha"}
TITLES = {
    # parts' metrics are `<part>/<key>` (diffnas.parts.Part.metrics)
    "rdarts/reg": "RDARTS Reg (mean over the epoch's architecture steps)",
    "rdarts/d": "RDARTS op-distribution distance d",
    "rdarts/r": "RDARTS resource term r",
    "rdarts/lambda": "RDARTS λ",
    "rdarts/cost": "RDARTS expected parameters per cell (own width)",
    "rdarts/cost_ref": "RDARTS expected parameters per cell (reference width)",
    "lr": "Weight learning rate",
    "arch_steps": "Architecture steps per epoch",
    "time_s": "Search time (s, cumulative)",
}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _value(v: Any) -> float:
    return float(v) if _is_number(v) else math.nan


@dataclass
class Series:
    """One plot: lines (name -> values per epoch) over the epochs."""

    key: str
    title: str
    lines: dict[str, list[float]] = field(default_factory=dict)
    ylabel: str = ""


def collect_series(records: list[dict[str, Any]]) -> list[Series]:
    """Every numeric per-epoch series, known groups first, then in order of appearance.

    A key whose values are numbers is one line; a key whose values are mappings of numbers
    (e.g. a per-cell cost) is one plot with a line per inner key. Missing epochs are gaps.
    """
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    out: list[Series] = []
    used: set[str] = set(SKIP)
    for title, group, ylabel in KNOWN_GROUPS:
        present = [k for k in group if any(_is_number(r.get(k)) for r in records)]
        if present:
            out.append(
                Series(
                    present[0],
                    title,
                    {k: [_value(r.get(k)) for r in records] for k in present},
                    ylabel,
                )
            )
        used.update(group)
    for key in keys:
        if key in used:
            continue
        values = [r.get(key) for r in records]
        title = TITLES.get(key, key)
        if any(_is_number(v) for v in values):
            out.append(Series(key, title, {key: [_value(v) for v in values]}))
        elif any(isinstance(v, dict) for v in values):
            inner: list[str] = []
            for v in values:
                if isinstance(v, dict):
                    inner += [k for k, x in v.items() if _is_number(x) and k not in inner]
            if inner:
                lines = {
                    k: [_value(v.get(k)) if isinstance(v, dict) else math.nan for v in values]
                    for k in inner
                }
                out.append(Series(key, title, lines))
    return out


# --------------------------------------------------------------------------- drawing
def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _wants_log(values: Sequence[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


def _epoch_axis(ax: Any, epochs: list[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    if len(epochs) <= 12:
        ax.set_xticks(epochs)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_series(series: Series, epochs: list[int]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.2), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    marker = "o" if len(epochs) <= 20 else None
    for name, values in series.lines.items():
        ax.plot(epochs, values, marker=marker, markersize=3, label=name)
    if _wants_log([v for vals in series.lines.values() for v in vals]):
        ax.set_yscale("log")
    ax.set_title(series.title, fontsize=10)
    _epoch_axis(ax, epochs)
    if series.ylabel:
        ax.set_ylabel(series.ylabel)
    ax.grid(alpha=0.3)
    if len(series.lines) > 1:
        ax.legend(fontsize=7, ncol=2 if len(series.lines) > 4 else 1)
    return _png(fig)


def plot_alpha(
    key: str,
    snapshots: list[Any],
    epochs: list[int],
    ops: list[str] | None,
    edges: list[str] | None,
) -> str | None:
    """Mean weight of each op over the edges per epoch, and the last epoch's weights."""
    from matplotlib.figure import Figure

    mats = [s for s in snapshots if isinstance(s, list) and s and isinstance(s[0], list)]
    if not mats:
        return None
    n_ops = len(mats[-1][0])
    names = ops if ops is not None and len(ops) == n_ops else [f"op{i}" for i in range(n_ops)]
    fig = Figure(figsize=(11, 3.4), dpi=90, layout="constrained")
    ax, hm = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    xs, means = [], []
    for ep, s in zip(epochs, snapshots):
        if isinstance(s, list) and s and isinstance(s[0], list) and len(s[0]) == n_ops:
            xs.append(ep)
            means.append([sum(row[o] for row in s) / len(s) for o in range(n_ops)])
    for o, name in enumerate(names):
        ax.plot(xs, [m[o] for m in means], marker="o" if len(xs) <= 20 else None, ms=3, label=name)
    ax.set_title(f"α '{key}': mean op weight over edges", fontsize=10)
    _epoch_axis(ax, xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    last = mats[-1]
    im = hm.imshow(last, aspect="auto", cmap="viridis")
    hm.set_title(f"α '{key}': op weights at epoch {xs[-1] if xs else '?'}", fontsize=10)
    hm.set_xticks(range(n_ops))
    hm.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    hm.set_yticks(range(len(last)))
    if edges is not None and len(edges) == len(last):
        hm.set_yticklabels(edges, fontsize=7)
    hm.set_ylabel("edge")
    fig.colorbar(im, ax=hm)
    return _png(fig)


# --------------------------------------------------------------------------- the run
def _load_config(run: RunDir) -> tuple[dict[str, Any], str]:
    try:
        text = run.config_path.read_text()
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError):
        return {}, ""
    return (data if isinstance(data, dict) else {}), text


def _space_labels(config: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """Per α key: op names and edge labels, from the run's space (empty if unavailable)."""
    try:
        from diffnas.config import SpaceConfig, from_dict
        from diffnas.spaces import get_space

        cfg = from_dict(SpaceConfig, config.get("space") or {}, "space")
        space = get_space(cfg)
        return {
            k: (list(spec.ops), [edge_label(s, d, cfg.name) for s, d in spec.edges])
            for k, spec in space.arch_specs().items()
        }
    except DiffnasError:
        return {}


def _genotype(run: RunDir, records: list[dict[str, Any]]) -> tuple[Genotype | None, str]:
    """The final genotype if written, else the last epoch's derived one."""
    try:
        if run.genotype_path.exists():
            g = Genotype.load(run.genotype_path)
            final = "method" in g.info  # the search stamps it when it ends
            return g, "final genotype" if final else "genotype of the last finished epoch"
    except DiffnasError:
        pass
    for r in reversed(records):
        if isinstance(r.get("genotype"), dict):
            try:
                return Genotype.from_json(r["genotype"]), "genotype of the last finished epoch"
            except DiffnasError:
                break
    return None, ""


def _fmt(v: Any) -> str:
    if _is_number(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return "–" if v is None else html.escape(str(v))


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; } .plots img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.status { font-weight: bold; }
"""


def build_report(run_dir: str | Path) -> str:
    """The HTML of a run's report (a run in progress included)."""
    from diffnas.spaces.render import render_genotype

    run = RunDir.open(run_dir)
    config, config_text = _load_config(run)
    records = run.read_metrics()
    search = config.get("search") or {}
    total = search.get("epochs")
    data = config.get("data") or {}
    genotype, genotype_label = _genotype(run, records)
    done = len(records)
    finished = genotype_label == "final genotype"
    if finished:
        status = f"finished ({done} epochs)"
    else:
        status = f"in progress or stopped: {done}/{total if total is not None else '?'} epochs"

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>diffnas report: {html.escape(run.path.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>diffnas run report: {html.escape(run.path.name)}</h1>",
        "<table>",
    ]
    space = config.get("space") or {}
    regs = search.get("regularizers") or []
    reg_names = [r if isinstance(r, str) else str(r.get("name")) for r in regs]
    for label, value in (
        ("method", config.get("method")),
        ("space", space.get("name")),
        ("searched cells", space.get("cells") or "shared normal/reduce"),
        ("dataset", data.get("dataset")),
        ("regularizers", ", ".join(reg_names) or "none"),
        ("status", status),
        ("report written", time.strftime("%Y-%m-%d %H:%M:%S")),
    ):
        parts.append(f"<tr><th>{label}</th><td>{_fmt(value)}</td></tr>")
    parts.append("</table>")

    if records:
        last = records[-1]
        scalars = [(k, v) for k, v in last.items() if k not in SKIP and _is_number(v)]
        parts.append(f"<h2>Last finished epoch ({last.get('epoch', done - 1) + 1})</h2><table>")
        parts += [f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in scalars]
        parts.append("</table>")

        epochs = [int(r.get("epoch", i)) + 1 for i, r in enumerate(records)]
        parts.append("<h2>Metrics per epoch</h2><div class='plots'>")
        for series in collect_series(records):
            parts.append(
                f"<img alt='{html.escape(series.title)}' "
                f"src='data:image/png;base64,{plot_series(series, epochs)}'>"
            )
        parts.append("</div>")

        alpha_keys: list[str] = []
        for r in records:
            if isinstance(r.get("alpha"), dict):
                alpha_keys += [k for k in r["alpha"] if k not in alpha_keys]
        if alpha_keys:
            labels = _space_labels(config)
            parts.append("<h2>Architecture weights (op weights per α key)</h2><div class='plots'>")
            for key in alpha_keys:
                snaps = [
                    r["alpha"].get(key) if isinstance(r.get("alpha"), dict) else None
                    for r in records
                ]
                ops, edges = labels.get(key, (None, None))
                png = plot_alpha(key, snaps, epochs, ops, edges)
                if png:
                    parts.append(
                        f"<img alt='alpha {html.escape(key)}' src='data:image/png;base64,{png}'>"
                    )
                per_edge = plot_edge_weights(key, snaps, epochs, ops, edges)
                if per_edge is not None:
                    parts.append(
                        f"<img alt='alpha {html.escape(key)} per edge' "
                        f"src='data:image/png;base64,{_png(per_edge)}'>"
                    )
            parts.append("</div>")
    else:
        parts.append("<p>No epoch has finished yet: metrics.jsonl is empty or missing.</p>")

    parts.append("<h2>Genotype</h2>")
    if genotype is not None:
        parts.append(f"<p>{genotype_label} ({RunDir.GENOTYPE} holds it as JSON)</p>")
        parts.append(f"<pre>{html.escape(render_genotype(genotype))}</pre>")
        try:
            drawing = _png(draw_genotype(genotype))
        except DiffnasError:  # a genotype the drawing cannot read is still shown as text
            drawing = ""
        if drawing:
            parts.append(
                f"<div class='plots'><img alt='derived cells' "
                f"src='data:image/png;base64,{drawing}'></div>"
            )
    else:
        parts.append("<p>No genotype yet.</p>")
    if config_text:
        parts.append(
            "<h2>Configuration</h2><details><summary>config.yaml</summary>"
            f"<pre>{html.escape(config_text)}</pre></details>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write report.html (atomically) into the run directory, or to `out`; return its path."""
    from diffnas.errors import require_extra

    require_extra("report", "matplotlib", what="diffnas report")
    text = build_report(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    atomic_write_text(path, text)
    return path
