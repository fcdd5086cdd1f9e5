"""Figures of architectures: derived cells as graphs, op weights per edge over the epochs.

Owns the pictures the report and the loggers share: `draw_genotype` (each cell of a genotype
as a DAG, edges labelled by their op; networkx for the graph, matplotlib for the drawing),
`plot_edge_weights` (one panel per edge, a line per op, over the epochs) and `alpha_heatmap`
(edges × ops weights of one epoch). Figures are plain `matplotlib.figure.Figure` objects (no
pyplot state); `figure_png` and `figure_rgb` turn them into PNG bytes or an RGB array.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx
    import numpy as np
    from matplotlib.figure import Figure

    from diffnas.spaces.genotype import CellGenotype, Genotype

# one colour per op name (ops not listed get the remaining colours of the cycle in order)
OP_COLORS = {
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#8c564b",
    "max_pool_3x3": "#d62728",
    "avg_pool_3x3": "#ff7f0e",
    "skip_connect": "#7f7f7f",
    "nor_conv_3x3": "#1f77b4",
    "nor_conv_1x1": "#2ca02c",
    "none": "#bbbbbb",
}
_EXTRA_COLORS = ["#9467bd", "#e377c2", "#bcbd22", "#393b79", "#637939", "#843c39"]


def op_color(op: str, _cache: dict[str, str] = {}) -> str:  # noqa: B006 (stable per process)
    if op in OP_COLORS:
        return OP_COLORS[op]
    if op not in _cache:
        _cache[op] = _EXTRA_COLORS[len(_cache) % len(_EXTRA_COLORS)]
    return _cache[op]


# --------------------------------------------------------------------------- cells as graphs
def _input_count(space: str) -> int:
    """Input nodes of a cell: NB201 cells have one (node 0), DARTS-style cells two."""
    return 1 if space == "nb201" else 2


def _tex(label: str) -> str:
    return f"${label}$" if "_" in label else label


def node_label(node: int, space: str) -> str:
    if _input_count(space) == 1:
        return str(node)
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(node, str(node - 2))


OUTPUT = "c_{k}"


def edge_label(src: int, dst: int, space: str) -> str:
    """An edge as the drawing names its nodes, in matplotlib's math text: '$c_{k-2}$→0'."""
    return f"{_tex(node_label(src, space))}→{_tex(node_label(dst, space))}"


def cell_graph(cell: CellGenotype, space: str) -> nx.DiGraph:
    """The cell as a DAG: nodes by their label, one edge per genotype edge with `op` set.

    DARTS-style cells get the inputs c_{k-2}, c_{k-1}, the intermediate nodes 0, 1, ... and
    the output c_{k} (the concatenation, edges with op 'concat'); NB201 cells nodes 0..3 (0 the
    input, the last the output). Edges with op 'none' carry nothing and are left out. Two
    edges between the same nodes become one whose op reads 'a / b'.
    """
    import networkx as nx

    g = nx.DiGraph()
    n_in = _input_count(space)
    nodes = sorted({e.src for e in cell.edges} | {e.dst for e in cell.edges} | set(range(n_in)))
    for n in nodes:
        g.add_node(node_label(n, space), kind="input" if n < n_in else "node")
    for e in cell.edges:
        if e.op == "none":
            continue
        op = f"{e.op} (skip {e.skip_fraction:.2f})" if e.skip_fraction else e.op
        u, v = node_label(e.src, space), node_label(e.dst, space)
        if g.has_edge(u, v):
            g.edges[u, v]["op"] += f" / {op}"
        else:
            g.add_edge(u, v, op=op, color=op_color(e.op))
    if n_in == 2:
        g.add_node(OUTPUT, kind="output")
        concat = cell.concat if cell.concat is not None else [n for n in nodes if n >= n_in]
        for n in concat:
            g.add_edge(node_label(n, space), OUTPUT, op="concat", color="#cccccc")
    elif nodes:
        g.nodes[node_label(nodes[-1], space)]["kind"] = "output"
    return g


def _layout(g: nx.DiGraph, space: str) -> dict[Any, tuple[float, float]]:
    """Intermediate nodes on a horizontal line in order, the output at its right end; NB201's
    input starts the line, DARTS' two inputs sit above and below its left end."""
    pos: dict[Any, tuple[float, float]] = {}
    line = [n for n in g.nodes if g.nodes[n]["kind"] != "input" and n != OUTPUT]
    if _input_count(space) == 1:
        line = [n for n in g.nodes if n not in line] + line
    else:
        inputs = [n for n in g.nodes if g.nodes[n]["kind"] == "input"]
        for i, n in enumerate(inputs):
            pos[n] = (0.0, 1.5 - 3.0 * i)
    x0 = 0.0 if _input_count(space) == 1 else STEP
    for i, n in enumerate(line):
        pos[n] = (x0 + STEP * i, 0.0)
    if OUTPUT in g:
        pos[OUTPUT] = (x0 + STEP * len(line), 0.0)
    return pos


