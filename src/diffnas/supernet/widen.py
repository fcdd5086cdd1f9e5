"""Growing the partial-channel mixed ops of a supernet: DrNAS's progressive K.

When K (the share 1/K of an edge's channels that goes through its mixed op) decreases,
every op of every partial-channel edge is widened from C/K_old to C/K_new channels as the
official DrNAS code does (its net2wider.py): each new channel of a convolution copies the
weights of a random existing one (input side and output side drawn independently, a
depthwise conv and the pointwise conv after it sharing theirs), BatchNorms follow their
conv's channels. SGD's momentum buffers are widened with the same copies. Parameters keep
their identity (their data is replaced), so the optimizer needs no rebuilding.

`WidenablePartialChannelEdges` records K in the supernet's state_dict and regrows itself
to the checkpoint's K before its weights are loaded, so a widened run resumes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffnas.errors import ConfigError
from diffnas.supernet.mixed import PartialChannelEdges

# one widening of one tensor: (parameter or buffer owner, attribute name, dim, index)
Edit = tuple[nn.Module, str, int, torch.Tensor]


def _extra(c_old: int, c_new: int) -> torch.Tensor:
    """Indices of the existing channels each new channel copies (the official randint)."""
    return torch.randint(low=0, high=c_old, size=(c_new - c_old,))


def _conv(
    conv: nn.Conv2d,
    in_index: torch.Tensor | None,
    out_index: torch.Tensor | None,
    edits: list[Edit],
) -> None:
    if in_index is not None:
        edits.append((conv, "weight", 1, in_index))
        conv.in_channels += len(in_index)
    if out_index is not None:
        edits.append((conv, "weight", 0, out_index))
        conv.out_channels += len(out_index)


def _bn(bn: nn.BatchNorm2d, index: torch.Tensor, edits: list[Edit]) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        if getattr(bn, name, None) is not None:
            edits.append((bn, name, 0, index))
    bn.num_features += len(index)


def _dil_conv(seq: nn.Sequential, c_old: int, c_new: int, edits: list[Edit]) -> None:
    """ReLU, depthwise conv, pointwise conv, BN (the official DilConv.wider)."""
    _, dw, pw, bn = list(seq)
    assert isinstance(dw, nn.Conv2d) and isinstance(pw, nn.Conv2d)
    index = _extra(c_old, c_new)
    _conv(dw, None, index, edits)
    dw.in_channels = dw.groups = c_new
    _conv(pw, index, None, edits)
    out = _extra(c_old, c_new)
    _conv(pw, None, out, edits)
    if isinstance(bn, nn.BatchNorm2d):
        _bn(bn, out, edits)


def widen_op(op: nn.Module, c_old: int, c_new: int) -> list[Edit]:
    """Grow one candidate op from c_old to c_new channels (in and out); the edits made."""
    from diffnas.spaces.ops import DilConv, FactorizedReduce, PoolBN, ReLUConvBN, SepConv, Zero

    edits: list[Edit] = []
    if isinstance(op, nn.Identity | Zero):
        return edits
    if isinstance(op, PoolBN):
        for m in op:
            if isinstance(m, nn.BatchNorm2d):
                _bn(m, _extra(c_old, c_new), edits)
        return edits
    if isinstance(op, ReLUConvBN):
        _, conv, bn = list(op)
        assert isinstance(conv, nn.Conv2d)
        _conv(conv, _extra(c_old, c_new), None, edits)
        out = _extra(c_old, c_new)
        _conv(conv, None, out, edits)
        if isinstance(bn, nn.BatchNorm2d):
            _bn(bn, out, edits)
        return edits
    if isinstance(op, SepConv):
        for half in op:
            assert isinstance(half, nn.Sequential)
            _dil_conv(half, c_old, c_new, edits)
        return edits
    if isinstance(op, DilConv):
        _dil_conv(op, c_old, c_new, edits)
        return edits
    if isinstance(op, FactorizedReduce):
        if c_new % 2:
            raise ConfigError(
                f"a stride-2 skip (FactorizedReduce) needs an even width, got {c_new}"
            )
        outs = []
        for conv in (op.conv_1, op.conv_2):
            _conv(conv, _extra(c_old, c_new), None, edits)
            out = _extra(c_old // 2, c_new // 2)
            _conv(conv, None, out, edits)
            outs.append(out)
        # the BN's channels: conv_1's then conv_2's, each half's copies (official order)
        _bn(op.bn, torch.cat([outs[0], outs[1] + c_old // 2]), edits)
        return edits
    raise ConfigError(
        f"cannot widen the op {type(op).__name__} for a smaller supernet.partial_channels "
        f"(the progressive schedule knows the built-in darts and nb201 ops); keep "
        f"partial_channels constant across stages"
    )


def _grow(t: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """t with the slices `index` along `dim` appended, in t's memory layout."""
    grown = torch.cat([t, t.index_select(dim, index.to(t.device))], dim=dim)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return grown.contiguous(memory_format=torch.channels_last)
    return grown.contiguous()


def _apply(edits: list[Edit], optimizer: torch.optim.Optimizer | None) -> None:
    with torch.no_grad():
        for module, name, dim, index in edits:
            t = getattr(module, name)
            grown = _grow(t, dim, index)
            if isinstance(t, nn.Parameter):
                state: dict[str, Any] = {} if optimizer is None else optimizer.state.get(t, {})
                buf = state.get("momentum_buffer")
                if buf is not None:
                    state["momentum_buffer"] = _grow(buf, dim, index)
                t.data = grown
                t.grad = None
            else:
                setattr(module, name, grown)


def widen_edges(
    group: PartialChannelEdges, k: int, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Set one partial-channel group's K to `k` (≤ its K), widening its ops."""
    if k == group.k:
        return
    channels = group.k * group.part
    if k > group.k:
        raise ConfigError(
            f"partial_channels can only decrease from stage to stage (the mixed ops grow); "
            f"got {group.k} then {k}"
        )
    if channels % k:
        raise ConfigError(f"partial_channels={k} must divide the cell's channel count {channels}")
    c_old, c_new = group.part, channels // k
    edits: list[Edit] = []
    for ops in group.inner.edges:
        assert isinstance(ops, nn.ModuleList)
        for op in ops:
            edits += widen_op(op, c_old, c_new)
    _apply(edits, optimizer)
    group.k, group.part = k, c_new


def partial_groups(model: nn.Module) -> list[PartialChannelEdges]:
    return [m for m in model.modules() if isinstance(m, PartialChannelEdges)]


def widen_partial_channels(
    model: nn.Module, k: int, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Set K of every partial-channel group of `model` (the official model.wider(k))."""
    for group in partial_groups(model):
        widen_edges(group, k, optimizer)


class WidenablePartialChannelEdges(PartialChannelEdges):
    """A PartialChannelEdges whose K is in its state_dict; loading a state of a smaller K
    widens it first (values are then overwritten by the loaded ones)."""

    def get_extra_state(self) -> Any:
        return {"k": self.k}

    def set_extra_state(self, state: Any) -> None:
        if int(state["k"]) != self.k:  # pragma: no cover - widened in _load_from_state_dict
            widen_edges(self, int(state["k"]))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and int(extra.get("k", self.k)) != self.k:
            rng = torch.random.get_rng_state()
            widen_edges(self, int(extra["k"]))  # random copies, overwritten by the load
            torch.random.set_rng_state(rng)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def make_widenable(model: nn.Module) -> None:
    """Let every partial-channel group of `model` record and restore its K."""
    for m in model.modules():
        if type(m) is PartialChannelEdges:
            m.__class__ = WidenablePartialChannelEdges
