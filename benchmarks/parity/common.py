"""Shared parts of the parity harnesses and of the golden tests.

A harness (darts_ref.py, pc_darts_ref.py, beta_darts_ref.py, fair_darts_ref.py) builds the
official supernet of one reference checkout and diffnas's supernet for the same preset, gives
both identical weights, α, momentum buffers and batches in float64, takes one full search step
(architecture step, then weight step) on each and prints the largest differences. This module
owns everything that does not need the official code, so that tests/test_parity_golden.py
replays the diffnas half against the stored official numbers:

- `Case`: the preset, its overrides and the tiny sizes of one comparison;
- `make_inputs`: weights, α, β, momentum buffers and batches from a seed (numpy's legacy
  RandomState, whose stream numpy keeps fixed), named by diffnas's parameter names;
- `diffnas_step`: the diffnas search step on those inputs (the engine, float64);
- `summarize` / `compare` / `write_fixture`: what a fixture stores and how it is checked;
- the official-side helpers shared by the harnesses: old-PyTorch shims, importing a checkout,
  and the parameter mapping of the DARTS-family supernets (stem, cells, `_ops`, classifier).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffnas.config import load_config
from diffnas.data.datasets import Dataset, ImageSet
from diffnas.search import Searcher
from diffnas.supernet.aux_skip import aux_beta, set_aux_beta

Tensors = dict[str, torch.Tensor]
FIXTURE_VERSION = 1
# the largest difference accepted between diffnas and the official step, float64
TOLERANCE = 1e-10


@dataclass
class Case:
    """One comparison: a preset with overrides, the supernet and batch sizes, the step's state."""

    preset: str
    overrides: list[str] = field(default_factory=list)
    seed: int = 0
    channels: int = 4
    layers: int = 3
    nodes: int = 4
    batch: int = 4
    size: int = 8
    classes: int = 10
    lr: float = (
        0.025  # the weight learning rate of this step (virtual step size of DARTS 2nd order)
    )
    epoch: int = 0  # the epoch the step belongs to (λ schedules), at its first step
    alpha_std: float = 0.3  # α ~ N(0, alpha_std²); DARTS starts at 1e-3, larger tests more
    momentum: bool = True  # start from a non-zero SGD momentum buffer (as after a first step)
    # stochastic relaxations (DrNAS's Dirichlet): torch's generator is seeded with this before
    # the architecture step and with it + 1 before the weight step, on both sides
    sample_seed: int | None = None
    # DrNAS: prune every edge to its `prune_keep` ops of largest α before the step
    prune_keep: int | None = None
    # torch seed set just before the weight step (SDARTS draws its perturbation there); None:
    # not set
    noise_seed: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        return cls(**data)


# =========================================================================== diffnas side
def set_float64() -> None:
    """Default dtype float64 and one thread: official models are built in the default dtype."""
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)


def tiny_dataset(case: Case) -> Dataset:
    """A stand-in dataset that only fixes the input shape (the batches come from the seed)."""
    n = 8
    images = ImageSet(
        torch.zeros(n, 3, case.size, case.size, dtype=torch.uint8),
        torch.arange(n) % case.classes,
    )
    return Dataset(
        "parity",
        "parity inputs",
        images,
        images,
        [f"class{i}" for i in range(case.classes)],
        crop_padding=0,
        flip=False,
    )


def build_searcher(case: Case) -> Searcher:
    """diffnas's Searcher for the case, in float64, weight lr and epoch set for the step."""
    overrides = [
        "space.name=darts",
        f"space.channels={case.channels}",
        f"space.layers={case.layers}",
        f"space.nodes={case.nodes}",
        "log.progress=false",
        "threads=1",
        *case.overrides,
    ]
    config = load_config([case.preset], overrides)
    s = Searcher(config, dataset=tiny_dataset(case))
    s.model.double()
    s.arch.double()
    for g in s.w_opt.param_groups:
        g["lr"] = case.lr
    s.epoch, s.step = case.epoch, 0
    s.progress = case.epoch / s.epochs
    s.relaxation.set_progress(s.progress)
    if config.supernet.aux_skip:  # DARTS-'s β of the epoch, as the loop sets it at its start
        set_aux_beta(s.model, aux_beta(config.supernet, case.epoch, s.epochs))
    return s