STEP = 1.7


def _arc(pos: dict[Any, tuple[float, float]], u: Any, v: Any, op: str, two_inputs: bool) -> float:
    """Curvature of edge u→v: straight unless it would run through a node of the line; then
    an arc whose side alternates with the source (concatenation edges bend the other way)."""
    (x1, y1), (x2, y2) = pos[u], pos[v]
    if y1 != 0.0 or y2 != 0.0 or abs(x2 - x1) <= STEP * 1.01:
        return 0.0
    if op == "concat":
        above = False
    elif two_inputs:  # between intermediate nodes: above; concatenation edges run below
        above = True
    else:  # NB201: alternate sides with the source node
        above = round(x1 / STEP) % 2 == 0
    # matplotlib's arc3: a positive rad bends a left-to-right edge downwards
    return -0.32 if above else 0.32


def _cell_title(cell: CellGenotype, genotype: Genotype) -> str:
    if genotype.space == "nb201":
        return "NB201 cell"
    if cell.stage is None:
        return f"{cell.type} cell"
    where = f"reduction {cell.stage}" if cell.type == "reduce" else f"stage {cell.stage}"
    return f"{cell.type} cell ({where})"


def draw_cell(cell: CellGenotype, space: str, ax: Any, title: str = "") -> nx.DiGraph:
    """Draw one cell on `ax`; returns its graph (edges labelled by op, coloured per op)."""
    import networkx as nx

    g = cell_graph(cell, space)
    pos = _layout(g, space)
    fill = {"input": "#cfe2f3", "output": "#d9ead3", "node": "#fff2cc"}
    size = 800
    nx.draw_networkx_nodes(
        g,
        pos,
        ax=ax,
        node_color=[fill[g.nodes[n]["kind"]] for n in g.nodes],
        node_size=size,
        edgecolors="#555555",
    )
    nx.draw_networkx_labels(g, pos, labels={n: _tex(n) for n in g.nodes}, ax=ax, font_size=9)
    for u, v, data in g.edges(data=True):
        rad = _arc(pos, u, v, data["op"], _input_count(space) == 2)
        style = f"arc3,rad={rad}"
        concat = data["op"] == "concat"
        nx.draw_networkx_edges(
            g,
            pos,
            edgelist=[(u, v)],
            ax=ax,
            edge_color=data["color"],
            width=0.8 if concat else 1.8,
            style="dashed" if concat else "solid",
            arrowsize=11,
            node_size=size,
            connectionstyle=style,
        )
        if not concat:
            # labels of edges leaving an input sit a fixed distance before their target, so
            # that the nearly parallel edges of one input keep their labels apart
            (x1, y1), (x2, y2) = pos[u], pos[v]
            length = math.hypot(x2 - x1, y2 - y1)
            label_pos = max(0.5, 1 - 1.1 / length) if g.nodes[u]["kind"] == "input" else 0.5
            nx.draw_networkx_edge_labels(
                g,
                pos,
                edge_labels={(u, v): data["op"]},
                ax=ax,
                font_size=8,
                font_color=data["color"],
                connectionstyle=style,
                label_pos=label_pos,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9},
            )
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(*ys, -1.0) - 0.6, max(*ys, 1.0) + 0.6)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return g


