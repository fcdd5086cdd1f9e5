from __future__ import annotations

import pytest

from diffnas.nasbench import nb201
from diffnas.spaces import zoo
from diffnas.spaces.nb201 import from_nb201_string

pytestmark = pytest.mark.skipif(
    not nb201.available(), reason="analog-nasbench (diffnas[nb201]) not installed"
)


def test_known_cells() -> None:
    assert nb201.lookup(zoo.get("NB201_ALL_CONV3")) == pytest.approx(93.2424, abs=1e-3)
    assert nb201.lookup(zoo.get("NB201_ALL_SKIP")) == pytest.approx(60.7836, abs=1e-3)
    assert nb201.lookup(zoo.get("NB201_ANB_BEST")) == pytest.approx(94.0664, abs=1e-3)
    assert max(nb201.all_accuracies()) == pytest.approx(94.0664, abs=1e-3)


def test_edge_order_mapping() -> None:
    """A cell that differs only on edge 0->3 vs 1->2 must map to different table entries."""
    a = from_nb201_string("|none~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|none~1|none~2|")
    b = from_nb201_string("|none~0|+|none~0|avg_pool_3x3~1|+|nor_conv_3x3~0|none~1|none~2|")
    # analog-nasbench edge order is (0,1),(0,2),(0,3),(1,2),(1,3),(2,3); codes none=1, conv3=2, pool=4
    assert nb201.anb_key(a) == (1, 1, 4, 2, 1, 1)
    assert nb201.anb_key(b) == (1, 1, 2, 4, 1, 1)
    assert nb201.lookup(a) != nb201.lookup(b)