def _fan_in_scale(shape: tuple[int, ...]) -> float:
    return 1.0 / float(np.sqrt(max(int(np.prod(shape[1:])), 1)))


def make_inputs(case: Case, s: Searcher) -> dict[str, Any]:
    """Weights, α, β, momentum buffers and the two batches of the case, from its seed."""
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
    beta = {k: normal(tuple(b.shape), case.alpha_std) for k, b in s.arch.beta.items()}
    momentum: Tensors = {}
    if case.momentum:
        for name, w in weights.items():
            momentum[name] = normal(tuple(w.shape), 0.05 * _fan_in_scale(tuple(w.shape)))

    # Adam's state after a few steps, so that its betas and bias correction matter
    adam: dict[str, dict[str, torch.Tensor]] = {}
    for k, a in [*alpha.items(), *(("beta:" + k, b) for k, b in beta.items())]:
        m = normal(tuple(a.shape), 0.01)
        adam[k] = {"exp_avg": m, "exp_avg_sq": m * m + normal(tuple(a.shape), 1e-5) ** 2}

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x = normal((case.batch, 3, case.size, case.size))
        y = torch.from_numpy(rng.randint(0, case.classes, size=case.batch).astype(np.int64))
        return x, y

    train = batch()
    val = batch()
    return {
        "weights": weights,
        "alpha": alpha,
        "beta": beta,
        "momentum": momentum,
        "adam": adam,
        "train": train,
        "val": val,
    }


def load_inputs(s: Searcher, inputs: dict[str, Any]) -> None:
    with torch.no_grad():
        for name, p in s.model.named_parameters():
            p.copy_(inputs["weights"][name])
        for k, a in s.arch.alpha.items():
            a.copy_(inputs["alpha"][k])
        for k, b in s.arch.beta.items():
            b.copy_(inputs["beta"][k])
    for name, p in s.model.named_parameters():
        if name in inputs["momentum"]:
            s.w_opt.state[p]["momentum_buffer"] = inputs["momentum"][name].clone()
    for prefix, group in (("", s.arch.alpha), ("beta:", s.arch.beta)):
        for k, p in group.items():
            set_adam_state(s.a_opt, p, inputs["adam"][prefix + k])


ADAM_STEPS = 10  # the step count the Adam state stands for


def set_adam_state(
    opt: torch.optim.Optimizer, p: torch.Tensor, state: dict[str, torch.Tensor]
) -> None:
    opt.state[p] = {
        "step": torch.tensor(float(ADAM_STEPS)),
        "exp_avg": state["exp_avg"].clone(),
        "exp_avg_sq": state["exp_avg_sq"].clone(),
    }


def arch_tensors(s: Searcher, grad: bool = False) -> Tensors:
    """α (and β as 'beta:KEY') by key, or their gradients."""
    out: Tensors = {}
    for prefix, group in (("", s.arch.alpha), ("beta:", s.arch.beta)):
        for k, p in group.items():
            t = p.grad if grad else p
            assert t is not None, f"no gradient for {prefix}{k}"
            out[prefix + k] = t.detach().clone()
    return out


