"""Cells drawn as graphs and op weights per edge: counted against the published cells."""

from __future__ import annotations

from collections import Counter

from diffnas.report.draw import (
    OUTPUT,
    cell_graph,
    draw_genotype,
    figure_png,
    figure_rgb,
    plot_edge_weights,
)
from diffnas.spaces import zoo
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype
from diffnas.spaces.nb201 import from_nb201_string

# DARTS_V2 as printed in the DARTS authors' genotypes.py: (op, input) pairs of nodes 0..3
V2_NORMAL = Counter({"sep_conv_3x3": 5, "skip_connect": 2, "dil_conv_3x3": 1})
V2_REDUCE = Counter({"max_pool_3x3": 5, "skip_connect": 3})


def edge_texts(ax, ops: set[str]) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_text() in ops]


def test_darts_cells_drawn_with_one_label_per_edge() -> None:
    g = zoo.get("DARTS_V2")
    fig = draw_genotype(g)
    axes = [ax for ax in fig.axes if ax.axison or ax.texts]
    assert len(axes) == 2
    ops = set(V2_NORMAL) | set(V2_REDUCE)
    assert Counter(edge_texts(axes[0], ops)) == V2_NORMAL
    assert Counter(edge_texts(axes[1], ops)) == V2_REDUCE
    assert [ax.get_title() for ax in axes] == ["normal cell", "reduce cell"]
    graph = cell_graph(g.cells[0], "darts")
    # 2 inputs, 4 intermediate nodes, the output; 8 op edges + 4 into the concatenation
    assert graph.number_of_nodes() == 7 and graph.number_of_edges() == 12
    assert sorted(graph.predecessors(OUTPUT)) == ["0", "1", "2", "3"]
    # node 0 = c_{k-2} (sep) + c_{k-1} (sep); node 3 = c_{k-2} (skip) + node 0 (dil_conv)
    assert graph.edges["c_{k-2}", "0"]["op"] == "sep_conv_3x3"
    assert graph.edges["0", "3"]["op"] == "dil_conv_3x3"
    assert figure_png(fig).startswith(b"\x89PNG")


def test_nb201_cell_leaves_out_none_edges() -> None:
    g = from_nb201_string("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|")
    graph = cell_graph(g.cells[0], "nb201")
    assert sorted(graph.edges) == [("0", "1"), ("1", "2"), ("2", "3")]
    fig = draw_genotype(g)
    texts = edge_texts(fig.axes[0], {"nor_conv_3x3", "skip_connect", "avg_pool_3x3", "none"})
    assert sorted(texts) == ["avg_pool_3x3", "nor_conv_3x3", "skip_connect"]
    rgb = figure_rgb(fig)
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype.name == "uint8"


def test_per_stage_cells_each_get_a_panel() -> None:
    edges = tuple(Edge("sep_conv_3x3", i, j) for j in range(2, 6) for i in (0, 1))
    kinds = {"N": "normal", "R": "reduce"}
    stages = (0, 0, 1, 1, 2)
    g = Genotype(
        "darts", tuple(CellGenotype(kinds[t], edges, st) for t, st in zip("NRNRN", stages))
    )
    fig = draw_genotype(g)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == [
        "normal cell (stage 0)",
        "reduce cell (reduction 0)",
        "normal cell (stage 1)",
        "reduce cell (reduction 1)",
        "normal cell (stage 2)",
    ]


def test_edge_weights_one_panel_per_edge_one_line_per_op() -> None:
    snaps = [[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]], None, [[0.4, 0.6], [0.7, 0.3], [0.1, 0.9]]]
    fig = plot_edge_weights("k", snaps, [1, 2, 3], ["a", "b"], ["x", "y", "z"])
    assert fig is not None
    panels = [ax for ax in fig.axes if ax.lines]
    assert [[t.get_text() for t in ax.texts] for ax in panels] == [["x"], ["y"], ["z"]]
    # epoch 2 logged no α: each line has epochs 1 and 3 only, with the weights given
    second = panels[1].lines
    assert [ln.get_label() for ln in second] == ["a", "b"]
    assert list(second[0].get_xdata()) == [1, 3] and list(second[0].get_ydata()) == [0.9, 0.7]
    assert plot_edge_weights("k", [None, None], [1, 2]) is None
