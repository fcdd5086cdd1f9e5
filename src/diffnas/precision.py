"""Search-step precision: which arithmetic `search.precision` gives, and the autocast for it.

`fp32` computes everything in float32. `bf16` runs the forward passes of the search steps
under `torch.autocast(dtype=torch.bfloat16)`: convolutions and matmuls in bfloat16, while
the weights, α, the batch-norm running statistics, the optimizers and the losses stay
float32 (the logits are cast back before the loss). `bf16_weights` does so for the weight
step only and computes the architecture gradient in float32: an α-gradient is a difference
of nearly equal terms (op outputs against their mixture), which bfloat16's 8 mantissa bits
blur (cosine to float32 ~0.99), while the weight step is ordinary supernet training. `auto`
picks `bf16_weights` only where the device computes bfloat16 natively, and fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Precision:
    """The precision a run computes in (`name`: fp32, bf16 or bf16_weights) and why."""

    name: str
    reason: str

    @property
    def bf16(self) -> bool:
        """Whether the passes run under bfloat16 autocast (the architecture step's too
        unless `arch_fp32`)."""
        return self.name in ("bf16", "bf16_weights")

    @property
    def arch_fp32(self) -> bool:
        """Whether the architecture gradient is computed in float32 whatever `bf16` says."""
        return self.name == "bf16_weights"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast on `device` for bf16, a no-op for fp32."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether `device` computes bfloat16 natively, as PyTorch reports it, and what it said.

    CPU: AVX512-BF16 or AMX instructions (`torch.cpu._is_avx512_bf16_supported`,
    `_is_amx_tile_supported`). oneDNN's own check (`torch.ops.mkldnn.
    _is_mkldnn_bf16_supported`) is not used: it is also true on plain AVX512, where bf16 is
    emulated through fp32 and slower. CUDA: `torch.cuda.is_bf16_supported()` without
    emulation (compute capability 8.0 and later).
    """
    if device.type == "cpu":
        cpu = torch.cpu
        avx = bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())
        amx = bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)())
        if amx:
            return True, "the CPU has AMX (native bf16 matrix tiles)"
        if avx:
            return True, "the CPU has AVX512-BF16"
        return False, "the CPU has neither AVX512-BF16 nor AMX"
    if device.type == "cuda":
        ok = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        name = torch.cuda.get_device_name(device)
        return ok, f"{name} {'supports' if ok else 'does not support'} bf16 natively"
    return False, f"no native-bf16 check for device type {device.type!r}"


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """The precision `search.precision` (fp32, bf16, bf16_weights or auto) gives on `device`."""
    if setting != "auto":
        return Precision(setting, f"search.precision={setting}")
    native, said = native_bf16(device)
    return Precision("bf16_weights" if native else "fp32", f"search.precision=auto: {said}")
