"""`diffnas search --dry-run`: the probe's extrapolation, the fit check and its error."""

from __future__ import annotations

import pytest

import diffnas.bench.estimate as est_mod
from diffnas.bench.estimate import BACKWARD_FACTOR, HEADROOM, Estimate, _line, estimate
from diffnas.cli import main
from diffnas.errors import ResourceError

from .conftest import tiny_config

TINY = [
    "--space",
    "nb201",
    "--set",
    "space.channels=4",
    "--set",
    "space.layers=1",
    "--set",
    "data.subset=0.3",
    "--set",
    "data.batch_size=32",
    "--threads",
    "1",
]


def make(available: float, per_sample: float = 10.0, base: float = 500.0) -> Estimate:
    b = 64
    act = 20.0 + per_sample * b
    return Estimate(b, 100, 1.0, 100.0, base + BACKWARD_FACTOR * 20.0, act, per_sample,
                    base + BACKWARD_FACTOR * act, available, "cpu")  # fmt: skip


def test_line_through_two_probe_sizes() -> None:
    assert _line({4: 3.0, 8: 5.0}, 64) == pytest.approx(3.0 + 0.5 * 60)
    assert _line({8: 2.0}, 32) == pytest.approx(8.0)


def test_largest_batch_is_the_last_that_fits() -> None:
    e = make(available=1500.0)
    # peak(b) = 500 + F * (20 + 10 b) must stay within 90 % of 1500 MB
    peak = lambda b: 500 + BACKWARD_FACTOR * (20 + 10 * b)  # noqa: E731
    b = e.largest_batch()
    assert peak(b) <= HEADROOM * 1500 < peak(b + 1)
    assert 8 <= b < 64 and e.suggested_batch() == b - b % 8
    assert not e.fits
    with pytest.raises(ResourceError, match=rf"data\.batch_size={b - b % 8}\b"):
        e.check()
    make(available=5000.0).check()  # fits: no error
    with pytest.raises(ResourceError, match="even batch size 1"):
        make(available=400.0).check()


def test_estimate_probes_a_tiny_search() -> None:
    e = estimate(tiny_config("nb201"), probe_sizes=(2, 4), repeats=1)
    assert e.batch_size == 32 and e.steps_per_epoch > 0
    assert e.step_s > 0 and e.epoch_s == pytest.approx(e.step_s * e.steps_per_epoch)
    # activations of a 4-channel cell on 8x8 digits: a few MB, growing with the batch
    assert 0 < e.per_sample_mb * 32 <= e.activation_mb < 100
    assert e.fits and e.available_mb > e.peak_mb > e.base_mb


def test_dry_run_reports_and_names_a_batch_size_that_fits(capsys, monkeypatch) -> None:
    assert main(["search", "--dry-run", *TINY]) == 0
    out = capsys.readouterr().out
    assert "expected peak memory" in out and "per epoch" in out and "fits" in out
    monkeypatch.setattr(est_mod, "available_mb", lambda device: 1.0)
    assert main(["search", "--dry-run", *TINY]) == 2
    err = capsys.readouterr().err
    assert "would not fit" in err or "available" in err