def diffnas_step(case: Case) -> tuple[dict[str, Tensors], dict[str, Any]]:
    """One diffnas search step on the case's inputs: (results, inputs).

    results: 'alpha_grad' (after the architecture step), 'alpha' (after it), 'weights' (after
    the weight step that follows, as the search loop does).
    """
    s = build_searcher(case)
    inputs = make_inputs(case, s)
    load_inputs(s, inputs)
    if case.prune_keep is not None:
        s.relaxation.keep_top_ops(s.arch, case.prune_keep)  # type: ignore[attr-defined]
    if case.sample_seed is not None:
        torch.manual_seed(case.sample_seed)
    s.arch_step(inputs["train"], inputs["val"])
    out = {"alpha_grad": arch_tensors(s, grad=True), "alpha": arch_tensors(s)}
    if case.sample_seed is not None:
        torch.manual_seed(case.sample_seed + 1)
    if case.noise_seed is not None:
        torch.manual_seed(case.noise_seed)
    s.weight_step(inputs["train"])
    out["weights"] = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    return out, inputs


# =========================================================================== fixtures
def _projection(case: Case, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A fixed pseudo-random direction per weight tensor (seeded by the case and the name)."""
    seed = (case.seed * 1_000_003 + sum(ord(c) * (i + 1) for i, c in enumerate(name))) % 2**32
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(shape))


def weight_group(name: str) -> str:
    """The stored unit of a weight: one edge (all its ops), else the parameter's module."""
    parts = name.split(".")
    if "edges" in parts:
        return ".".join(parts[: parts.index("edges") + 2])
    return ".".join(parts[:-1]) or name


def summarize(case: Case, result: dict[str, Tensors], before: Tensors) -> dict[str, Any]:
    """What a fixture stores: α and ∇α in full; per edge (or module) of Δw = w_after − w_before,
    [Σ Δw, Σ Δw · r (r a fixed random direction per tensor), max |Δw|]."""
    weights: dict[str, list[float]] = {}
    for name, w in result["weights"].items():
        d = w - before[name]
        r = _projection(case, name, tuple(d.shape))
        stats = [float(d.sum()), float((d * r).sum()), float(d.abs().max())]
        acc = weights.setdefault(weight_group(name), [0.0, 0.0, 0.0])
        acc[0] += stats[0]
        acc[1] += stats[1]
        acc[2] = max(acc[2], stats[2])
    return {
        "alpha_grad": {k: t.tolist() for k, t in result["alpha_grad"].items()},
        "alpha": {k: t.tolist() for k, t in result["alpha"].items()},
        "weights": weights,
    }


def compare_summaries(got: dict[str, Any], want: dict[str, Any]) -> dict[str, float]:
    """Largest absolute difference of α-gradient, α and the weight statistics."""
    out = {}
    for part in ("alpha_grad", "alpha", "weights"):
        if set(got[part]) != set(want[part]):
            raise AssertionError(
                f"{part}: keys differ: {sorted(got[part])} vs {sorted(want[part])}"
            )
        out[part] = max(
            float(np.max(np.abs(np.asarray(got[part][k]) - np.asarray(want[part][k]))))
            for k in want[part]
        )
    return out


def compare_full(got: dict[str, Tensors], want: dict[str, Tensors]) -> dict[str, float]:
    """Largest absolute difference of α-gradient, α and every weight after the step."""
    out = {}
    for part in ("alpha_grad", "alpha", "weights"):
        missing = set(want[part]) ^ set(got[part])
        if missing:
            raise AssertionError(f"{part}: tensors present on one side only: {sorted(missing)}")
        out[part] = max(float((got[part][k] - want[part][k]).abs().max()) for k in want[part])
    return out


def print_diffs(title: str, diffs: dict[str, float]) -> None:
    ok = all(v <= TOLERANCE for v in diffs.values())
    cells = "  ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    print(f"{title:<28} max |diffnas − official|: {cells}  {'OK' if ok else 'DIFFERS'}")


def checkout_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout: pass --commit)"


def dump_fixture(data: dict[str, Any]) -> str:
    """JSON with one line per stored tensor (readable diffs, a few tens of kB)."""
    head = json.dumps({k: v for k, v in data.items() if k != "official"}, indent=1)
    parts = []
    for part, entries in data["official"].items():
        rows = ",\n".join(f"   {json.dumps(k)}: {json.dumps(v)}" for k, v in entries.items())
        parts.append(f'  "{part}": {{\n{rows}\n  }}')
    body = ",\n".join(parts)
    return f'{head[:-2]},\n "official": {{\n{body}\n }}\n}}\n'


