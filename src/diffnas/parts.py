"""Base classes of the composable parts a method is made of.

relaxation (α -> op weights), regularizers (terms of the validation loss), schedule
(when to take an architecture step), updater (how to get ∇α), derivation (weights ->
genotype). Each has a strict `Params` dataclass (checked when the config loads), its own
state_dict, and metrics (namespaced by the part's registered name in metrics.jsonl).

`PartContext` is what a part may read of the run it is in (the search loop passes itself,
`diffnas.search.Searcher`, which has every attribute the protocol names): parts are typed
against it, so mypy refuses a part that reaches further.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from diffnas.config import PartSpec, build_params
from diffnas.registry import Registry
from diffnas.supernet.base import Architecture
from diffnas.supernet.mixed import Active, MixWeights

if TYPE_CHECKING:
    from diffnas.config import Config
    from diffnas.data import CyclingStream, SearchData
    from diffnas.run import RunDir
    from diffnas.spaces.base import Space
    from diffnas.spaces.genotype import Genotype
    from diffnas.supernet.base import Supernet

Batch = tuple[torch.Tensor, torch.Tensor]
# what `Part.metrics` may return: JSON values (numbers, strings, None, lists, mappings)
MetricValue = float | int | str | bool | None | list[Any] | dict[str, Any]
Metrics = dict[str, MetricValue]


class PartContext(Protocol):
    """What a part may read of the search it is in (read-only: a part changes the run only
    through what its hooks return, α's gradients (updaters) and its own state).

    Where a part needs more, the protocol grows here, in one reviewed place.
    """

    # ---- the run
    @property
    def config(self) -> Config: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def run(self) -> RunDir | None:
        """The run directory (None for a search without one), for files a part writes."""

    # ---- progress: the epoch in progress, the weight step in it, fraction done
    @property
    def epoch(self) -> int: ...
    @property
    def epochs(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def global_step(self) -> int: ...
    @property
    def steps_per_epoch(self) -> int: ...
    @property
    def total_steps(self) -> int: ...
    @property
    def progress(self) -> float: ...

    # ---- α, the supernet (its cost tables: `model.cost_tables`), the space, the data
    @property
    def arch(self) -> Architecture: ...
    @property
    def model(self) -> Supernet: ...
    @property
    def space(self) -> Space: ...
    @property
    def data(self) -> SearchData: ...
    @property
    def val_stream(self) -> CyclingStream: ...
    @property
    def relaxation(self) -> Relaxation: ...
    @property
    def derivation(self) -> Derivation: ...
    def arch_parameters(self) -> list[torch.nn.Parameter]: ...

    # ---- the optimizers' state (the second-order updater reads the weights' momentum)
    @property
    def w_opt(self) -> torch.optim.Optimizer: ...
    @property
    def a_opt(self) -> torch.optim.Optimizer: ...
    @property
    def w_lr(self) -> float: ...

    # ---- the objective, for updaters and derivations that score
    @property
    def loss_fn(self) -> Callable[[Any, Any], torch.Tensor]: ...
    def forward(
        self, x: torch.Tensor, mix: MixWeights, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor: ...
    def autocast(self) -> Any: ...
    def full_precision(self) -> AbstractContextManager[None]: ...
    def reg_loss(self, mix: MixWeights, ce: torch.Tensor) -> torch.Tensor: ...
    def val_objective(
        self, mix: MixWeights, batch: Batch, params: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
    def check_finite(self, loss: torch.Tensor, phase: str) -> None: ...


class Part(ABC):
    """Common behaviour: parameters from the config, state for checkpoints, metrics.

    Order of the hooks in a search (`diffnas.search.Searcher` on the loop core
    `diffnas.loop.Loop`; pinned by tests/test_hook_order.py, which records the calls;
    docs/architecture.md). Parts are listed in `Searcher.parts()` order: relaxation,
    schedule, updater, regularizers, derivation. Hooks that take the run get it as a
    `PartContext`.

    - config load: `__init__` (with the `Params`): it checks its parameters, and must be
      cheap and draw no random numbers (`diffnas.config.validate` builds every part);
    - construction: `derivation.derive` (the initial genotype), then `setup` of each part;
      on resume, then `load_state_dict` of each part and `derivation.derive` again;
    - each step: `relaxation.set_progress`, `schedule.arch_step_due`, then, for a due
      architecture step, `updater.arch_grads` (which calls `regularizer.loss` through the
      validation objective), `relaxation.after_arch_step`, each `regularizer.after_arch_step`;
      the weight step calls each `regularizer.weight_mix` (in the config's order) on the
      op weights its forward will use, and ends with `schedule.after_weight_step`. The
      architecture step comes before the weight step, or after it where
      `schedule.weight_first`; never in warm-up;
    - each epoch's end: `derivation.derive`, then `metrics` of each part, exactly once
      (callbacks' `collect` and `on_epoch_end` follow, see `diffnas.callbacks.base.Callback`);
    - the search's end: `derivation.derive(final=True)` after the callbacks' `on_search_end`.

    `state_dict` is read whenever a checkpoint is written: by the checkpoint callback at a
    step's end (`on_step_end`) or an epoch's end (`on_epoch_end`).
    """

    Params: ClassVar[type | None] = None

    def __init__(self, params: Any = None) -> None:
        if params is None and self.Params is not None:
            params = self.Params()
        self.params = params

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def metrics(self) -> Metrics:
        """Values logged in metrics.jsonl at each epoch's end, under `<name>/<key>` (the
        part's registered name: `informed/threshold`). Called exactly once per epoch: a
        part may reset its per-epoch means here."""
        return {}

    def setup(self, searcher: PartContext) -> None:
        """Called once the supernet and architecture exist (e.g. to read cost tables)."""
        del searcher


def build_part(registry: Registry, spec: PartSpec, where: str) -> Any:
    cls = registry.get(spec.name)
    params = build_params(getattr(cls, "Params", None), spec.params, f"{where} ({spec.name})")
    return cls(params)


# --------------------------------------------------------------------------- relaxation
class Relaxation(Part):
    """Maps α to the op weights the supernet mixes with."""

    def init_alpha(self, shape: tuple[int, ...]) -> torch.Tensor:
        """DARTS init: 1e-3 · N(0, 1)."""
        return 1e-3 * torch.randn(shape)

    @abstractmethod
    def weights(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        """Differentiable op weights [E, O] used in the forward pass."""

    def probs(self, alpha: torch.Tensor, key: str) -> torch.Tensor:
        """Deterministic op weights for derivation and logging (default: `weights`)."""
        return self.weights(alpha, key)

    def active(self, alpha: torch.Tensor, key: str, weights: torch.Tensor) -> Active | None:
        """Which ops each edge computes (None: all but `none`)."""
        del alpha, key, weights
        return None

    def op_mask(self, key: str) -> torch.Tensor | None:
        """Ops still in the search, bool [E, O] (False: pruned for good); None: none pruned."""
        del key
        return None

    def mix(self, arch: Architecture) -> MixWeights:
        ops: dict[str, torch.Tensor] = {}
        active: dict[str, Active] = {}
        for key, alpha in arch.alpha.items():
            w = self.weights(alpha, key)
            ops[key] = w
            a = self.active(alpha, key, w)
            if a is not None:
                active[key] = a
        return MixWeights(ops, active or None, arch.edge_weights())

    def derivation_weights(self, arch: Architecture) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: self.probs(a, k) for k, a in arch.alpha.items()}

    def set_progress(self, t: float) -> None:
        """t in [0, 1]: the fraction of the search done (for annealing)."""
        del t

    def after_arch_step(self, arch: Architecture) -> None:
        """Called after each optimizer step on α (e.g. to clamp or prune)."""
        del arch


# --------------------------------------------------------------------------- regularizer
@dataclass
class RegContext:
    """What a regularizer may look at when adding its term to the validation loss."""

    arch: Architecture
    mix: MixWeights  # differentiable op weights of this step
    ce: torch.Tensor  # the cross-entropy part of the validation loss (with graph)
    progress: float  # fraction of the search done, in [0, 1]
    searcher: PartContext


class Regularizer(Part):
    @abstractmethod
    def loss(self, ctx: RegContext) -> torch.Tensor:
        """A scalar added to the validation loss."""

    def after_arch_step(self, arch: Architecture) -> None:
        del arch

    def weight_mix(self, s: PartContext, mix: MixWeights, batch: Batch) -> MixWeights:
        """The op weights the weight step's forward uses on `batch` (default: `mix`, the
        relaxation's). A regularizer of the weight step (SDARTS) returns other ones, e.g.
        perturbed; α itself must stay unchanged. Called by `Searcher.weight_step` before
        its forward; `mix` may already come from an earlier regularizer's `weight_mix`."""
        del s, batch
        return mix


# --------------------------------------------------------------------------- schedule
class Schedule(Part):
    """Decides, before each weight step, whether to take an architecture step first."""

    # fraction of the training set used for weights when data.train_portion is unset
    # (an instance may set its own, e.g. from its parameters)
    train_portion: float = 0.5
    needs_grad_energy: ClassVar[bool] = False
    # True: a due architecture step is taken after the weight step on the same batch
    # (XAutoDL's NB201 scripts) instead of before it (the DARTS code)
    weight_first: bool = False

    @abstractmethod
    def arch_step_due(self) -> bool: ...

    def after_weight_step(self, grad_energy: float | None) -> None:
        del grad_energy


# --------------------------------------------------------------------------- updater
@dataclass
class ArchStepResult:
    loss: torch.Tensor
    ce: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


class Updater(Part):
    """Computes ∇ of the validation objective w.r.t. the architecture parameters."""

    @abstractmethod
    def arch_grads(self, s: PartContext, train_batch: Batch, val_batch: Batch) -> ArchStepResult:
        """Set `.grad` of every architecture parameter; return the validation loss."""


# --------------------------------------------------------------------------- derivation
class Derivation(Part):
    @abstractmethod
    def derive(self, s: PartContext, final: bool = False) -> Genotype:
        """The genotype of the current α; `final` at the search's end (may cost a data pass)."""
