"""The loop core (diffnas.loop) on a toy loop: the order of its hooks, resume from a
checkpoint taken mid-epoch, the averager, and checkpoints of the meters' earlier format."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import torch

from diffnas.callbacks.base import Callback
from diffnas.loop import Batch, Loop, Mean, Meters
from diffnas.spaces.genotype import Genotype


class Toy(Loop):
    """Least squares by SGD on 6 fixed batches per epoch, recording its hooks."""

    def __init__(self, epochs: int = 2, callbacks: list[Callback] | None = None) -> None:
        super().__init__(None, callbacks, 1, "cpu", 3, epochs)
        self.config = {"epochs": epochs}
        self.calls: list[str] = []
        self.w = torch.zeros(3, dtype=torch.float64)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(6, 4, 3, generator=g, dtype=torch.float64)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        self.current_genotype = Genotype("nb201", [])

    def config_dict(self) -> dict[str, Any]:
        return dict(self.config)

    @property
    def steps_per_epoch(self) -> int:
        return 6

    def batches(self, epoch: int, start: int) -> Iterable[Batch]:
        for i in range(start, 6):
            yield self.x[i], self.y[i]

    def begin_epoch(self, epoch: int) -> None:
        self.calls.append(f"begin {epoch}")

    def before_step(self) -> None:
        self.calls.append(f"step {self.epoch}.{self.step}")

    def training_step(self, batch: Batch) -> None:
        x, y = batch
        # noise from the global RNG: a resumed run matches only if the RNG state does
        err = x @ self.w - y + 1e-3 * torch.randn(y.shape, dtype=torch.float64)
        self.w = self.w - 0.05 * (x.T @ err) / len(y)
        self.meters.loss["train"].add((err**2).mean() * len(y), len(y))

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        self.calls.append(f"end {epoch}")
        return {"epoch": epoch, **self.meters.summary()}

    def extra_state(self) -> dict[str, Any]:
        return {"w": self.w.clone()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.w = state["w"].clone()


class Record(Callback):
    name = "record"

    def __init__(self, calls: list[str], stop_at: int | None = None) -> None:
        self.calls, self.stop_at = calls, stop_at
        self.saved: dict[str, Any] | None = None

    def on_search_start(self, s: Any) -> None:
        self.calls.append("on_search_start")

    def on_epoch_start(self, s: Any) -> None:
        self.calls.append("on_epoch_start")

    def on_step_end(self, s: Any) -> None:
        self.calls.append("on_step_end")
        if s.global_step == self.stop_at:  # a checkpoint mid-epoch, then a kill
            self.saved = s.state_dict()
            raise KeyboardInterrupt

    def collect(self, s: Any, metrics: dict[str, Any]) -> None:
        self.calls.append(f"collect at {s.epoch}")  # the loop is at the next epoch

    def on_epoch_end(self, s: Any, metrics: dict[str, Any]) -> None:
        self.calls.append("on_epoch_end")

    def on_search_end(self, s: Any) -> None:
        self.calls.append("on_search_end")


def test_loop_calls_its_hooks_and_callbacks_in_the_documented_order() -> None:
    calls: list[str] = []
    toy = Toy(epochs=2, callbacks=[Record(calls)])
    toy.calls = calls
    toy.fit()
    want = ["on_search_start"]
    for e in range(2):
        want += [f"begin {e}", "on_epoch_start"]
        for i in range(6):
            want += [f"step {e}.{i}", "on_step_end"]
        want += [f"end {e}", f"collect at {e + 1}", "on_epoch_end"]
    assert calls == [*want, "on_search_end"]
    assert [h["epoch"] for h in toy.history] == [0, 1] and toy.global_step == 12


def test_loop_resumed_mid_epoch_ends_bitwise_where_an_uninterrupted_one_does() -> None:
    whole = Toy(epochs=2)
    whole.fit()
    killed = Record([], stop_at=8)  # epoch 1, step 2
    first = Toy(epochs=2, callbacks=[killed])
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert killed.saved is not None and killed.saved["step"] == 2
    torch.manual_seed(123)  # the checkpoint's RNG state must override this
    resumed = Toy(epochs=2)
    resumed.load_state_dict(killed.saved)
    resumed.fit()
    assert torch.equal(resumed.w, whole.w)
    assert resumed.history == whole.history and resumed.global_step == 12


def test_mean_sums_on_the_tensors_device_and_reads_once() -> None:
    m = Mean()
    for v in (1.0, 2.0, 6.0):
        m.add(torch.tensor(v))
    assert isinstance(m.sum, torch.Tensor)  # no .item() per add
    assert m.value() == 3.0 and m.pop() == 3.0 and m.value() is None
    m.add(torch.tensor(5.0) * 4, 4)  # a per-sample mean over a batch of 4
    state = m.state_dict()
    again = Mean()
    again.load_state_dict(state)
    assert state == {"sum": 20.0, "n": 4} and again.value() == 5.0


def test_meters_load_the_checkpoint_format_they_always_had() -> None:
    old = {"train_loss": 6.0, "train_correct": 3.0, "train_n": 4.0}
    old |= {"val_loss": 0.0, "val_correct": 0.0, "val_n": 0.0}
    m = Meters()
    m.load_state_dict(old)
    assert m.summary() == {"train_loss": 1.5, "train_acc": 75.0, "val_loss": None, "val_acc": None}
    assert m.state_dict() == old


def test_part_metrics_are_logged_under_the_part_name() -> None:
    """`<part>/<key>`; a regularizer named twice is told apart by its index."""
    from types import SimpleNamespace

    from diffnas.config import load_config
    from diffnas.search import Searcher

    regs = "[{name: cost}, {name: beta_decay}, {name: cost, metric: params}]"
    cfg = load_config(["darts"], [f"search.regularizers={regs}"])
    fake = SimpleNamespace(config=cfg, parts=lambda: list(range(7)))
    names = [name for name, _ in Searcher.named_parts(fake)]  # type: ignore[arg-type]
    want = ["softmax", "alternate", "first_order", "cost#0", "beta_decay", "cost#2", "default"]
    assert names == want
