"""diffnas: differentiable neural architecture search (DARTS and its family) as composable parts.

import diffnas
result = diffnas.search("darts", overrides=["search.epochs=5"])
print(result.genotype)
trained = diffnas.train(result.genotype, overrides=["train.epochs=5"])

The public names below are imported on first use, so `import diffnas` (and `diffnas --help`)
does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Config": "diffnas.config",
    "load_config": "diffnas.config",
    "DiffnasError": "diffnas.errors",
    "TrainConfig": "diffnas.retrain",
    "TrainResult": "diffnas.retrain",
    "resume_training": "diffnas.retrain",
    "train": "diffnas.retrain",
    "NetsearchResult": "diffnas.network_search.evolution",
    "netsearch": "diffnas.network_search.evolution",
    "resume_netsearch": "diffnas.network_search.evolution",
    "Searcher": "diffnas.search",
    "SearchResult": "diffnas.search",
    "resume": "diffnas.search",
    "search": "diffnas.search",
    "Genotype": "diffnas.spaces",
    "get_space": "diffnas.spaces",
    "load_genotype": "diffnas.spaces",
}

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

if TYPE_CHECKING:
    from diffnas import choices, plugins
    from diffnas.config import Config, load_config
    from diffnas.errors import DiffnasError
    from diffnas.network_search.evolution import NetsearchResult, netsearch, resume_netsearch
    from diffnas.retrain import TrainConfig, TrainResult, resume_training, train  # type: ignore[no-redef]
    from diffnas.search import Searcher, SearchResult, resume, search
    from diffnas.spaces import Genotype, get_space, load_genotype


_SUBMODULES = ("choices", "plugins")  # `diffnas.choices.MixedChoice`, `diffnas.plugins.op`


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"diffnas.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffnas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


class _Package(types.ModuleType):
    """`diffnas.search` is both a submodule and the `search` function; importing the submodule
    must not replace the function (as the eager `from diffnas.search import search` did not)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "search" and isinstance(value, types.ModuleType):
            value = value.search
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