def write_fixture(
    path: Path,
    case: Case,
    reference: dict[str, Any],
    official: dict[str, Any],
    diffs: dict[str, float],
    command: str,
    settings: dict[str, float],
) -> None:
    data = {
        "version": FIXTURE_VERSION,
        "reference": reference,
        "command": command,
        "torch": torch.__version__,
        "case": asdict(case),
        "official_settings": settings,
        "diffnas_vs_official": diffs,
        "official": official,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dump_fixture(data))
    tmp.replace(path)
    print(f"wrote {path}")


# =========================================================================== official side
def shim_old_torch() -> None:
    """Let 2018-era research code run on CPU with today's PyTorch, without torchvision.

    `.cuda()` returns the tensor/module unchanged; `torch.cuda.is_available` stays as it is.
    torchvision is replaced by empty modules (the references import it for data loading only).
    Variable, `.data`, and the deprecated `add_(scalar, tensor)` overloads still work in
    current PyTorch, so they need nothing.
    """
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    for name in (
        "torchvision",
        "torchvision.transforms",
        "torchvision.datasets",
        "torchvision.datasets.utils",
    ):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]
    sys.modules["torchvision"].datasets = sys.modules["torchvision.datasets"]  # type: ignore[attr-defined]
    sys.modules["torchvision.datasets"].utils = sys.modules["torchvision.datasets.utils"]  # type: ignore[attr-defined]


def import_official(root: Path, names: list[str]) -> list[types.ModuleType]:
    """Import modules of an official checkout directory (its top-level module names)."""
    if not root.is_dir():
        raise SystemExit(f"{root}: no such directory (pass --official PATH to the checkout)")
    sys.path.insert(0, str(root))
    for name in names:  # never reuse a same-named module of another reference
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
    return [importlib.import_module(n) for n in names]


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    import os

    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def darts_param_pairs(
    s: Searcher, official: torch.nn.Module, official_ops: list[str]
) -> list[tuple[str, torch.nn.Parameter]]:
    """(diffnas parameter name, official parameter) for a DARTS-family official `Network`.

    The official supernet: `stem`, `cells[i].preprocess0/1`, `cells[i]._ops[edge]._ops[op]`
    (edges in DARTS order, ops in `official_ops` order; DARTS-: `cells[i]._ops[edge]
    .auxiliary_op` with supernet.aux_skip), `classifier`. diffnas's: the same
    stem and preprocessing, edges grouped by source node (`dag.source_ops()`), `classifier`.
    Parameters are paired in module order within each op; shapes must agree, and every
    parameter on both sides must be paired.
    """
    name_of = {id(p): n for n, p in s.model.named_parameters()}
    pairs: list[tuple[str, torch.nn.Parameter]] = []

    def zip_modules(d: torch.nn.Module, o: torch.nn.Module, where: str) -> None:
        dp, op = list(d.parameters()), list(o.parameters())
        if len(dp) != len(op) or any(a.shape != b.shape for a, b in zip(dp, op)):
            raise AssertionError(
                f"{where}: parameters differ: {[tuple(p.shape) for p in dp]} vs "
                f"{[tuple(p.shape) for p in op]}"
            )
        pairs.extend((name_of[id(a)], b) for a, b in zip(dp, op))

    model: Any = s.model
    zip_modules(model.stem, official.stem, "stem")
    for i, (cell, ocell) in enumerate(zip(model.cells, official.cells)):  # type: ignore[attr-defined]
        zip_modules(cell.preprocess0, ocell.preprocess0, f"cell {i} preprocess0")
        zip_modules(cell.preprocess1, ocell.preprocess1, f"cell {i} preprocess1")
        spec = s.model.arch_specs[model.keys[i]]
        groups = cell.dag.source_ops()
        for row, (src, _dst) in enumerate(spec.edges):
            local = cell.dag.out_edges[src].index(row)
            d_edge = groups[src].edges[local]
            o_edge = ocell._ops[row]._ops
            for o, op_name in enumerate(spec.ops):
                if op_name == "none":
                    continue
                zip_modules(
                    d_edge[o], o_edge[official_ops.index(op_name)], f"cell {i} edge {row} {op_name}"
                )
            if cell.dag.aux is not None:  # DARTS-: the edge's auxiliary skip (MixedOp attribute)
                zip_modules(
                    cell.dag.aux[row], ocell._ops[row].auxiliary_op, f"cell {i} edge {row} aux"
                )
    zip_modules(model.classifier, official.classifier, "classifier")
    paired = {id(p) for _, p in pairs}
    extra = [n for n, p in official.named_parameters() if id(p) not in paired]
    if extra or len(pairs) != len(name_of):
        raise AssertionError(f"unpaired parameters: official {extra[:5]}, diffnas count differs")
    return pairs


