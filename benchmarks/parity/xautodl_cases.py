"""The diffnas half of the XAutoDL parity checks: cases, inputs, diffnas's step, fixtures.

`xautodl_ref.py` builds XAutoDL's (D-X-Y/AutoDL-Projects) models next to diffnas's for one
preset and compares one search step; tests/test_parity_xautodl.py replays the diffnas half
against the numbers stored in tests/golden/<preset>.json, with no official code present.
Everything here runs without the official code:

- `Case`: the preset, its overrides and the tiny sizes of one comparison;
- `make_inputs`: weights, α, optimizer states, batches and the Gumbel draws from a seed
  (numpy's legacy RandomState, whose stream numpy keeps fixed), by diffnas parameter name;
- `diffnas_step`: the search loop's own step (`Searcher.search_step`) on those inputs, in
  float64, with the Gumbel draws fed in order;
- `network_logits`: the NB201 discrete network of a cell on the case's weights and batch;
- `summarize` / `compare` / `write_fixture`: what a fixture stores and how it is checked.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffnas.config import load_config
from diffnas.search import Searcher

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the float64 set-up, the stand-in dataset and the weight scale are the darts harnesses'
from common import _fan_in_scale, tiny_dataset
from common import set_float64 as set_float64  # re-exported: xautodl_ref, drnas_nb201_ref

Tensors = dict[str, torch.Tensor]
FIXTURE_VERSION = 1
TOLERANCE = 1e-10  # the largest difference accepted between diffnas and XAutoDL, float64
REFERENCE = "D-X-Y/AutoDL-Projects"


@dataclass
class Case:
    """One comparison: a preset with overrides, sizes, the epoch of the step."""

    preset: str
    overrides: list[str] = field(default_factory=list)
    seed: int = 0
    space: str = "nb201"
    channels: int = 4
    layers: int = 1
    batch: int = 4
    size: int = 8
    classes: int = 10
    epoch: int = 0  # the epoch the step belongs to (its lr and Gumbel τ)
    epochs: int = 10  # the search length (the schedules' denominators)
    steps: int = 2  # search steps compared (the second sees the first's α gradient held)
    alpha_std: float = 0.3  # α ~ N(0, alpha_std²) (the search starts at 1e-3; larger tests more)
    momentum: bool = True  # start from non-zero SGD momentum and Adam states

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        return cls(**data)


CASES: dict[str, Case] = {
    "darts_nb201": Case("darts_nb201"),
    # epoch 3 of 10: τ = 10 − 9.9·3/9 = 6.7
    "gdas_nb201": Case("gdas", epoch=3),
    # XAutoDL's darts-space GDAS has N=2 cells per stage: N N R N R N (diffnas layers=6)
    "gdas_darts": Case("gdas", space="darts", layers=6, epoch=3),
}

# an NB201 cell whose node 1 receives only `none`: its out-edge convs run on a zero tensor
DISCONNECTED_CELL = (
    "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
)


# =========================================================================== diffnas side
def build_searcher(case: Case) -> Searcher:
    """diffnas's Searcher for the case, in float64, at the first step of `case.epoch`."""
    overrides = [
        f"space.name={case.space}",  # first: a new space name resets the space's sizes
        f"space.channels={case.channels}",
        f"space.layers={case.layers}",
        f"search.epochs={case.epochs}",
        "log.progress=false",
        "threads=1",
        *case.overrides,
    ]
    config = load_config([case.preset], overrides)
    s = Searcher(config, dataset=tiny_dataset(case))
    s.model.double()
    s.arch.double()
    for g in s.w_opt.param_groups:
        g["lr"] = s.lr_at(case.epoch)
    s.epoch, s.step = case.epoch, 0
    s.progress = case.epoch / s.epochs
    s.relaxation.set_progress(s.progress)
    return s