def draw_genotype(genotype: Genotype, title: str | None = None) -> Figure:
    """Every cell of `genotype` side by side (DARTS: normal and reduce; RDARTS: one per cell)."""
    from matplotlib.figure import Figure

    cells = list(genotype.cells)
    cols = 1 if len(cells) <= 2 else 2
    rows = math.ceil(len(cells) / cols)
    width, height = (6.0, 3.2) if genotype.space == "nb201" else (8.5, 3.8)
    fig = Figure(figsize=(width * cols, height * rows), dpi=90, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, cell in enumerate(cells):
        draw_cell(cell, genotype.space, axes[i // cols][i % cols], _cell_title(cell, genotype))
    for j in range(len(cells), rows * cols):
        axes[j // cols][j % cols].axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------- op weights
def _names(given: Sequence[str] | None, n: int, prefix: str) -> list[str]:
    return (
        list(given) if given is not None and len(given) == n else [f"{prefix}{i}" for i in range(n)]
    )


def plot_edge_weights(
    key: str,
    snapshots: Sequence[Any],
    epochs: Sequence[int],
    ops: Sequence[str] | None = None,
    edges: Sequence[str] | None = None,
) -> Figure | None:
    """Small multiples: one panel per edge, a line per op, the op's weight over the epochs.

    `snapshots[i]` is epoch `epochs[i]`'s matrix (edges × ops) or None (not logged); returns
    None when no epoch has a matrix.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    mats = [s for s in snapshots if _is_matrix(s)]
    if not mats:
        return None
    n_edges, n_ops = len(mats[-1]), len(mats[-1][0])
    op_names = _names(ops, n_ops, "op")
    edge_names = _names(edges, n_edges, "edge ")
    xs = [ep for ep, s in zip(epochs, snapshots) if _is_matrix(s) and _shape(s) == (n_edges, n_ops)]
    ms = [s for s in snapshots if _is_matrix(s) and _shape(s) == (n_edges, n_ops)]
    cols = min(n_edges, 5 if n_edges > 8 else 3)
    rows = math.ceil(n_edges / cols)
    width, height = 2.3 * cols + 1.8, 1.7 * rows + 0.7
    fig = Figure(figsize=(width, height), dpi=90)
    # fixed margins: a constrained layout of this many panels costs more than the drawing
    fig.subplots_adjust(
        left=0.55 / width,
        right=1 - 1.75 / width,
        bottom=0.55 / height,
        top=1 - 0.55 / height,
        wspace=0.12,
        hspace=0.35,
    )
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    marker = "o" if len(xs) <= 12 else None
    for e in range(n_edges):
        ax = axes[e // cols][e % cols]
        for o, name in enumerate(op_names):
            ax.plot(
                xs,
                [m[e][o] for m in ms],
                marker=marker,
                ms=2.5,
                lw=1.2,
                color=op_color(name),
                label=name,
            )
        # a text, not set_title: placing titles measures every axis (a third of the time)
        ax.text(0.5, 1.03, edge_names[e], transform=ax.transAxes, ha="center", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(xs) == 1:
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
    for j in range(n_edges, rows * cols):
        axes[j // cols][j % cols].axis("off")
    # few ticks: with this many panels the tick artists are most of the rendering time
    axes[0][0].xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    axes[0][0].yaxis.set_major_locator(MaxNLocator(nbins=3))
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="upper right", fontsize=7, title="op", title_fontsize=8, frameon=False
    )
    fig.suptitle(f"α '{key}': op weights of each edge over the epochs", fontsize=10)
    return fig


def alpha_heatmap(
    key: str,
    matrix: Sequence[Sequence[float]],
    ops: Sequence[str] | None = None,
    edges: Sequence[str] | None = None,
    epoch: int | None = None,
) -> Figure:
    """One epoch's op weights of α `key` as an edges × ops heatmap, values written in."""
    from matplotlib.figure import Figure

    n_edges, n_ops = len(matrix), len(matrix[0])
    fig = Figure(figsize=(1.0 + 0.75 * n_ops, 1.2 + 0.32 * n_edges), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(matrix, aspect="auto", cmap="viridis")
    ax.set_xticks(range(n_ops))
    ax.set_xticklabels(_names(ops, n_ops, "op"), rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n_edges))
    ax.set_yticklabels(_names(edges, n_edges, "edge "), fontsize=7)
    ax.set_ylabel("edge")
    # colours span this epoch's range (early on every weight is near 1/ops); values written in
    lo = min(min(row) for row in matrix)
    hi = max(max(row) for row in matrix)
    for e, row in enumerate(matrix):
        for o, v in enumerate(row):
            bright = hi > lo and (v - lo) / (hi - lo) > 0.6
            ax.text(
                o,
                e,
                f"{v:.3f}",
                ha="center",
                va="center",
                fontsize=6,
                color="black" if bright else "white",
            )
    when = f" at epoch {epoch}" if epoch is not None else ""
    ax.set_title(f"α '{key}': op weights{when}", fontsize=9)
    fig.colorbar(im, ax=ax)
    return fig


def _is_matrix(s: Any) -> bool:
    return isinstance(s, list) and bool(s) and isinstance(s[0], list) and bool(s[0])


def _shape(s: list[list[float]]) -> tuple[int, int]:
    return len(s), len(s[0])


# --------------------------------------------------------------------------- conversions
def figure_png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def figure_rgb(fig: Figure) -> np.ndarray:
    """The rendered figure as an H × W × 3 uint8 array (for TensorBoard, W&B, MLflow)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
