"""Parameters, multiply-adds and measured latency of a discrete network.

Parameters exclude the auxiliary head (as papers count). Multiply-adds are counted with
forward hooks on every Conv2d and Linear that runs in eval mode (so the auxiliary head,
which only runs in training, is excluded too); the cells' edge ops are cross-checked
against the analytic op costs of the space's op table. Latency is the median of repeated
timed forwards after warm-up, in eval mode under torch.inference_mode.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from diffnas.loop import StepTimer
from diffnas.retrain.network import ModelSpec
from diffnas.spaces import Edge, get_space


@dataclass
class EdgeCheck:
    """Cell edge ops: multiply-adds and parameters by hooks vs. the op table's formulas."""

    edges: int = 0  # edges compared
    unchecked: int = 0  # edges not reached by the forward pass (not priced)
    macs_hooks: int = 0
    macs_analytic: int = 0
    params_modules: int = 0
    params_analytic: int = 0

    @property
    def ok(self) -> bool:
        return self.macs_hooks == self.macs_analytic and self.params_modules == self.params_analytic


@dataclass
class ProfileResult:
    name: str
    description: str
    params: int  # auxiliary head excluded
    aux_params: int
    macs: int  # per image
    check: EdgeCheck
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> median ms
    device: str = "cpu"
    threads: int = 1

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["check"]["ok"] = self.check.ok
        out["latency_ms"] = {str(k): v for k, v in self.latency_ms.items()}
        return out


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters without the auxiliary head, parameters of the auxiliary head)."""
    main = aux = 0
    for name, p in model.named_parameters():
        if name.split(".")[0] == "auxiliary":
            aux += p.numel()
        else:
            main += p.numel()
    return main, aux


def _module_macs(m: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one Conv2d/Linear call, per sample of the batch."""
    per_sample = out.numel() // out.shape[0]
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        return per_sample * (m.in_channels // m.groups) * k
    assert isinstance(m, nn.Linear)
    return per_sample * m.in_features


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[nn.Module, int]]:
    """Multiply-adds per sample of one eval-mode forward, in total and per Conv2d/Linear."""
    per_module: dict[nn.Module, int] = {}

    def hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        per_module[m] = per_module.get(m, 0) + _module_macs(m, out)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return sum(per_module.values()), per_module


@torch.no_grad()
def check_edges(model: nn.Module, x: torch.Tensor, space_name: str) -> EdgeCheck:
    """Compare the hooked cost of every cell edge op with the op table's analytic cost.

    A cell is any module with `ops` and `edge_specs` (genotype edges aligned with `ops`);
    ACA edges (with a skip fraction) are priced by `Space.edge_cost` like any other edge.
    """
    space = get_space(space_name)
    inputs: dict[nn.Module, tuple[int, ...]] = {}
    edges: list[tuple[nn.Module, Edge, int]] = []
    check = EdgeCheck()
    for cell in model.modules():
        specs = getattr(cell, "edge_specs", None)
        ops = getattr(cell, "ops", None)
        if specs is None or not isinstance(ops, nn.ModuleList) or len(specs) != len(ops):
            continue
        for edge, op in zip(specs, ops):
            stride = 2 if getattr(cell, "reduction", False) and edge.src < 2 else 1
            edges.append((op, edge, stride))

    def pre_hook(m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        inputs.setdefault(m, tuple(args[0].shape[1:]))

    handles = [op.register_forward_pre_hook(pre_hook) for op, _, _ in edges]
    try:
        _, per_module = count_macs(model, x)
    finally:
        for handle in handles:
            handle.remove()
    for op, edge, stride in edges:
        if op not in inputs:  # not reached in eval mode
            check.unchecked += 1
            continue
        c, h, w = inputs[op]
        check.edges += 1
        check.macs_analytic += space.edge_cost("macs", edge, c, stride, h, w)
        check.macs_hooks += sum(per_module.get(m, 0) for m in op.modules())
        check.params_analytic += space.edge_cost("params", edge, c, stride)
        check.params_modules += sum(p.numel() for p in op.parameters())
    return check


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    *,
    repeats: int = 20,
    warmup: int = 5,
    device: torch.device | str = "cpu",
) -> float:
    """Median wall time (ms) of one eval-mode forward of a random batch, after warm-up."""
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(batch_size, *input_shape, device=device)
    for _ in range(warmup):
        model(x)
    timer = StepTimer(device, sync=True)  # waits for the warm-up's kernels
    times = []
    for _ in range(repeats):
        timer.restart()
        model(x)
        times.append(timer.lap())
    return 1000.0 * statistics.median(times)


def profile(
    spec: ModelSpec,
    *,
    batch_sizes: tuple[int, ...] = (1, 32),
    repeats: int = 20,
    warmup: int = 5,
    device: torch.device | str = "cpu",
) -> ProfileResult:
    """Profile the network of a ModelSpec (`retrain.network.resolve_model`)."""
    model = spec.build(load_weights=False).eval()
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    x = torch.randn(1, *shape)
    params, aux_params = count_params(model)
    macs, _ = count_macs(model, x)
    check = check_edges(model, x, spec.genotype.space)
    latency = {
        b: measure_latency(model, shape, b, repeats=repeats, warmup=warmup, device=device)
        for b in batch_sizes
    }
    return ProfileResult(
        spec.name,
        spec.describe(model),
        params,
        aux_params,
        macs,
        check,
        latency,
        str(device),
        torch.get_num_threads(),
    )
