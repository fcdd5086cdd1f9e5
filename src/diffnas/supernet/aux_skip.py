"""DARTS-'s auxiliary skip connection: its coefficient β over the search, and setting it.

The skip itself lives in each `SearchDAG` (built with `supernet.aux_skip`): every edge
outputs its mixed op plus β · skip(x), outside α, so it is never derived. β follows the
official `DecayScheduler` (Meituan-AutoML/DARTS- src/utils.py), stepped at each epoch's
start with the epoch's index e (from 0), T = `aux_skip_epochs` (null: search.epochs):

- linear:      β0 · (T − e) / T
- cosine:      β0 · (1 + cos(π e / T)) / 2
- slow_cosine: β0 · cos(π/2 · e / T)
- none:        β0

held at its value from e = T on (0 for the three decays).
"""

from __future__ import annotations

import math

from torch import nn

from diffnas.config import SupernetConfig
from diffnas.errors import ConfigError
from diffnas.supernet.dag import SearchDAG


def aux_beta(net: SupernetConfig, epoch: int, epochs: int) -> float:
    """β of epoch `epoch` (0-based) of a search of `epochs` epochs."""
    t_max = net.aux_skip_epochs or epochs
    e = min(epoch, t_max)
    b0 = net.aux_skip_beta
    if net.aux_skip_decay == "linear":
        return b0 * (t_max - e) / t_max
    if net.aux_skip_decay == "cosine":
        return b0 * (1.0 + math.cos(math.pi * e / t_max)) / 2.0
    if net.aux_skip_decay == "slow_cosine":
        return b0 * math.cos(math.pi / 2.0 * e / t_max)
    return b0


def set_aux_beta(model: nn.Module, beta: float) -> None:
    """Give every auxiliary skip of `model` the coefficient β."""
    dags = [m for m in model.modules() if isinstance(m, SearchDAG) and m.aux is not None]
    if not dags:
        raise ConfigError(
            "supernet.aux_skip needs a supernet of search cells (the darts or nb201 space); "
            "this one has none: set supernet.aux_skip=false"
        )
    for dag in dags:
        dag.aux_beta = beta


class AuxSkip:
    """The search's handle on the auxiliary skips: β set at each epoch's start, logged.

    Built for every search; without `supernet.aux_skip` it does nothing and logs nothing,
    so the loop calls it unconditionally."""

    def __init__(self, model: nn.Module, net: SupernetConfig, epochs: int) -> None:
        self.model, self.net, self.epochs = model, net, epochs
        if net.aux_skip:  # refuses a supernet without search cells
            set_aux_beta(model, aux_beta(net, 0, epochs))

    def begin_epoch(self, epoch: int) -> None:
        if self.net.aux_skip:  # DARTS-'s β, set once per epoch as its code
            set_aux_beta(self.model, aux_beta(self.net, epoch, self.epochs))

    def metrics(self, epoch: int) -> dict[str, float]:
        return {"aux_beta": aux_beta(self.net, epoch, self.epochs)} if self.net.aux_skip else {}
