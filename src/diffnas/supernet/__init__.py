"""Supernets built from a search space: mixed ops, the search-cell DAG, α containers."""

from diffnas.supernet.base import Architecture, ArchSpec, CellSite, Supernet
from diffnas.supernet.mixed import MixWeights

__all__ = ["ArchSpec", "Architecture", "CellSite", "MixWeights", "Supernet"]
