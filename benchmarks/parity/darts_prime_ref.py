"""Parity of the `darts_prime` and `darts_prime_crb` presets with the public DARTS-PRIME code.

Reference: github.com/k8lion/DARTS-PRIME, src/model_admm_hard_statebn.py (the supernet, CRB,
node BN, the prox and ADMM terms, the gradient energy FI), src/architect.py (the α step),
src/train_scheduled_hard_statebn.py (the loop body: informed schedule, weight step, masking,
Z/U updates), run as the README's search command (`--reg prox --schedfreq 10 --dyno_split
--dyno_schedule`, plus `--crb` for `darts_prime_crb`).

Builds the official supernet and diffnas's for the preset on identical float64 weights, α,
optimizer states, schedule state and batches, runs the same search iterations on each (the
official loop body of `train()`, transcribed below; diffnas's own `Searcher.run_epoch`) and
prints the largest differences of α-gradient, α, weights (of the ops still computed), the
informed schedule's threshold and FI EWMA, and ADMM's Z and U. With --write, stores the
official numbers as a golden fixture for tests/test_parity_prime.py.

    python benchmarks/parity/darts_prime_ref.py --official /path/to/DARTS-PRIME \\
        --preset darts_prime|darts_prime_crb [--reg prox|admm] [--write tests/golden/X.json]

This module's diffnas half (`Case`, `make_inputs`, `diffnas_run`, `summarize`, `compare`)
needs no official code: the golden tests import it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import math
import shlex
import subprocess
import sys
import types
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffnas.config import load_config
from diffnas.data.datasets import Dataset, ImageSet
from diffnas.search import Searcher

Tensors = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
TOLERANCE = 1e-10
FIXTURE_VERSION = 1
ADAM_STEPS = 10  # the step count the Adam state stands for


@dataclass
class Case:
    """One comparison: preset, regularizer, tiny sizes and the loop state the run starts from."""

    preset: str
    reg: str = "prox"  # or "admm"
    seed: int = 0
    channels: int = 4
    layers: int = 3
    nodes: int = 3  # intermediate nodes per cell (the public Network's `steps`)
    batch: int = 4
    size: int = 8
    classes: int = 10
    epochs: int = 50  # the preset's
    steps_per_epoch: int = 20  # len(train_queue)
    epoch: int = 3  # the run starts at this epoch's `step`-th weight step
    step: int = 7
    iterations: int = 2  # loop iterations compared
    # informed schedule: τ and FI_ewma before the first iteration; 20 < 25 takes an α step,
    # then τ = 25·1.05^-10 = 15.3 < FI_ewma (≥ 0.8·20) skips the second
    threshold: float = 25.0
    fi_ewma: float = 20.0
    alpha_std: float = 0.3  # softmax: α ~ N(0, alpha_std²)
    pruned: list[list[Any]] = field(default_factory=list)  # CRB: [key, edge, op] pruned already
    pruning: list[list[Any]] = field(default_factory=list)  # CRB: pushed below 0 by this α step
    admm_count: int = 8  # ADMM: architecture steps since the last Z/U update
    overrides: list[str] = field(default_factory=list)  # extra diffnas settings (--set)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        return cls(**data)


CASES = {
    "darts_prime": Case("darts_prime"),
    "darts_prime_crb": Case(
        "darts_prime_crb",
        pruned=[["normal", 2, 4], ["reduce", 0, 0], ["reduce", 5, 6]],
        pruning=[["normal", 6, 1], ["reduce", 3, 5]],
        threshold=50.0,  # α steps in both iterations (the second on the pruned supernet)
    ),
}


# =========================================================================== diffnas side
def set_float64() -> None:
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)


def tiny_dataset(case: Case, n: int = 44) -> Dataset:
    """A stand-in dataset fixing the input shape only (the batches come from the seed)."""
    images = ImageSet(
        torch.zeros(n, 3, case.size, case.size, dtype=torch.uint8),
        torch.arange(n) % case.classes,
    )
    names = [f"class{i}" for i in range(case.classes)]
    return Dataset("parity", "parity inputs", images, images, names, crop_padding=0, flip=False)


def overrides(case: Case) -> list[str]:
    out = [
        "space.name=darts",
        f"space.channels={case.channels}",
        f"space.layers={case.layers}",
        f"space.nodes={case.nodes}",
        f"data.batch_size={case.batch}",
        "log.progress=false",
        "threads=1",
    ]
    if case.reg == "admm":
        out.append("search.regularizers=[{name: admm}]")
    return out + case.overrides


class FixedBatches:
    """Stands in for the training BatchStream: `steps_per_epoch` long, yields the case's
    batches from the start step on."""

    def __init__(self, batches: list[Batch], steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        yield from self.batches


class FixedStream:
    """Stands in for the validation CyclingStream."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = list(batches)

    def next(self) -> Batch:
        return self.batches.pop(0)


