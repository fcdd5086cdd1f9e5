"""The order in which the search calls parts' hooks and callbacks' hooks (documented in
diffnas/parts.py and diffnas/callbacks/base.py), pinned on a 2-epoch tiny search."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from diffnas.callbacks.base import Callback
from diffnas.derive.default import SpaceRule
from diffnas.regularizers.beta_decay import BetaDecay
from diffnas.relaxations.softmax import Softmax
from diffnas.schedules.alternate import Alternate
from diffnas.search import Searcher
from diffnas.updaters.first_order import FirstOrder

from .conftest import tiny_config

PART_HOOKS = {
    "relaxation": (Softmax, ("setup", "set_progress", "after_arch_step", "metrics")),
    "schedule": (Alternate, ("setup", "arch_step_due", "after_weight_step", "metrics")),
    "updater": (FirstOrder, ("setup", "arch_grads", "metrics")),
    "regularizer": (BetaDecay, ("setup", "loss", "after_arch_step", "weight_mix", "metrics")),
    "derivation": (SpaceRule, ("setup", "derive", "metrics")),
}
PARTS = ("relaxation", "schedule", "updater", "regularizer", "derivation")  # Searcher.parts()


class Recorder(Callback):
    name = "recorder"

    def __init__(self, calls: list[tuple[str, ...]]) -> None:
        self.calls = calls

    def on_search_start(self, s: Any) -> None:
        self.calls.append(("callback", "on_search_start"))

    def on_epoch_start(self, s: Any) -> None:
        self.calls.append(("callback", "on_epoch_start"))

    def on_step_end(self, s: Any) -> None:
        self.calls.append(("callback", "on_step_end"))

    def collect(self, s: Any, metrics: dict[str, Any]) -> None:
        self.calls.append(("callback", "collect"))

    def on_epoch_end(self, s: Any, metrics: dict[str, Any]) -> None:
        self.calls.append(("callback", "on_epoch_end"))

    def on_search_end(self, s: Any) -> None:
        self.calls.append(("callback", "on_search_end"))


def expected(steps: int, epochs: int, weight_first: bool) -> list[tuple[str, ...]]:
    """The documented order, written out by hand."""
    arch = [
        ("updater", "arch_grads"),
        ("regularizer", "loss"),  # inside arch_grads: the validation objective
        ("relaxation", "after_arch_step"),
        ("regularizer", "after_arch_step"),
    ]
    weight = [("regularizer", "weight_mix"), ("schedule", "after_weight_step")]
    out: list[tuple[str, ...]] = [("derivation", "derive")]  # the initial genotype
    out += [(p, "setup") for p in PARTS]
    out.append(("callback", "on_search_start"))
    for _ in range(epochs):
        out.append(("callback", "on_epoch_start"))
        for _ in range(steps):
            out += [("relaxation", "set_progress"), ("schedule", "arch_step_due")]
            out += weight + arch if weight_first else arch + weight
            out.append(("callback", "on_step_end"))
        out.append(("derivation", "derive"))
        out += [(p, "metrics") for p in PARTS]
        out += [("callback", "collect"), ("callback", "on_epoch_end")]
    out += [("callback", "on_search_end"), ("derivation", "derive", "final")]
    return out


@pytest.mark.parametrize("order", ["arch_first", "weight_first"])
def test_hooks_are_called_in_the_documented_order(order: str, monkeypatch) -> None:
    calls: list[tuple[str, ...]] = []
    for role, (cls, hooks) in PART_HOOKS.items():
        for hook in hooks:
            original = getattr(cls, hook)

            def wrapped(*args: Any, _f=original, _r=role, _h=hook, **kwargs: Any) -> Any:
                final = kwargs.get("final", args[2] if len(args) > 2 else False)
                calls.append((_r, _h, "final") if _h == "derive" and final else (_r, _h))
                return _f(*args, **kwargs)

            monkeypatch.setattr(cls, hook, functools.wraps(original)(wrapped))
    cfg = tiny_config(
        "nb201",
        epochs=2,
        **{
            "data.subset": "0.05",
            "data.batch_size": "16",
            "search.schedule": f"{{name: alternate, order: {order}}}",
            "search.regularizers": "[beta_decay]",
        },
    )
    s = Searcher(cfg, callbacks=[Recorder(calls)])
    s.run_search()
    assert s.steps_per_epoch >= 2
    assert calls == expected(s.steps_per_epoch, 2, order == "weight_first")
