"""diffnas: differentiable neural architecture search (DARTS and its family) as composable parts.

import diffnas
result = diffnas.search("darts", overrides=["search.epochs=5"])
print(result.genotype)
trained = diffnas.train(result.genotype, overrides=["train.epochs=5"])
"""

from diffnas import choices, plugins
from diffnas.config import Config, load_config
from diffnas.errors import DiffnasError
from diffnas.evaluate import TrainConfig, TrainResult, resume_training, train
from diffnas.network_search.search import NetsearchResult, netsearch, resume_netsearch
from diffnas.search import Searcher, SearchResult, resume, search
from diffnas.spaces import Genotype, get_space, load_genotype

__version__ = "0.1.0"

__all__ = [
    "Config",
    "DiffnasError",
    "Genotype",
    "NetsearchResult",
    "SearchResult",
    "Searcher",
    "TrainConfig",
    "TrainResult",
    "choices",
    "get_space",
    "load_config",
    "load_genotype",
    "netsearch",
    "plugins",
    "resume",
    "resume_netsearch",
    "resume_training",
    "search",
    "train",
]
