"""The search step reads nothing back from the device (issue 22): every device-to-host read
that Python can see is counted while real search steps run on the CPU (the code path a CUDA
search takes), and the non-finite check it defers still names the exact step."""

from __future__ import annotations

import io
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from rich.console import Console

import diffnas
from diffnas.callbacks.progress import ProgressBar
from diffnas.config import load_config
from diffnas.errors import ConfigError, NumericalError
from diffnas.finite import resolve_every
from diffnas.relaxations.gumbel import gumbel_noise
from diffnas.run import RunDir
from diffnas.search import Searcher

from .conftest import Poison

# what hands a device tensor's value to the host (each a device sync on CUDA)
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
STEPS = 3


def small(preset: str, every: int, **extra: str) -> Any:
    """A search of STEPS weight steps per epoch on 8x8 digits (nb201, one cell per stage)."""
    overrides = {
        "space.name": "nb201",
        "space.channels": "4",
        "space.layers": "1",
        "data.dataset": "digits",
        "data.subset": "0.08",
        "data.batch_size": "16",
        "search.epochs": "1",
        "search.finite_check_every": str(every),
        "log.progress": "false",
        "threads": "1",
        **extra,
    }
    return load_config([preset], [f"{k}={v}" for k, v in overrides.items()])


@contextmanager
def counted(s: Searcher) -> Iterator[Counter[str]]:
    """Counts reads of tensors by what asked (`gumbel.py:tolist`), and blocking copies to a
    device made by diffnas (`.to(device)` without non_blocking: on CUDA the copy waits for
    the device's queue). Not counted: the optimizers' step counters, host tensors on every
    device (torch.optim keeps `state["step"]` on the CPU unless `capturable`)."""
    counts: Counter[str] = Counter()
    busy = [False]

    def host_counter(t: torch.Tensor) -> bool:
        return any(t is st.get("step") for o in (s.w_opt, s.a_opt) for st in o.state.values())

    def record(name: str, t: torch.Tensor) -> None:
        caller = traceback.extract_stack(limit=3)[0]
        counts[f"{caller.filename.rsplit('/', 1)[-1]}:{name}"] += 1

    def wrap(name: str, original: Any) -> Any:
        def counting(t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not busy[0] and not host_counter(t):
                busy[0] = True
                try:
                    record(name, t)
                finally:
                    busy[0] = False
            return original(t, *args, **kwargs)

        return counting

    original_to = torch.Tensor.to

    def to(t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        device = kwargs.get("device") or next(
            (a for a in args if isinstance(a, str | torch.device)), None
        )
        caller = traceback.extract_stack(limit=2)[0].filename
        if device is not None and not kwargs.get("non_blocking") and "diffnas" in caller:
            counts[f"{caller.rsplit('/', 1)[-1]}:to"] += 1
        return original_to(t, *args, **kwargs)

    saved = {name: getattr(torch.Tensor, name) for name in (*READS, "to")}
    try:
        for name in READS:
            setattr(torch.Tensor, name, wrap(name, saved[name]))
        torch.Tensor.to = to  # type: ignore[method-assign]
        yield counts
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


class StopBeforeEpochEnd(Exception):
    pass


def step_reads(s: Searcher, count_checks: bool = False) -> tuple[Counter[str], int]:
    """The reads of one epoch's steps as `Loop.run_epoch` takes them (batches, hooks, the
    loop's own checks, callbacks), stopped before its end (derivation, metrics); with the
    reads of the finiteness checks (`check_losses`) when `count_checks`. Also the number of
    steps taken."""
    checks = s.check_losses
    steps = [0]

    def end_epoch(epoch: int) -> dict[str, Any]:
        steps[0] = s.step
        raise StopBeforeEpochEnd

    with counted(s) as counts:
        paused: Counter[str] = Counter()

        def check_losses() -> None:
            before = counts.copy()
            checks()
            if not count_checks:  # the scheduled read, not one of the step's
                paused.update(counts - before)
                counts.clear()
                counts.update(before)

        s.check_losses = check_losses  # type: ignore[method-assign]
        s.end_epoch = end_epoch  # type: ignore[method-assign]
        s.step = 0
        with pytest.raises(StopBeforeEpochEnd):
            s.run_epoch()
    return counts, steps[0]


@pytest.mark.parametrize(
    "preset, extra",
    [
        ("darts", {}),
        ("darts", {"search.updater": "second_order"}),
        ("beta_darts", {}),
        ("pc_darts", {"supernet.partial_channels": "2"}),
        (
            "darts",
            {
                "data.augment.crop_padding": "2",
                "data.augment.flip": "true",
                "data.augment.cutout": "4",
            },
        ),
        ("sdarts_rs", {}),
        ("sdarts_adv", {}),
        ("rdarts", {"space.cells": "NNN"}),
        (
            "rdarts",
            {"space.cells": "NNN", "search.regularizers": '[{"name": "rdarts", "weight": "dual"}]'},
        ),
    ],
    ids=[
        "first_order",
        "second_order",
        "beta_darts",
        "pc_darts",
        "augmented",
        "sdarts_rs",
        "sdarts_adv",
        "rdarts_share",
        "rdarts_dual",
    ],
)
def test_search_steps_read_nothing_from_the_device(preset: str, extra: dict[str, str]) -> None:
    bar = ProgressBar(Console(file=io.StringIO()), refresh_steps=1, bar=True)
    bar.stats_every_s = 3600.0  # the bar moves every step and reads no meter
    s = Searcher(small(preset, every=100, **extra), callbacks=[bar])
    bar.on_search_start(s)
    counts, steps = step_reads(s)
    bar.on_search_end(s)
    assert steps == STEPS
    assert counts == Counter(), counts


def test_the_counter_sees_the_reads_of_a_check_in_every_step() -> None:
    # the counter can fail: finite_check_every=1 reads the losses after every step
    s = Searcher(small("darts", every=1))
    counts, steps = step_reads(s, count_checks=True)
    assert counts == Counter({"finite.py:tolist": steps}) and steps == STEPS


def test_gdas_reads_only_its_sampled_ops_once_per_forward() -> None:
    # the host chooses which op of each edge runs: one read of all edges' samples per mix
    # (the weight step's and the α step's; both cells' edges of the darts space in one read),
    # nothing else
    s = Searcher(small("gdas", every=100, **{"space.name": "darts", "space.layers": "2"}))
    counts, steps = step_reads(s)
    assert counts == Counter({"gumbel.py:tolist": 2 * steps}) and steps == STEPS


def test_gumbel_noise_is_finite_without_a_redraw(monkeypatch) -> None:
    draws = torch.tensor([[0.0, 0.5, 2.0]])

    def fake(t: torch.Tensor) -> torch.Tensor:
        return t.copy_(draws)

    monkeypatch.setattr(torch.Tensor, "exponential_", fake)
    g = gumbel_noise(torch.empty(1, 3))
    tiny = torch.finfo(torch.float32).tiny
    assert torch.equal(g, -torch.tensor([[tiny, 0.5, 2.0]]).log())  # other draws unchanged
    assert torch.isfinite(g).all() and g[0, 0] == pytest.approx(87.336, abs=1e-3)


@pytest.mark.parametrize(
    "bad, found, written",
    [(5, 6, 3), (7, 8, 6)],
    ids=["found-by-the-checkpoint", "found-by-the-check-every-4"],
)
def test_a_late_check_names_the_first_bad_step_and_no_checkpoint_holds_it(
    tmp_path, bad: int, found: int, written: int
) -> None:
    # checks after steps 4 and 8, checkpoints after steps 3, 6, 9: a NaN from step 5 on is
    # found by the checkpoint of step 6 (which is not written), one from step 7 on by the
    # check after step 8
    cfg = load_config(
        ["darts"],
        [
            "space.name=nb201",
            "space.channels=4",
            "space.layers=1",
            "data.dataset=digits",
            "data.subset=0.2",
            "data.batch_size=16",
            "search.epochs=1",
            "search.finite_check_every=4",
            "checkpoint.every_steps=3",
            "log.progress=false",
            "threads=1",
        ],
    )
    with pytest.raises(NumericalError) as info:
        diffnas.search(cfg, out=tmp_path / "run", callbacks=[Poison(after_step=bad - 1)])
    message = str(info.value)
    later = found - bad
    assert f"validation loss became nan at epoch 1, step {bad} " in message
    assert f"found {later} step{'s' if later > 1 else ''} later" in message
    assert "checked every 4 steps (search.finite_check_every)" in message
    assert "intact" in message
    state = RunDir(tmp_path / "run").load_checkpoint()
    assert state["global_step"] == written < bad
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_finite_check_every_defaults_by_device_and_rejects_zero() -> None:
    assert resolve_every(None, torch.device("cpu")) == 1
    assert resolve_every(None, torch.device("cuda")) == 50
    assert resolve_every(7, torch.device("cuda")) == 7
    with pytest.raises(ConfigError, match=r"search.finite_check_every must be at least 1"):
        small("darts", every=0)


def test_steps_called_outside_the_loop_neither_pile_up_losses_nor_hide_a_nan() -> None:
    # the speed and estimate benches call weight_step directly: no loop check ever runs
    from diffnas.loop import PENDING_CAP

    s = Searcher(small("darts", every=1))
    batch = s.val_stream.next()  # any batch of the data
    for _ in range(3 * PENDING_CAP):
        s.weight_step(batch)
        assert s.finite.pending <= PENDING_CAP  # checked (and cleared) past the cap
    with torch.no_grad():
        next(iter(s.model.parameters())).fill_(float("nan"))
    with pytest.raises(NumericalError, match="training loss became nan"):
        for _ in range(PENDING_CAP + 1):
            s.weight_step(batch)
