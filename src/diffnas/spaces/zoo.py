"""Published cells by name (DARTS, PC-DARTS, P-DARTS, GDAS, DrNAS, the NB201 optimum).

Written in the papers' (op, input) pair notation and converted to genotypes on access.
"""

from __future__ import annotations

from diffnas.errors import GenotypeError, did_you_mean
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype

Pairs = list[tuple[str, int]]

# DARTS-notation cells: two (op, input) pairs per node 2..5. Sources: the authors' genotypes.py.
_DARTS_CELLS: dict[str, tuple[Pairs, Pairs, str]] = {
    "DARTS_V1": (
        [
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 2),
        ],
        [
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("avg_pool_3x3", 0),
        ],
        "DARTS first order (Liu et al., ICLR 2019)",
    ),
    "DARTS_V2": (
        [
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ],
        [
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ],
        "DARTS second order (Liu et al., ICLR 2019)",
    ),
    "PC_DARTS": (
        [
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 0),
            ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 1),
            ("avg_pool_3x3", 0),
            ("dil_conv_3x3", 1),
        ],
        [
            ("sep_conv_5x5", 1),
            ("max_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
        ],
        "PC-DARTS, CIFAR-10 (Xu et al., ICLR 2020)",
    ),
    "PDARTS": (
        [
            ("skip_connect", 0),
            ("dil_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 0),
            ("dil_conv_5x5", 4),
        ],
        [
            ("avg_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_3x3", 0),
            ("dil_conv_5x5", 2),
            ("max_pool_3x3", 0),
            ("dil_conv_3x3", 1),
            ("dil_conv_3x3", 1),
            ("dil_conv_5x5", 3),
        ],
        "P-DARTS (Chen et al., ICCV 2019)",
    ),
    "GDAS": (
        [
            ("skip_connect", 0),
            ("skip_connect", 1),
            ("skip_connect", 0),
            ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 3),
            ("skip_connect", 0),
            ("sep_conv_5x5", 4),
            ("sep_conv_3x3", 3),
        ],
        [
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 2),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 2),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_5x5", 1),
        ],
        "GDAS_V1 (Dong & Yang, CVPR 2019)",
    ),
    "DrNAS": (
        [
            ("sep_conv_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
            ("dil_conv_5x5", 3),
        ],
        [
            ("max_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 2),
            ("sep_conv_5x5", 1),
            ("sep_conv_5x5", 1),
            ("dil_conv_5x5", 3),
            ("skip_connect", 4),
            ("sep_conv_5x5", 1),
        ],
        "DrNAS, CIFAR-10 (Chen et al., ICLR 2021)",
    ),
}

# NB201 cells in the benchmark's string format.
_NB201_CELLS: dict[str, tuple[str, str]] = {
    "NB201_OPTIMUM": (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "best CIFAR-10 test accuracy in NAS-Bench-201 (94.37 %, published mean; "
        "analog-nasbench table 93.99 %)",
    ),
    "NB201_ANB_BEST": (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        "best baseline accuracy in the analog-nasbench table (94.07 %)",
    ),
    "NB201_ALL_CONV3": (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "every edge nor_conv_3x3",
    ),
    "NB201_ALL_SKIP": (
        "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
        "every edge skip_connect: the collapsed cell of DARTS on NB201",
    ),
}


# CIFAR-10 test accuracy (%) that NAS-Bench-201 publishes for a zoo cell (Dong & Yang, ICLR
# 2020: the mean over its 200-epoch training runs), shown by `diffnas lookup` beside the table
PUBLISHED_NB201 = {"NB201_OPTIMUM": 94.37}


def _darts_cell(pairs: Pairs, cell_type: str) -> CellGenotype:
    edges = tuple(Edge(op, src, 2 + i // 2) for i, (op, src) in enumerate(pairs))
    return CellGenotype(cell_type, edges, None, (2, 3, 4, 5))


def names(space: str | None = None) -> list[str]:
    out = []
    if space in (None, "darts"):
        out += list(_DARTS_CELLS)
    if space in (None, "nb201"):
        out += list(_NB201_CELLS)
    return out


def describe(name: str) -> str:
    if name in _DARTS_CELLS:
        return _DARTS_CELLS[name][2]
    return _NB201_CELLS[name][1]


def get(name: str) -> Genotype:
    if name in _DARTS_CELLS:
        normal, reduce, note = _DARTS_CELLS[name]
        cells = (_darts_cell(normal, "normal"), _darts_cell(reduce, "reduce"))
        return Genotype("darts", cells, name, {"source": note})
    if name in _NB201_CELLS:
        from diffnas.spaces.nb201 import from_nb201_string

        text, note = _NB201_CELLS[name]
        g = from_nb201_string(text)
        return Genotype("nb201", g.cells, name, {"source": note})
    raise GenotypeError(
        f"unknown zoo cell '{name}'{did_you_mean(name, names())}; known: {', '.join(names())}"
    )


def is_zoo_name(name: str) -> bool:
    return name in _DARTS_CELLS or name in _NB201_CELLS