def alpha_columns(spec_ops: tuple[str, ...], official_ops: list[str]) -> list[int]:
    """Index of each official op column in diffnas's α (same op names)."""
    if sorted(spec_ops) != sorted(official_ops):
        raise AssertionError(
            f"the op sets differ: official {official_ops}, diffnas {list(spec_ops)}; "
            f"set space.exclude_ops so that they agree"
        )
    return [spec_ops.index(o) for o in official_ops]


def load_official_inputs(
    s: Searcher,
    inputs: dict[str, Any],
    pairs: list[tuple[str, torch.nn.Parameter]],
    official_alpha: dict[str, torch.Tensor],
    columns: list[int],
    optimizer: torch.optim.SGD,
    official_beta: dict[str, torch.Tensor] | None = None,
) -> None:
    """Give the official model the case's weights, α (and β) and momentum buffers."""
    with torch.no_grad():
        for name, p in pairs:
            p.copy_(inputs["weights"][name])
        for key, a in official_alpha.items():
            a.copy_(inputs["alpha"][key][:, columns])
        for key, b in (official_beta or {}).items():
            b.copy_(inputs["beta"][key])
    for name, p in pairs:
        if name in inputs["momentum"]:
            optimizer.state[p]["momentum_buffer"] = inputs["momentum"][name].clone()


def official_adam_state(
    opt: torch.optim.Optimizer,
    params: dict[str, torch.Tensor],
    inputs: dict[str, Any],
    columns: list[int] | None,
) -> None:
    """The case's Adam state on the official α (by diffnas key; β keys 'beta:KEY')."""
    for key, p in params.items():
        state = inputs["adam"][key]
        if columns is not None and not key.startswith("beta:"):
            state = {k: v[:, columns] for k, v in state.items()}
        set_adam_state(opt, p, state)


def official_results(
    pairs: list[tuple[str, torch.nn.Parameter]],
    alpha_grad: Tensors,
    alpha: Tensors,
) -> dict[str, Tensors]:
    return {
        "alpha_grad": alpha_grad,
        "alpha": alpha,
        "weights": {n: p.detach().clone() for n, p in pairs},
    }


def scatter_columns(t: torch.Tensor, columns: list[int], n_ops: int) -> torch.Tensor:
    """An official α-shaped tensor in diffnas's column order (ops diffnas lacks: zero)."""
    out = torch.zeros(t.shape[0], n_ops, dtype=t.dtype)
    out[:, columns] = t.detach()
    return out