def make_inputs(case: Case, s: Searcher) -> dict[str, Any]:
    """Weights, α, optimizer states, the two batches and the Gumbel draws, from the seed."""
    rng = np.random.RandomState(case.seed)

    def normal(shape: tuple[int, ...], scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.from_numpy(shift + scale * rng.standard_normal(shape))

    weights: Tensors = {}
    for name, p in s.model.named_parameters():
        shape = tuple(p.shape)
        if p.dim() > 1:
            weights[name] = normal(shape, _fan_in_scale(shape))
        elif name.endswith("weight"):  # affine BN scale
            weights[name] = normal(shape, 0.1, 1.0)
        else:
            weights[name] = normal(shape, 0.1)
    alpha = {k: normal(tuple(a.shape), case.alpha_std) for k, a in s.arch.alpha.items()}
    momentum: Tensors = {}
    adam: dict[str, Tensors] = {}
    if case.momentum:
        for name, w in weights.items():
            momentum[name] = normal(tuple(w.shape), 0.05 * _fan_in_scale(tuple(w.shape)))
        for k, a in alpha.items():  # Adam's state after a few steps: betas and bias correction
            m = normal(tuple(a.shape), 0.01)
            adam[k] = {"exp_avg": m, "exp_avg_sq": m * m + normal(tuple(a.shape), 1e-5) ** 2}

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x = normal((case.batch, 3, case.size, case.size))
        y = torch.from_numpy(rng.randint(0, case.classes, size=case.batch).astype(np.int64))
        return x, y

    train = [batch() for _ in range(case.steps)]
    val = [batch() for _ in range(case.steps)]
    # Exp(1) draws for the Gumbel noise G = −log E of each forward pass (per step: weight
    # step, then architecture step), one per α key in diffnas's key and column order
    exponentials = [
        {k: torch.from_numpy(rng.standard_exponential(tuple(a.shape))) for k, a in alpha.items()}
        for _ in range(2 * case.steps)
    ]
    return {
        "weights": weights,
        "alpha": alpha,
        "momentum": momentum,
        "adam": adam,
        "train": train,
        "val": val,
        "exponentials": exponentials,
    }


ADAM_STEPS = 10  # the step count the Adam state stands for


def set_adam_state(opt: torch.optim.Optimizer, p: torch.Tensor, state: Tensors) -> None:
    opt.state[p] = {
        "step": torch.tensor(float(ADAM_STEPS)),
        "exp_avg": state["exp_avg"].clone(),
        "exp_avg_sq": state["exp_avg_sq"].clone(),
    }


def load_inputs(s: Searcher, inputs: dict[str, Any]) -> None:
    with torch.no_grad():
        for name, p in s.model.named_parameters():
            p.copy_(inputs["weights"][name])
        for k, a in s.arch.alpha.items():
            a.copy_(inputs["alpha"][k])
    for name, p in s.model.named_parameters():
        if name in inputs["momentum"]:
            s.w_opt.state[p]["momentum_buffer"] = inputs["momentum"][name].clone()
    for k, p in s.arch.alpha.items():
        if k in inputs["adam"]:
            set_adam_state(s.a_opt, p, inputs["adam"][k])


@contextlib.contextmanager
def fed_exponentials(draws: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """`Tensor.exponential_` fills its tensor with the next of `draws` (both GDAS codes draw
    their Gumbel noise as −log of it), in order; every draw must be used."""
    queue = list(draws)
    original = torch.Tensor.exponential_

    def fake(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not queue:
            raise AssertionError("more Gumbel draws than the case provides")
        draw = queue.pop(0)
        if draw.shape != self.shape:
            raise AssertionError(
                f"Gumbel draw of shape {tuple(draw.shape)} for {tuple(self.shape)}"
            )
        with torch.no_grad():
            return self.copy_(draw)

    torch.Tensor.exponential_ = fake  # type: ignore[method-assign]
    try:
        yield queue
    finally:
        torch.Tensor.exponential_ = original  # type: ignore[method-assign]
    if queue:
        raise AssertionError(f"{len(queue)} Gumbel draws left unused")


class _FixedStream:
    """Stands in for the validation stream: the case's validation batches, in order."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = list(batches)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches.pop(0)


def tracked_buffers(model: torch.nn.Module) -> Tensors:
    """The BN running statistics of a model (the supernet's stem, residual blocks, last BN)."""
    return {
        n: b.detach().clone()
        for n, b in model.named_buffers()
        if n.endswith(("running_mean", "running_var"))
    }


def diffnas_step(case: Case) -> tuple[dict[str, Tensors], dict[str, Any], Searcher]:
    """`case.steps` diffnas search steps (`Searcher.search_step`) on the case's inputs.

    Returns (results, inputs, searcher). results, after the steps: 'alpha_grad' (of the
    last architecture step), 'alpha', 'weights', 'buffers' (BN running statistics) and, for
    a softmax supernet, 'eval_logits' (eval mode, on the last validation batch).
    """
    s = build_searcher(case)
    inputs = make_inputs(case, s)
    load_inputs(s, inputs)
    s.val_stream = _FixedStream(inputs["val"])  # type: ignore[assignment]
    gumbel = s.config.search.relaxation.name == "gumbel"
    draws = [d[k] for d in inputs["exponentials"] for k in s.arch.alpha] if gumbel else []
    with fed_exponentials(draws):
        for batch in inputs["train"]:
            s.search_step(batch)
            s.step += 1
    out: dict[str, Tensors] = {
        "alpha_grad": {k: p.grad.detach().clone() for k, p in s.arch.alpha.items()},  # type: ignore[union-attr]
        "alpha": {k: p.detach().clone() for k, p in s.arch.alpha.items()},
        "weights": {n: p.detach().clone() for n, p in s.model.named_parameters()},
        "buffers": tracked_buffers(s.model),
    }
    if not gumbel:  # eval-mode logits of the softmax supernet (GDAS would sample again)
        s.model.eval()
        with torch.no_grad():
            logits = s.forward(inputs["val"][-1][0], s.relaxation.mix(s.arch))
        s.model.train()
        out["eval_logits"] = {"val": logits}
    return out, inputs, s


# =========================================================================== discrete network
def network_inputs(seed: int, size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two input batches (for a train-mode and an eval-mode forward) from the seed."""
    rng = np.random.RandomState(seed + 1)
    x1 = torch.from_numpy(rng.standard_normal((batch, 3, size, size)))
    x2 = torch.from_numpy(rng.standard_normal((batch, 3, size, size)))
    return x1, x2


def network_weights(model: torch.nn.Module, seed: int) -> Tensors:
    """Weights of a discrete network by diffnas parameter name, from the seed."""
    rng = np.random.RandomState(seed)
    out: Tensors = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if p.dim() > 1:
            out[name] = torch.from_numpy(_fan_in_scale(shape) * rng.standard_normal(shape))
        elif name.endswith("weight"):
            out[name] = torch.from_numpy(1.0 + 0.1 * rng.standard_normal(shape))
        else:
            out[name] = torch.from_numpy(0.3 * rng.standard_normal(shape))
    return out


def run_network(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> Tensors:
    """Train-mode logits on x1 (which updates the BN running statistics), then eval-mode
    logits on x2. Works for both networks (XAutoDL's returns (features, logits))."""

    def logits(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out[1] if isinstance(out, tuple) else out

    model.train()
    with torch.no_grad():
        train = logits(x1)
        model.eval()
        evaluation = logits(x2)
    model.train()
    return {"train": train.detach().clone(), "eval": evaluation.detach().clone()}


def diffnas_network(
    arch: str, channels: int = 4, layers: int = 1, classes: int = 10, seed: int = 0
) -> torch.nn.Module:
    """diffnas's NB201 discrete network of the cell `arch` with the seed's weights, float64."""
    from diffnas.spaces.nb201 import Nb201Space, from_nb201_string

    net = Nb201Space().build_network(
        from_nb201_string(arch), num_classes=classes, channels=channels, layers=layers
    )
    net.double()
    weights = network_weights(net, seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(weights[name])
    return net


def network_logits(arch: str, seed: int = 0, size: int = 8, batch: int = 4) -> Tensors:
    net = diffnas_network(arch, seed=seed)
    return run_network(net, *network_inputs(seed, size, batch))


# =========================================================================== fixtures
def _projection(seed: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A fixed pseudo-random direction per tensor (seeded by the case and the name)."""
    key = (seed * 1_000_003 + sum(ord(c) * (i + 1) for i, c in enumerate(name))) % 2**32
    return torch.from_numpy(np.random.RandomState(key).standard_normal(shape))


def summarize(seed: int, result: dict[str, Tensors], before: Tensors) -> dict[str, Any]:
    """What a fixture stores: α, ∇α, logits in full; per weight tensor of Δw = w_after −
    w_before and per running-statistics buffer b: [Σ, Σ·r (r a fixed random direction),
    max |·|]."""

    def stats(name: str, t: torch.Tensor) -> list[float]:
        r = _projection(seed, name, tuple(t.shape))
        return [float(t.sum()), float((t * r).sum()), float(t.abs().max())]

    out: dict[str, Any] = {}
    for part, tensors in result.items():
        if part == "weights":
            out[part] = {n: stats(n, w - before[n]) for n, w in tensors.items()}
        elif part == "buffers":
            out[part] = {n: stats(n, b) for n, b in tensors.items()}
        else:
            out[part] = {k: t.tolist() for k, t in tensors.items()}
    return out


def _array(value: Any) -> np.ndarray:
    """float64 values of a tensor or a (nested) list, never through a float32 tensor."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def compare(got: dict[str, Any], want: dict[str, Any]) -> dict[str, float]:
    """Largest absolute difference per part of two summaries (or two full results)."""
    out = {}
    for part in want:
        if part not in got:
            raise AssertionError(f"{part}: missing")
        if set(got[part]) != set(want[part]):
            only = sorted(set(got[part]) ^ set(want[part]))
            raise AssertionError(f"{part}: present on one side only: {only[:6]}")
        out[part] = (
            max(
                float(np.max(np.abs(_array(got[part][k]) - _array(want[part][k]))))
                for k in want[part]
            )
            if want[part]
            else 0.0
        )
    return out


def print_diffs(title: str, diffs: dict[str, float]) -> bool:
    ok = all(v <= TOLERANCE for v in diffs.values())
    cells = "  ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    print(f"{title:<22} max |diffnas − official|: {cells}  {'OK' if ok else 'DIFFERS'}")
    return ok


def write_fixture(path: Path, data: dict[str, Any]) -> None:
    data = {"version": FIXTURE_VERSION, "torch": torch.__version__, **data}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    text = json.dumps(data, indent=1)
    # one line per list of numbers
    text = re.sub(
        r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text
    )
    tmp.write_text(text + "\n")
    tmp.replace(path)
    print(f"wrote {path}")


def case_dict(case: Case) -> dict[str, Any]:
    return asdict(case)
