"""Per-epoch NAS-Bench-201 lookup of the derived cell's CIFAR-10 accuracy (nb201 searches)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffnas.benchmarks import nb201
from diffnas.callbacks.base import Callback

if TYPE_CHECKING:
    from diffnas.search import Searcher


class Nb201Lookup(Callback):
    name = "lookup"

    def collect(self, s: Searcher, metrics: dict[str, Any]) -> None:
        metrics["lookup_acc"] = nb201.lookup(s.current_genotype)