def argparse_defaults(script: Path) -> dict[str, Any]:
    """`--name: default` of the `parser.add_argument` lines of an official script (read, not
    run; a regular expression, since some of these scripts no longer parse: `async=True`)."""
    import ast
    import re

    pattern = re.compile(r"add_argument\(\s*['\"]--([\w-]+)['\"].*?default\s*=\s*([^,)]+)")
    out: dict[str, Any] = {}
    for line in script.read_text().splitlines():
        m = pattern.search(line)
        if m:
            with contextlib.suppress(ValueError, SyntaxError):
                out[m.group(1)] = ast.literal_eval(m.group(2).strip())
    return out


# preset key -> official train_search.py argument (the DARTS-family scripts share the names)
SETTINGS = {
    "search.epochs": "epochs",
    "search.w_lr": "learning_rate",
    "search.w_lr_min": "learning_rate_min",
    "search.w_momentum": "momentum",
    "search.w_weight_decay": "weight_decay",
    "search.grad_clip": "grad_clip",
    "search.arch_lr": "arch_learning_rate",
    "search.arch_weight_decay": "arch_weight_decay",
    "data.batch_size": "batch_size",
}


def preset_value(config: Any, key: str) -> Any:
    """A setting of a loaded config by its dotted key, e.g. 'search.arch_betas[0]'."""
    section, name = key.split(".")
    index = None
    if name.endswith("]"):  # e.g. arch_betas[0]
        name, index = name[:-3], int(name[-2])
    value = getattr(getattr(config, section), name)
    return value if index is None else value[index]


def official_settings(script: Path, extra: dict[str, str] | None = None) -> dict[str, float]:
    """The official script's defaults under the preset keys they correspond to."""
    defaults = argparse_defaults(script)
    return {
        key: float(defaults[arg])
        for key, arg in {**SETTINGS, **(extra or {})}.items()
        if arg in defaults
    }


def check_settings(
    preset: str, script: Path, extra: dict[str, str] | None = None
) -> dict[str, float]:
    """Print the preset settings that differ from the official script's defaults; return
    those defaults (a fixture stores them, so that CI checks the preset too)."""
    official = official_settings(script, extra)
    config = load_config([preset])
    differ = [
        f"{key} = {preset_value(config, key)}, official default {value}"
        for key, value in official.items()
        if float(preset_value(config, key)) != value
    ]
    print(f"preset settings vs {script.name} defaults: " + ("; ".join(differ) or "all equal"))
    return official


# --------------------------------------------------------------------------- one harness
def parser(doc: str, official: str) -> argparse.ArgumentParser:
    """A harness's command line: --official CHECKOUT, --write FIXTURE, --commit; a harness
    adds its own options to it."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help=f"{official} checkout")
    ap.add_argument("--write", type=Path, help="store the official numbers as a golden fixture")
    ap.add_argument("--commit", help="the checkout's commit (default: git rev-parse HEAD)")
    return ap


def diffnas_side(case: Case) -> tuple[dict[str, Tensors], dict[str, Any], Searcher]:
    """float64, the old-torch shims, diffnas's step on `case`, and a fresh searcher of the
    same case (its settings and parts for the official side)."""
    set_float64()
    shim_old_torch()
    ours, inputs = diffnas_step(case)
    return ours, inputs, build_searcher(case)


def finish(
    a: argparse.Namespace,
    title: str,
    case: Case,
    ours: dict[str, Tensors],
    official: dict[str, Tensors],
    inputs: dict[str, Any],
    settings: dict[str, float],
    repository: str,
    files: list[str],
    command: str,
) -> int:
    """Print the largest differences, write the fixture when --write asks (`command` is the
    harness's command line without --write), and return the exit status: 0 when equal."""
    diffs = compare_full(ours, official)
    print_diffs(title, diffs)
    if a.write:
        reference = {
            "repository": repository,
            "commit": a.commit or checkout_commit(a.official),
            "files": files,
        }
        summary = summarize(case, official, inputs["weights"])
        full = f"{command} --write {a.write}"
        write_fixture(a.write, case, reference, summary, diffs, full, settings)
    return 0 if all(v <= TOLERANCE for v in diffs.values()) else 1
