"""Per-epoch NAS-Bench-201 lookup of the derived cell's CIFAR-10 accuracy (nb201 searches):
`lookup_acc` from the analog-nasbench table, and `nb201_file_acc` from NAS-Bench-201's own
file when $DIFFNAS_NB201_FILE names it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffnas.callbacks.base import Callback
from diffnas.nasbench import nb201

if TYPE_CHECKING:
    from diffnas.search import Searcher


NOTE = "op choice only (ACA skip fractions are not scored by the table)"


class Nb201Lookup(Callback):
    name = "lookup"

    def collect(self, s: Searcher, metrics: dict[str, Any]) -> None:
        g = s.current_genotype
        if nb201.available():
            metrics["lookup_acc"] = nb201.lookup(g)
        official = nb201.official_file()
        if official is not None:
            metrics["nb201_file_acc"] = nb201.official_lookup(g, official)
        if getattr(s.derivation, "adds_skip_fractions", False) or any(
            e.skip_fraction for c in g.cells for e in c.edges
        ):
            # the table trained plain cells: ACA skip fractions (now or in the final
            # genotype) are not reflected in lookup_acc
            metrics["lookup_scores"] = NOTE