def _fan_in(shape: tuple[int, ...]) -> float:
    return 1.0 / math.sqrt(max(int(np.prod(shape[1:])), 1))


def build_searcher(case: Case) -> Searcher:
    config = load_config([case.preset], overrides(case))
    if config.search.epochs != case.epochs:
        raise AssertionError(f"the preset has {config.search.epochs} epochs, case {case.epochs}")
    s = Searcher(config, dataset=tiny_dataset(case))
    s.model.double()
    s.arch.double()
    return s


def make_inputs(case: Case, s: Searcher) -> dict[str, Any]:
    """Weights, α, Adam and SGD states, Z/U and the batches of the case, from its seed
    (numpy's legacy RandomState, whose stream numpy keeps fixed), by diffnas's names."""
    rng = np.random.RandomState(case.seed)

    def normal(shape: tuple[int, ...], scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.from_numpy(shift + scale * rng.standard_normal(shape))

    weights: Tensors = {}
    for name, p in s.model.named_parameters():
        shape = tuple(p.shape)
        if p.dim() > 1:
            weights[name] = normal(shape, _fan_in(shape))
        elif name.endswith("weight"):
            weights[name] = normal(shape, 0.1, 1.0)
        else:
            weights[name] = normal(shape, 0.1)
    momentum = {
        n: normal(tuple(w.shape), 0.05 * _fan_in(tuple(w.shape))) for n, w in weights.items()
    }
    crb = s.config.search.relaxation.name == "crb"
    alpha: Tensors = {}
    adam: dict[str, Tensors] = {}
    for k, a in s.arch.alpha.items():
        shape = tuple(a.shape)
        if crb:  # the CRB init 1/|O| plus a visible spread
            alpha[k] = normal(shape, 0.05, 1.0 / shape[1]).clamp(0.02, 0.98)
        else:
            alpha[k] = normal(shape, case.alpha_std)
        m = normal(shape, 0.01)
        adam[k] = {"exp_avg": m, "exp_avg_sq": m * m + normal(shape, 1e-5) ** 2}
    for key, e, o in case.pruned:  # pruned earlier: α = 0, the α step kept pushing it down
        alpha[key][e, o] = 0.0
        adam[key]["exp_avg"][e, o] = abs(float(adam[key]["exp_avg"][e, o])) + 0.01
    for key, e, o in case.pruning:  # this α step takes it below 0 (a step of ~lr)
        alpha[key][e, o] = 1e-6
        adam[key]["exp_avg"][e, o] = 0.5
        adam[key]["exp_avg_sq"][e, o] = 0.01 * 0.5**2
    zu: dict[str, Tensors] = {"Z": {}, "U": {}}
    for k, a in alpha.items():
        z = torch.zeros_like(a)
        z[torch.arange(a.shape[0]), torch.from_numpy(rng.randint(0, a.shape[1], a.shape[0]))] = 1.0
        zu["Z"][k] = z
        zu["U"][k] = normal(tuple(a.shape), 0.1)

    def batch() -> Batch:
        x = normal((case.batch, 3, case.size, case.size))
        y = torch.from_numpy(rng.randint(0, case.classes, size=case.batch).astype(np.int64))
        return x, y

    train = [batch() for _ in range(case.iterations)]
    val = [batch() for _ in range(case.iterations)]
    return {
        "weights": weights,
        "momentum": momentum,
        "alpha": alpha,
        "adam": adam,
        "zu": zu,
        "train": train,
        "val": val,
    }


def pruned_masks(case: Case, alpha: Tensors) -> dict[str, torch.Tensor]:
    alive = {k: torch.ones_like(a, dtype=torch.bool) for k, a in alpha.items()}
    for key, e, o in case.pruned:
        alive[key][e, o] = False
    return alive


def set_adam_state(opt: torch.optim.Optimizer, p: torch.Tensor, state: Tensors) -> None:
    opt.state[p] = {
        "step": torch.tensor(float(ADAM_STEPS)),
        "exp_avg": state["exp_avg"].clone(),
        "exp_avg_sq": state["exp_avg_sq"].clone(),
    }


def capture_diffnas(s: Searcher, took_step: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "arch_step": took_step,
        "alpha": {k: a.detach().clone() for k, a in s.arch.alpha.items()},
        "weights": {n: p.detach().clone() for n, p in s.model.named_parameters()},
        "threshold": float(s.schedule.threshold),  # type: ignore[attr-defined]
        "fi_ewma": float(s.schedule.fi_ewma),  # type: ignore[attr-defined]
    }
    if took_step:
        out["alpha_grad"] = {k: a.grad.detach().clone() for k, a in s.arch.alpha.items()}  # type: ignore[union-attr]
    reg: Any = s.regularizers[0]
    if hasattr(reg, "Z"):
        out["Z"] = {k: z.clone() for k, z in reg.Z.items()}
        out["U"] = {k: u.clone() for k, u in reg.U.items()}
    return out


def diffnas_run(case: Case) -> tuple[list[dict[str, Any]], dict[str, Any], Searcher]:
    """The case's iterations through diffnas's own loop (`Searcher.run_epoch`)."""
    s = build_searcher(case)
    inputs = make_inputs(case, s)
    with torch.no_grad():
        for name, p in s.model.named_parameters():
            p.copy_(inputs["weights"][name])
        for k, a in s.arch.alpha.items():
            a.copy_(inputs["alpha"][k])
    for name, p in s.model.named_parameters():
        s.w_opt.state[p]["momentum_buffer"] = inputs["momentum"][name].clone()
    for k, a in s.arch.alpha.items():
        set_adam_state(s.a_opt, a, inputs["adam"][k])
    if s.config.search.relaxation.name == "crb":
        s.relaxation.load_state_dict({"alive": pruned_masks(case, inputs["alpha"])})
    sched: Any = s.schedule
    sched.threshold, sched.fi_ewma = case.threshold, case.fi_ewma
    reg: Any = s.regularizers[0]
    if case.reg == "admm":
        reg.Z = {k: z.clone() for k, z in inputs["zu"]["Z"].items()}
        reg.U = {k: u.clone() for k, u in inputs["zu"]["U"].items()}
        reg.steps = case.admm_count
    s.data.train = FixedBatches(inputs["train"], case.steps_per_epoch)  # type: ignore[assignment]
    s.val_stream = FixedStream(inputs["val"])  # type: ignore[assignment]
    s.epoch, s.step = case.epoch, case.step
    s.global_step = case.epoch * case.steps_per_epoch + case.step
    records: list[dict[str, Any]] = []

    class Capture:  # a search-loop callback: what each iteration leaves behind
        name = "parity-capture"
        arch_steps = 0

        def on_step_end(self, searcher: Searcher) -> None:
            took = searcher.arch_steps > self.arch_steps
            self.arch_steps = searcher.arch_steps
            records.append(capture_diffnas(searcher, took))

        def __getattr__(self, _: str) -> Any:  # every other hook: nothing to do
            return lambda *a, **k: None

    s.callbacks = [Capture()]  # type: ignore[list-item]
    s.run_epoch()
    return records, inputs, s


# =========================================================================== fixtures
def _direction(seed: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    h = (seed * 1_000_003 + sum(ord(c) * (i + 1) for i, c in enumerate(name))) % 2**32
    return torch.from_numpy(np.random.RandomState(h).standard_normal(shape))


def weight_group(name: str) -> str:
    """The stored unit of a weight: one edge (all its ops), else the parameter's module."""
    parts = name.split(".")
    if "edges" in parts:
        return ".".join(parts[: parts.index("edges") + 2])
    return ".".join(parts[:-1]) or name


def summarize(
    case: Case, records: list[dict[str, Any]], before: Tensors, dead: set[str]
) -> list[dict[str, Any]]:
    """What a fixture stores per iteration: the α-step flag, threshold and FI EWMA, α, its
    gradient (after an α step), Z and U in full; per edge (or module) of the weight update
    Δw = w − w_before over the ops still computed: [Σ Δw, Σ Δw · r (r a fixed random
    direction per tensor), max |Δw|]."""
    out = []
    for rec in records:
        item: dict[str, Any] = {
            "arch_step": rec["arch_step"],
            "threshold": rec["threshold"],
            "fi_ewma": rec["fi_ewma"],
        }
        for part in ("alpha_grad", "alpha", "Z", "U"):
            if part in rec:
                item[part] = {k: t.tolist() for k, t in rec[part].items()}
        weights: dict[str, list[float]] = {}
        for name, w in rec["weights"].items():
            if name in dead:
                continue
            d = w - before[name]
            r = _direction(case.seed, name, tuple(d.shape))
            acc = weights.setdefault(weight_group(name), [0.0, 0.0, 0.0])
            acc[0] += float(d.sum())
            acc[1] += float((d * r).sum())
            acc[2] = max(acc[2], float(d.abs().max()))
        item["weights"] = weights
        out.append(item)
    return out


def compare(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> dict[str, float]:
    """Largest absolute difference per part over the iterations (inf: structure differs)."""
    if len(got) != len(want):
        return {"iterations": math.inf}
    out: dict[str, float] = {}
    for g, w in zip(got, want):
        if g["arch_step"] != w["arch_step"] or set(g) != set(w):
            return {"schedule decisions": math.inf}
        for part in ("threshold", "fi_ewma"):
            out[part] = max(out.get(part, 0.0), abs(g[part] - w[part]))
        for part in ("alpha_grad", "alpha", "Z", "U", "weights"):
            if part not in w:
                continue
            if set(g[part]) != set(w[part]):
                return {part: math.inf}
            diff = max(
                float(np.max(np.abs(np.asarray(g[part][k]) - np.asarray(w[part][k]))))
                for k in w[part]
            )
            out[part] = max(out.get(part, 0.0), diff)
    return out


def dead_weights(case: Case, s: Searcher) -> set[str]:
    """Parameters of ops pruned before or during the run: never computed again. The official
    SGD still moves them (zero gradients, momentum and weight decay); diffnas leaves them."""
    model: Any = s.model
    out: set[str] = set()
    name_of = {id(p): n for n, p in s.model.named_parameters()}
    for key, e, o in [*case.pruned, *case.pruning]:
        for i, cell_key in enumerate(model.keys):
            if cell_key != key:
                continue
            dag = model.cells[i].dag
            src = dag.edges[e][0]
            op = dag.source_ops()[src].edges[dag.out_edges[src].index(e)][o]
            out |= {name_of[id(p)] for p in op.parameters()}
    return out


def dump_fixture(data: dict[str, Any]) -> str:
    """JSON with one line per stored tensor (readable diffs)."""
    head = json.dumps({k: v for k, v in data.items() if k != "official"}, indent=1)
    items = []
    for item in data["official"]:
        parts = []
        for key, value in item.items():
            if isinstance(value, dict):
                rows = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
                parts.append(f"   {json.dumps(key)}: {{\n{rows}\n   }}")
            else:
                parts.append(f"   {json.dumps(key)}: {json.dumps(value)}")
        items.append("  {\n" + ",\n".join(parts) + "\n  }")
    return f'{head[:-2]},\n "official": [\n' + ",\n".join(items) + "\n ]\n}\n"


# =========================================================================== official side
def shim_official_environment() -> None:
    """Run the 2021 code on CPU with today's PyTorch and without torchvision.

    `.cuda()` returns the tensor/module unchanged. torchvision (imported by the training
    script's module for data loading only) is an empty stand-in.
    """
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))


def import_official(src: Path, names: list[str]) -> list[types.ModuleType]:
    if not src.is_dir():
        raise SystemExit(f"{src}: no such directory (pass --official PATH to the checkout)")
    sys.path.insert(0, str(src))
    return [importlib.import_module(n) for n in names]


def param_pairs(s: Searcher, official: torch.nn.Module, ops: list[str]) -> list[tuple[str, Any]]:
    """(diffnas parameter name, official parameter): stem, preprocessing, every edge's ops
    (official `_ops[edge]._ops[op]`, DARTS edge order; diffnas's edges grouped by source
    node), classifier; shapes checked, every parameter paired."""
    name_of = {id(p): n for n, p in s.model.named_parameters()}
    pairs: list[tuple[str, Any]] = []

    def zip_params(d: torch.nn.Module, o: torch.nn.Module, where: str) -> None:
        dp, op = list(d.parameters()), list(o.parameters())
        if [p.shape for p in dp] != [p.shape for p in op]:
            raise AssertionError(f"{where}: parameter shapes differ")
        pairs.extend((name_of[id(a)], b) for a, b in zip(dp, op))

    model: Any = s.model
    zip_params(model.stem, official.stem, "stem")
    for i, (cell, ocell) in enumerate(zip(model.cells, official.cells)):  # type: ignore[arg-type]
        zip_params(cell.preprocess0, ocell.preprocess0, f"cell {i} preprocess0")
        zip_params(cell.preprocess1, ocell.preprocess1, f"cell {i} preprocess1")
        spec = s.model.arch_specs[model.keys[i]]
        for row, (src, _) in enumerate(spec.edges):
            d_edge = cell.dag.source_ops()[src].edges[cell.dag.out_edges[src].index(row)]
            for o, name in enumerate(spec.ops):
                if name != "none":
                    d_op, o_op = d_edge[o], ocell._ops[row]._ops[ops.index(name)]
                    zip_params(d_op, o_op, f"cell {i} edge {row} {name}")
    zip_params(model.classifier, official.classifier, "classifier")
    if len(pairs) != len(name_of) or len(pairs) != len(list(official.parameters())):
        raise AssertionError("some parameters are not paired")
    return pairs


def official_run(
    src: Path, case: Case, s: Searcher, inputs: dict[str, Any]
) -> list[dict[str, Any]]:
    """The case's iterations with the official code: the loop body of
    train_scheduled_hard_statebn.py `train()` with `--dyno_schedule`, transcribed (the
    script parses its arguments and creates directories on import)."""
    model_mod, architect_mod, genotypes = import_official(
        src, ["model_admm_hard_statebn", "architect", "genotypes"]
    )
    cfg = s.config.search
    crb = cfg.relaxation.name == "crb"
    ops = list(genotypes.CRBPRIMITIVES if crb else genotypes.PRIMITIVES)
    sched = cfg.schedule.params
    rho = cfg.regularizers[0].params.get("rho", 0.1)
    criterion = torch.nn.CrossEntropyLoss()
    model = model_mod.Network(
        case.channels, case.classes, case.layers, criterion, rho, crb, case.epochs, -1,
        ewma=sched["ewma"], reg=case.reg, steps=case.nodes, multiplier=case.nodes,
    )  # fmt: skip
    optimizer = torch.optim.SGD(
        model.parameters(), cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    # PyTorch 1.6's zero_grad (the README's requirement) zeroes gradients; today's default
    # sets them to None, on which the official track_FI fails once an op is pruned
    zero_grad = optimizer.zero_grad
    optimizer.zero_grad = lambda set_to_none=False: zero_grad(set_to_none=False)  # type: ignore[method-assign]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, case.epochs, eta_min=cfg.w_lr_min
    )
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
        warnings.simplefilter("ignore")
        for _ in range(case.epoch + 1):  # main(): scheduler.step() at each epoch's start
            scheduler.step()
    args = types.SimpleNamespace(
        momentum=cfg.w_momentum,
        weight_decay=cfg.w_weight_decay,
        arch_learning_rate=cfg.arch_lr,
        arch_weight_decay=cfg.arch_weight_decay,
    )
    architect = architect_mod.Architect(model, args)
    pairs = param_pairs(s, model, ops)
    spec_ops = list(s.model.arch_specs["normal"].ops)
    if sorted(spec_ops) != sorted(ops):
        raise AssertionError(f"op sets differ: official {ops}, diffnas {spec_ops}")
    cols = [spec_ops.index(o) for o in ops]  # official column j = diffnas column cols[j]
    alphas = {"normal": model.alphas_normal, "reduce": model.alphas_reduce}
    masks = dict(zip(("normal", "reduce"), model._arch_mask))
    alive = pruned_masks(case, inputs["alpha"])
    with torch.no_grad():
        for name, p in pairs:
            p.copy_(inputs["weights"][name])
        for k, a in alphas.items():
            a.copy_(inputs["alpha"][k][:, cols])
            masks[k].copy_(alive[k][:, cols].to(masks[k].dtype))
    for name, p in pairs:
        optimizer.state[p]["momentum_buffer"] = inputs["momentum"][name].clone()
        p.grad = torch.zeros_like(p)  # as after the run's earlier steps, when every op ran
    for k, a in alphas.items():
        set_adam_state(
            architect.optimizer, a, {n: t[:, cols] for n, t in inputs["adam"][k].items()}
        )
    if case.reg == "admm":
        model.Z = tuple(inputs["zu"]["Z"][k][:, cols].clone() for k in ("normal", "reduce"))
        model.U = tuple(inputs["zu"]["U"][k][:, cols].clone() for k in ("normal", "reduce"))
    alpha_counter = case.admm_count
    model.clock = case.epoch + case.step / case.steps_per_epoch
    model.FI_ewma = case.fi_ewma
    alpha_threshold = case.threshold
    multiplier = sched["multiplier"]
    divider = np.exp(-np.log(multiplier) * sched["f"])  # main(), --dyno_schedule
    batches = case.steps_per_epoch

    def to_diffnas(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(t.shape[0], len(spec_ops), dtype=t.dtype)
        out[:, cols] = t.detach()
        return out

    records = []
    quiet = io.StringIO()  # the official code prints its regularizer terms and Z, U
    for (x, y), (xv, yv) in zip(inputs["train"], inputs["val"]):
        model.train()
        model.tick(1 / batches)
        rec: dict[str, Any] = {"arch_step": False}
        if model.FI_ewma > 0.0 and model.FI_ewma < alpha_threshold:
            with contextlib.redirect_stdout(quiet):
                architect.step(xv, yv)
            rec["arch_step"] = True
            rec["alpha_grad"] = {k: to_diffnas(a.grad) for k, a in alphas.items()}
            alpha_threshold *= divider
            alpha_counter += 1
        else:
            alpha_threshold *= multiplier
        optimizer.zero_grad()
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        model.track_FI()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        model.mask_alphas()
        if (case.reg == "admm") & ((alpha_counter + 1) % 10 == 0):  # --admm_freq 10
            with contextlib.redirect_stdout(quiet):
                model.update_Z()
                model.update_U()
            alpha_counter = 0
        rec["alpha"] = {k: to_diffnas(a) for k, a in alphas.items()}
        rec["weights"] = {n: p.detach().clone() for n, p in pairs}
        rec["threshold"] = float(alpha_threshold)
        rec["fi_ewma"] = float(model.FI_ewma)
        if case.reg == "admm":
            rec["Z"] = {k: to_diffnas(z) for k, z in zip(("normal", "reduce"), model.Z)}
            rec["U"] = {k: to_diffnas(u) for k, u in zip(("normal", "reduce"), model.U)}
        records.append(rec)
    return records


# preset key -> (official argument, its value in the README's command or its default)
README_ARGS = {"search.schedule.f": "schedfreq"}
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
    "search.schedule.multiplier": "threshold_multiplier",
    "search.schedule.threshold": "init_alpha_threshold",
    "search.schedule.ewma": "ewma",
    "search.regularizers.rho": "rho",
}


def check_settings(preset: str, script: Path) -> list[str]:
    """The preset's settings against the official script's defaults (--schedfreq: the
    README's 10). Printed; returns the differences."""
    import ast
    import re

    pattern = re.compile(r"add_argument\('--(\w+)'.*?default=([^,)]+)")
    defaults: dict[str, Any] = {}
    for line in script.read_text().splitlines():
        m = pattern.search(line)
        if m:
            with contextlib.suppress(ValueError, SyntaxError):
                defaults[m.group(1)] = ast.literal_eval(m.group(2).strip())
    defaults["schedfreq"] = 10  # the README's --schedfreq 10
    cfg = load_config([preset])
    differ = []
    for key, arg in {**SETTINGS, **README_ARGS}.items():
        section, *rest = key.split(".")
        if section == "data":
            ours: Any = getattr(cfg.data, rest[0])
        elif rest[0] == "schedule":
            ours = cfg.search.schedule.params[rest[1]]
        elif rest[0] == "regularizers":
            ours = cfg.search.regularizers[0].params[rest[1]]
        else:
            ours = getattr(cfg.search, rest[0])
        if float(ours) != float(defaults[arg]):
            differ.append(f"{key} = {ours}, official --{arg} {defaults[arg]}")
    print(f"{preset} settings vs {script.name}: " + ("; ".join(differ) or "all equal"))
    return differ


def checkout_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown (pass --commit)"
    except OSError:
        return "unknown (pass --commit)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="k8lion/DARTS-PRIME checkout")
    ap.add_argument("--preset", choices=sorted(CASES), default="darts_prime")
    ap.add_argument("--reg", choices=("prox", "admm"), default="prox")
    ap.add_argument("--write", type=Path, help="store the official numbers as a golden fixture")
    ap.add_argument("--commit", help="the checkout's commit (default: git rev-parse HEAD)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a diffnas setting for its side only (shows what a kept difference changes)",
    )
    a = ap.parse_args(argv)
    if a.set and a.write:
        ap.error("--set changes diffnas's side only: do not --write a fixture with it")
    set_float64()
    shim_official_environment()
    case = Case(**{**asdict(CASES[a.preset]), "reg": a.reg, "overrides": a.set})

    src = a.official / "src"
    differ = check_settings(a.preset, src / "train_scheduled_hard_statebn.py")
    ours, inputs, s = diffnas_run(case)
    # the official side takes its settings from the preset as it stands (not from --set)
    plain_case = Case(**{**asdict(case), "overrides": []})
    official = official_run(src, case, build_searcher(plain_case), inputs)
    dead = dead_weights(case, s)
    got = summarize(case, ours, inputs["weights"], dead)
    want = summarize(case, official, inputs["weights"], dead)
    diffs = compare(got, want)
    steps = [r["arch_step"] for r in official]
    ok = all(v <= TOLERANCE for v in diffs.values()) and not differ
    print(f"{a.preset} ({a.reg}), iterations with an α step: {steps}; dead weight tensors "
          f"left out: {len(dead)}")  # fmt: skip
    cells = "  ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    print(f"max |diffnas − official|: {cells}  {'OK' if ok else 'DIFFERS'}")
    if a.write:
        name = a.preset if a.reg == "prox" else f"{a.preset}_{a.reg}"
        command = "python benchmarks/parity/darts_prime_ref.py " + " ".join(
            shlex.quote(x)
            for x in ["--official", "DARTS_PRIME_CHECKOUT", "--preset", a.preset, "--reg", a.reg]
        )
        data = {
            "version": FIXTURE_VERSION,
            "name": name,
            "reference": {
                "repository": "k8lion/DARTS-PRIME",
                "commit": a.commit or checkout_commit(a.official),
                "files": [
                    "src/model_admm_hard_statebn.py",
                    "src/architect.py",
                    "src/train_scheduled_hard_statebn.py",
                ],
            },
            "command": f"{command} --write {a.write}",
            "torch": torch.__version__,
            "case": asdict(case),
            "diffnas_vs_official": diffs,
            "official": want,
        }
        a.write.parent.mkdir(parents=True, exist_ok=True)
        a.write.write_text(dump_fixture(data))
        print(f"wrote {a.write}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
