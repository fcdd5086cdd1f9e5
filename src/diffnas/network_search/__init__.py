"""Network-level search: NSGA-II over networks built from searched blocks (arXiv 2103.12529).

A genome says how many normal cells each stage has, the initial channels, and which of the
top-K blocks of the block-level search each stage uses; candidates are scored by validation
error after a short proxy training and by their parameter count, under a parameter budget.
"""

from diffnas.network_search.evolution import NetsearchResult, pareto_front, run_netsearch
from diffnas.network_search.genome import Candidate, GenomeSpace, network_genotype

__all__ = [
    "Candidate",
    "GenomeSpace",
    "NetsearchResult",
    "network_genotype",
    "pareto_front",
    "run_netsearch",
]
