"""DrNAS's progressive learning: the search runs in stages; between two stages the op set
is pruned and the partial-channel K decreases (the mixed ops grow).

Within each stage the first `warmup_epochs` epochs train the weights only (the official
train_search_progressive.py passes the stage's own epoch counter to train(), which skips
the architecture step while it is below 10), then one architecture step comes before each
weight step. A stage ends after the last weight step of its last epoch: the relaxation
keeps the `keep_ops[i+1]` ops of largest α on each edge (the official model.pruning), then
every partial-channel mixed op grows to K = `partial_channels[i+1]` (model.wider, with SGD's
momentum carried over as net2wider.configure_optimizer does). The learning-rate schedule
runs on over the whole search, as the official code reloads its scheduler's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from diffnas.errors import ConfigError
from diffnas.parts import Schedule
from diffnas.registry import SCHEDULES
from diffnas.supernet.widen import make_widenable, partial_groups, widen_partial_channels

if TYPE_CHECKING:
    from diffnas.parts import PartContext


def scale_stages(stages: list[int], warmup: int, epochs: int) -> tuple[list[int], int]:
    """The stage lengths and per-stage warm-up for a search of `epochs` epochs.

    Unchanged when the stages add up to `epochs`; otherwise (a protocol's `epochs_scale`,
    `--epochs`) each stage and the warm-up keep their share, as `search.warmup_epochs`
    does (config.merge): stages rounded by largest remainder, each at least 1 epoch; the
    warm-up rounded, at least 1 if it was, and leaving every stage an epoch with
    architecture steps. drnas_nb201's [50, 50] with 10 at 16 epochs: [8, 8] with 2.
    """
    total = sum(stages)
    if total == epochs:
        return list(stages), warmup
    if epochs < len(stages):
        raise ConfigError(
            f"search.schedule (progressive): {len(stages)} stages need at least "
            f"{len(stages)} epochs, but search.epochs is {epochs}"
        )
    exact = [e * epochs / total for e in stages]
    scaled = [max(1, int(x)) for x in exact]
    order = sorted(range(len(stages)), key=lambda i: int(exact[i]) - exact[i])
    i = 0
    while sum(scaled) < epochs:
        scaled[order[i % len(order)]] += 1
        i += 1
    while sum(scaled) > epochs:  # the minimum of 1 overshot: take from the longest
        scaled[scaled.index(max(scaled))] -= 1
    if warmup > 0:
        warmup = min(max(1, round(warmup * epochs / total)), min(scaled) - 1)
    return scaled, warmup


def _non_increasing(values: list[int]) -> bool:
    return all(a >= b for a, b in pairwise(values))


@SCHEDULES.register("progressive")
class Progressive(Schedule):
    """DrNAS (Chen et al., ICLR 2021) progressive schedule; arch step before weight step.

    `stage_epochs` (empty: one stage, the whole search) are the stages at the preset's
    length; a search of another length (`--epochs`, a protocol's `epochs_scale`) keeps each
    stage's share and the warm-up's (`scale_stages`);
    `partial_channels` (empty: K never changes) starts at supernet.partial_channels;
    `keep_ops` (empty: no pruning) starts at the number of ops per edge and needs a
    relaxation that prunes (dirichlet). The official settings: darts space stages
    [25, 25], K [6, 4], ops kept [7, 4]; nb201 stages [50, 50], K [4, 2], ops kept [5, 3];
    warm-up 10 epochs per stage on both.
    """

    train_portion = 0.5

    @dataclass
    class Params:
        stage_epochs: list[int] = field(default_factory=list)
        partial_channels: list[int] = field(default_factory=list)
        keep_ops: list[int] = field(default_factory=list)
        # epochs at the start of each stage without architecture steps
        warmup_epochs: int = 0

        def __post_init__(self) -> None:
            where = "search.schedule (progressive)"
            if any(e < 1 for e in self.stage_epochs):
                raise ConfigError(f"{where}: every stage needs >= 1 epoch, got {self.stage_epochs}")
            n = len(self.stage_epochs)
            for name in ("partial_channels", "keep_ops"):
                values = getattr(self, name)
                if values and len(values) != max(n, 1):
                    raise ConfigError(
                        f"{where}: {name} needs one value per stage ({max(n, 1)}), got {values}"
                    )
                if any(v < 1 for v in values) or not _non_increasing(values):
                    raise ConfigError(
                        f"{where}: {name} must be positive and never increase from stage to "
                        f"stage, got {values}"
                    )
            if self.warmup_epochs < 0:
                raise ConfigError(f"{where}: warmup_epochs must be >= 0, got {self.warmup_epochs}")
            if any(self.warmup_epochs >= e for e in self.stage_epochs):
                raise ConfigError(
                    f"{where}: warmup_epochs={self.warmup_epochs} leaves a stage of "
                    f"{min(self.stage_epochs)} epoch(s) without architecture steps; lower it"
                )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.searcher: PartContext | None = None
        self.warmup = self.params.warmup_epochs  # per stage, at this search's length
        self.ends: list[int] = []  # the epoch each stage ends before
        self.stage = 0  # stages finished (transitions done)

    def setup(self, searcher: PartContext) -> None:
        p = self.params
        where = "search.schedule (progressive)"
        self.searcher = searcher
        stages, self.warmup = scale_stages(
            p.stage_epochs or [searcher.epochs], p.warmup_epochs, searcher.epochs
        )
        self.ends = [sum(stages[: i + 1]) for i in range(len(stages))]
        k0 = searcher.config.supernet.partial_channels
        if p.partial_channels and p.partial_channels[0] != k0:
            raise ConfigError(
                f"{where}: partial_channels starts at {p.partial_channels[0]}, but "
                f"supernet.partial_channels is {k0}; set --set "
                f"supernet.partial_channels={p.partial_channels[0]}"
            )
        if p.partial_channels and p.partial_channels[-1] != k0:
            if k0 == 1:
                raise ConfigError(f"{where}: K changes, so supernet.partial_channels must be > 1")
            for group in partial_groups(searcher.model):
                channels = group.k * group.part
                for k in p.partial_channels:
                    if channels % k:
                        raise ConfigError(
                            f"{where}: partial_channels={k} does not divide a cell's channel "
                            f"count {channels}; choose values dividing space.channels"
                        )
            make_widenable(searcher.model)
        if p.keep_ops:
            if not hasattr(searcher.relaxation, "keep_top_ops"):
                raise ConfigError(
                    f"{where}: keep_ops prunes ops, which needs a relaxation that keeps an op "
                    f"mask (dirichlet); got '{searcher.config.search.relaxation.name}'"
                )
            for key, spec in searcher.arch.specs.items():
                if p.keep_ops[0] != len(spec.ops):
                    raise ConfigError(
                        f"{where}: keep_ops starts at {p.keep_ops[0]}, but the {key!r} cell has "
                        f"{len(spec.ops)} ops ({', '.join(spec.ops)}); start it at "
                        f"{len(spec.ops)} or change space.exclude_ops"
                    )
        if searcher.config.search.warmup_epochs:
            raise ConfigError(
                f"{where}: has its own per-stage warm-up (warmup_epochs of the schedule); set "
                f"search.warmup_epochs=0"
            )

    def stage_of(self, epoch: int) -> int:
        return next((i for i, end in enumerate(self.ends) if epoch < end), len(self.ends) - 1)

    def arch_step_due(self) -> bool:
        assert self.searcher is not None
        epoch = self.searcher.epoch
        i = self.stage_of(epoch)
        start = self.ends[i - 1] if i else 0
        return epoch - start >= self.warmup

    def after_weight_step(self, grad_energy: float | None) -> None:
        s = self.searcher
        assert s is not None
        if s.step != s.steps_per_epoch - 1 or self.stage >= len(self.ends) - 1:
            return
        if s.epoch + 1 == self.ends[self.stage]:
            self.next_stage()

    def next_stage(self) -> None:
        """Prune to the next stage's op count, then grow the mixed ops to its K."""
        s = self.searcher
        assert s is not None
        p = self.params
        self.stage += 1
        if p.keep_ops:
            s.relaxation.keep_top_ops(s.arch, p.keep_ops[self.stage])  # type: ignore[attr-defined]
        if p.partial_channels:
            widen_partial_channels(s.model, p.partial_channels[self.stage], s.w_opt)

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])

    def metrics(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {"stage": self.stage, "stage_ends": list(self.ends)}
        if p.partial_channels:
            out["partial_channels"] = p.partial_channels[self.stage]
        if p.keep_ops:
            out["ops_per_edge"] = p.keep_ops[self.stage]
        return out
