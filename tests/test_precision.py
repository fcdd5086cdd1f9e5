"""search.precision: bf16 autocast of the search steps against the float32 reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import diffnas
from diffnas.config import load_config
from diffnas.errors import ConfigError
from diffnas.precision import Precision, native_bf16, resolve_precision
from diffnas.run import RunDir
from diffnas.search import Searcher

from .conftest import Kill, tiny_config


def _alpha_grad(s: Searcher, precision: str, train, val) -> torch.Tensor:
    s.precision = Precision(precision, "test")
    s.a_opt.zero_grad(set_to_none=True)
    s.updater.arch_grads(s, train, val)
    return torch.cat([p.grad.flatten() for p in s.arch_parameters()])


def test_bf16_alpha_gradient_close_to_fp32_and_masters_stay_fp32() -> None:
    """The α-gradient of a bf16 step against fp32's on the same supernet and batches.

    bfloat16 keeps 8 mantissa bits (relative rounding ~4e-3 per value), and an α-gradient
    is a difference of nearly equal terms. At C=4 on 8x8 digits the first six batches
    measured cosines 0.954-0.993 (the two used here 0.987 and 0.988), so the bound is 0.95:
    rounding passes, a gradient that lost its direction does not; `< 1` proves bf16 ran."""
    s = Searcher(tiny_config("nb201", epochs=1))
    it = s.data.train.epoch(0)
    cosines = []
    for _ in range(2):
        train, val = next(it), s.val_stream.next()
        g32 = _alpha_grad(s, "fp32", train, val)
        g16 = _alpha_grad(s, "bf16", train, val)
        assert g16.dtype == torch.float32
        cosines.append(float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)))
    assert min(cosines) >= 0.95, cosines
    assert not all(c == 1.0 for c in cosines)  # bf16 did compute differently
    # a whole bf16 step: weights, α, BN statistics and optimizer state stay float32
    s.precision = Precision("bf16", "test")
    s.search_step(next(it))
    tensors = [*s.model.parameters(), *s.arch_parameters()]
    tensors += [b for b in s.model.buffers() if b.is_floating_point()]
    tensors += [v for st in s.w_opt.state.values() for v in st.values() if torch.is_tensor(v)]
    assert tensors and all(t.dtype == torch.float32 for t in tensors)


def test_bf16_weights_takes_the_alpha_gradient_in_fp32_and_the_weight_pass_in_bf16() -> None:
    """search.precision=bf16_weights: the architecture gradient is float32's, bit for bit
    (the reference: the same Searcher in fp32 on the same weights and batches), while the
    weight step's forward pass runs in bfloat16 (its logits differ from float32's by
    rounding, and only by rounding)."""
    s = Searcher(tiny_config("nb201", epochs=1))
    it = s.data.train.epoch(0)
    train, val = next(it), s.val_stream.next()
    grads = {}
    for name in ("fp32", "bf16_weights", "bf16"):
        s.precision = Precision(name, "test")
        s.a_opt.zero_grad(set_to_none=True)
        s.arch_grads(train, val)
        grads[name] = torch.cat([p.grad.flatten() for p in s.arch_parameters()])
    assert torch.equal(grads["bf16_weights"], grads["fp32"])
    assert not torch.equal(grads["bf16"], grads["fp32"])  # bf16 would have changed it
    mix = s.relaxation.mix(s.arch)
    with torch.no_grad():
        s.precision = Precision("fp32", "test")
        ref = s.forward(train[0], mix)
        s.precision = Precision("bf16_weights", "test")
        out = s.forward(train[0], mix)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)
    assert torch.allclose(out, ref, rtol=0.05, atol=0.05 * float(ref.abs().max()))


def test_bf16_run_checkpoints_and_resumes(tmp_path, capsys) -> None:
    """A bf16 run killed after its first epoch resumes to the unbroken run's α."""
    cfg = tiny_config("nb201", epochs=2, **{"search.precision": "bf16"})
    full = diffnas.search(cfg, out=tmp_path / "full")
    assert "precision: bf16 (search.precision=bf16)" in capsys.readouterr().err
    assert [m["precision"] for m in full.history] == ["bf16", "bf16"]
    with pytest.raises(KeyboardInterrupt):
        diffnas.search(cfg, out=tmp_path / "killed", callbacks=[Kill(after_epoch=0)])
    resumed = diffnas.resume(tmp_path / "killed")
    assert resumed.genotype.cells == full.genotype.cells
    a_full = RunDir(tmp_path / "full").load_checkpoint()["arch"]
    a_resumed = RunDir(tmp_path / "killed").load_checkpoint()["arch"]
    for k, v in a_full.items():
        assert v.dtype == torch.float32 and torch.equal(v, a_resumed[k]), k


def test_precision_setting_checked_and_auto_follows_the_cpu() -> None:
    with pytest.raises(
        ConfigError, match="search.precision must be one of fp32, bf16, bf16_weights, auto"
    ):
        load_config(["darts"], ["search.precision=fp16"])
    assert load_config(["darts"], []).search.precision == "fp32"
    cpu = torch.device("cpu")
    native, _ = native_bf16(cpu)
    # the reference: the CPU's own flags, as Linux lists them
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert native == ("avx512_bf16" in flags or "amx_bf16" in flags)
    chosen = resolve_precision("auto", cpu)
    assert chosen.name == ("bf16_weights" if native else "fp32") and "auto" in chosen.reason
