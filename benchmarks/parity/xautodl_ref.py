"""Parity of diffnas's NB201-protocol presets with XAutoDL (D-X-Y/AutoDL-Projects).

Runs the official code of a checkout next to diffnas on identical weights, α, optimizer
states, batches and Gumbel draws, in float64 on the CPU, and prints the largest difference:

    python benchmarks/parity/xautodl_ref.py --official PATH/AutoDL-Projects --preset P
        [--write tests/golden/P.json]

presets:
  darts_nb201    exps/NAS-Bench-201-algos/DARTS-V1.py `search_func` on TinyNetworkDarts
  gdas_nb201     exps/NAS-Bench-201-algos/GDAS.py `search_func` on TinyNetworkGDAS
  gdas_darts     GDAS.py `search_func` on NASNetworkGDAS (the darts-space GDAS), with the
                 structural differences of that network shimmed away (its BN+ReLU
                 before the pooling, its pooling ops without BN; docs/reproduction.md)
  nb201_network  cell_infers TinyNetwork vs diffnas's discrete network, a cell with a
                 disconnected node (train- and eval-mode logits)
  nb201_all      the same for all 15,625 cells (a harness run, not a fixture)

The search steps are the official `search_func` itself (per batch: weight step with its
clipping, then the architecture step) on a two-batch loader, and diffnas's
`Searcher.search_step`, twice. Compared after the two steps: α, ∇α, every paired weight, the BN running statistics, and (darts_nb201)
the eval-mode logits. Shims: `.cuda()` is the identity, torchvision and nas_201_api are
empty modules (imported for data loading and the benchmark API only), and `obtain_accuracy`
(logging only; its `.view` fails on current PyTorch) is replaced.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import re
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from xautodl_cases import (
    CASES,
    DISCONNECTED_CELL,
    REFERENCE,
    TOLERANCE,
    Case,
    Tensors,
    case_dict,
    compare,
    diffnas_network,
    diffnas_step,
    fed_exponentials,
    network_inputs,
    print_diffs,
    run_network,
    set_adam_state,
    set_float64,
    summarize,
    write_fixture,
)

NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
# diffnas darts-space op -> XAutoDL's name of the same op
DARTS_NAMES = {
    "none": "none",
    "max_pool_3x3": "max_pool_3x3",
    "avg_pool_3x3": "avg_pool_3x3",
    "skip_connect": "skip_connect",
    "sep_conv_3x3": "dua_sepc_3x3",
    "sep_conv_5x5": "dua_sepc_5x5",
    "dil_conv_3x3": "dil_sepc_3x3",
    "dil_conv_5x5": "dil_sepc_5x5",
}
MODELS = {
    "darts_nb201": "xautodl/models/cell_searchs/search_model_darts.py (TinyNetworkDarts)",
    "gdas_nb201": "xautodl/models/cell_searchs/search_model_gdas.py (TinyNetworkGDAS)",
    "gdas_darts": "xautodl/models/cell_searchs/search_model_gdas_nasnet.py (NASNetworkGDAS)",
}
SHIMS = {
    "gdas_darts": "structure shimmed to DARTS's supernet: lastact (BN+ReLU before the pooling) "
    "replaced by the identity, a batch-statistics BN (no affine) after each pooling op",
}
SCRIPTS = {"darts_nb201": "DARTS-V1", "gdas_nb201": "GDAS", "gdas_darts": "GDAS"}
CONFIGS = {"darts_nb201": "DARTS.config", "gdas_nb201": "GDAS.config", "gdas_darts": "GDAS.config"}


# =========================================================================== official code
def shim() -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "nas_201_api"):
        sys.modules.setdefault(name, types.ModuleType(name))
    tv = sys.modules["torchvision"]
    tv.datasets = sys.modules["torchvision.datasets"]  # type: ignore[attr-defined]
    tv.transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]
    sys.modules["nas_201_api"].NASBench201API = None  # type: ignore[attr-defined]


def load_script(root: Path, name: str) -> types.ModuleType:
    """An exps/NAS-Bench-201-algos script as a module (its `main` is not run)."""
    path = root / "exps" / "NAS-Bench-201-algos" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"xautodl_{name.replace('-', '_')}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def obtain_accuracy(output: torch.Tensor, target: torch.Tensor, topk: Any = (1,)) -> list:
        return [torch.zeros(1) for _ in topk]

    module.obtain_accuracy = obtain_accuracy  # type: ignore[attr-defined]
    return module


def _kind(m: nn.Module) -> type:
    """A layer's PyTorch class (the engine's BN subclass counts as nn.BatchNorm2d)."""
    return nn.BatchNorm2d if isinstance(m, nn.BatchNorm2d) else type(m)


class _Logger:
    def log(self, *_: Any) -> None:
        pass


def script_args(root: Path, name: str) -> dict[str, str]:
    """`--key value` pairs of scripts-search/NAS-Bench-201-algos/<name>.sh."""
    text = (root / "scripts-search" / "NAS-Bench-201-algos" / f"{name}.sh").read_text()
    return dict(re.findall(r"--(\w+) ([^\s\\]+)", text))


def official_commit(root: Path, given: str | None = None) -> str:
    if given:
        return given
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    return "unknown (not a git checkout: pass --commit)"


# =========================================================================== pairing
LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def _stateful(m: nn.Module) -> bool:
    """A layer with parameters or running statistics (a stateless BN pairs with nothing)."""
    if isinstance(m, nn.BatchNorm2d):
        return m.affine or m.track_running_stats
    return isinstance(m, LEAVES)


class Pairs:
    """diffnas parameter/buffer name -> the official tensor; official conv biases that feed a
    batch-statistics BN (no effect on any output; diffnas has none) are listed as inert."""

    def __init__(self, model: nn.Module, untracked_ok: bool = False) -> None:
        self.untracked_ok = untracked_ok  # a BN tracked on one side only: buffers unpaired
        self.names = {
            id(t): n for n, t in itertools.chain(model.named_parameters(), model.named_buffers())
        }
        self.params: dict[str, nn.Parameter] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.inert: list[torch.Tensor] = []

    def modules(self, d: nn.Module, o: nn.Module, where: str) -> None:
        dl = [m for m in d.modules() if _stateful(m)]
        ol = [m for m in o.modules() if _stateful(m)]
        # the engine's channels-last BN (kernels.BatchStatsBatchNorm2d) is an nn.BatchNorm2d
        if [_kind(m) for m in dl] != [_kind(m) for m in ol]:
            raise AssertionError(f"{where}: layers differ: {dl} vs {ol}")
        for a, b in zip(dl, ol):
            if a.weight is not None or b.weight is not None:
                self._pair(a.weight, b.weight, where, self.params)
            if a.bias is not None:
                self._pair(a.bias, b.bias, where, self.params)
            elif b.bias is not None:
                if not isinstance(a, nn.Conv2d):
                    raise AssertionError(f"{where}: official bias without a diffnas one: {b}")
                self.inert.append(b.bias)
            if isinstance(a, nn.BatchNorm2d):
                if a.track_running_stats != b.track_running_stats:
                    if self.untracked_ok:
                        continue
                    raise AssertionError(f"{where}: running statistics differ: {a} vs {b}")
                if a.track_running_stats:
                    self._pair(a.running_mean, b.running_mean, where, self.buffers)
                    self._pair(a.running_var, b.running_var, where, self.buffers)

    def _pair(self, a: Any, b: Any, where: str, into: dict[str, Any]) -> None:
        if a is None or b is None or a.shape != b.shape:
            raise AssertionError(f"{where}: {(a is None and 'None') or tuple(a.shape)} vs {b}")
        into[self.names[id(a)]] = b

    def check_complete(self, d: nn.Module, o: nn.Module, allowed: list[str]) -> None:
        missing = [n for n, _ in d.named_parameters() if n not in self.params]
        paired = {id(p) for p in self.params.values()} | {id(p) for p in self.inert}
        extra = [n for n, p in o.named_parameters() if id(p) not in paired]
        allowed = [*allowed, "arch_"]  # the official α live in the model
        extra = [n for n in extra if not any(n.startswith(a) for a in allowed)]
        if missing or extra:
            raise AssertionError(
                f"unpaired parameters: diffnas {missing[:4]}, official {extra[:4]}"
            )


def pair_nb201(s_model: Any, official: nn.Module) -> Pairs:
    from diffnas.spaces.nb201 import EDGES, ResNetBlock

    pairs = Pairs(s_model)
    pairs.modules(s_model.stem, official.stem, "stem")
    for i, (block, ocell) in enumerate(zip(s_model.blocks, official.cells)):  # type: ignore[arg-type]
        if isinstance(block, ResNetBlock):
            pairs.modules(block, ocell, f"block {i}")
            continue
        groups = block.source_ops()
        for row, (src, dst) in enumerate(EDGES):
            local = block.out_edges[src].index(row)
            d_edge = groups[src].edges[local]
            o_edge = ocell.edges[f"{dst}<-{src}"]
            for o, name in enumerate(groups[src].op_names):
                if name != "none":
                    pairs.modules(
                        d_edge[o], o_edge[NB201_OPS.index(name)], f"cell {i} {row} {name}"
                    )
    pairs.modules(s_model.lastact, official.lastact, "lastact")
    pairs.modules(s_model.classifier, official.classifier, "classifier")
    pairs.check_complete(s_model, official, [])
    return pairs


def pair_nasnet(s_model: Any, official: nn.Module, official_ops: list[str]) -> Pairs:
    pairs = Pairs(s_model, untracked_ok=True)  # the DARTS supernet's stem BN keeps no statistics
    pairs.modules(s_model.stem, official.stem, "stem")
    for i, (cell, ocell) in enumerate(zip(s_model.cells, official.cells)):  # type: ignore[arg-type]
        pairs.modules(cell.preprocess0, ocell.preprocess0, f"cell {i} preprocess0")
        pairs.modules(cell.preprocess1, ocell.preprocess1, f"cell {i} preprocess1")
        spec = s_model.arch_specs[s_model.keys[i]]
        groups = cell.dag.source_ops()
        for row, (src, dst) in enumerate(spec.edges):
            local = cell.dag.out_edges[src].index(row)
            d_edge = groups[src].edges[local]
            o_edge = ocell.edges[f"{dst - 2}<-{src}"]._ops
            for o, name in enumerate(spec.ops):
                if name != "none":
                    pairs.modules(
                        d_edge[o],
                        o_edge[official_ops.index(DARTS_NAMES[name])],
                        f"cell {i} {row} {name}",
                    )
    pairs.modules(s_model.classifier, official.classifier, "classifier")
    pairs.check_complete(s_model, official, ["lastact"])  # shimmed away (see below)
    return pairs


# =========================================================================== one search step
def official_step(case: Case, root: Path, inputs: dict[str, Any], s: Any) -> dict[str, Any]:
    """XAutoDL's own search step on the case's inputs; returns results and what it read."""
    from xautodl.config_utils import load_config
    from xautodl.models.cell_operations import DARTS_SPACE, POOLING
    from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts
    from xautodl.models.cell_searchs.search_model_gdas import TinyNetworkGDAS
    from xautodl.models.cell_searchs.search_model_gdas_nasnet import NASNetworkGDAS
    from xautodl.procedures import get_optim_scheduler

    name = case.preset if case.preset == "darts_nb201" else f"gdas_{case.space}"
    script = load_script(root, SCRIPTS[name])
    sh = script_args(root, SCRIPTS[name])
    config = load_config(
        root / "configs" / "nas-benchmark" / "algos" / CONFIGS[name],
        {"class_num": case.classes, "xshape": (1, 3, case.size, case.size), "epochs": case.epochs},
        None,
    )
    if name == "gdas_darts":
        model: Any = NASNetworkGDAS(
            case.channels, 2, 4, 4, 3, case.classes, DARTS_SPACE, False, False
        )
        official_ops = list(DARTS_SPACE)
        # the darts-space GDAS network differs from DARTS's supernet (which diffnas builds):
        # a BN+ReLU before the pooling, and no BN after the pooling ops; shimmed to DARTS's
        model.lastact = nn.Identity()

        def pool_bn(self: Any, x: torch.Tensor) -> torch.Tensor:
            y = self.op(x if self.preprocess is None else self.preprocess(x))
            return torch.nn.functional.batch_norm(y, None, None, training=True)

        POOLING.forward = pool_bn
        pairs = pair_nasnet(s.model, model, official_ops)
    else:
        cls = TinyNetworkDarts if name == "darts_nb201" else TinyNetworkGDAS
        model = cls(case.channels, case.layers, 4, case.classes, NB201_OPS, False, False)
        official_ops = NB201_OPS
        pairs = pair_nb201(s.model, model)
    model.train()

    keys = list(s.arch.alpha)
    spec_ops = s.model.arch_specs[keys[0]].ops
    diffnas_name = {v: k for k, v in DARTS_NAMES.items()} if name == "gdas_darts" else {}
    # the diffnas column of each official α column
    columns = [list(spec_ops).index(diffnas_name.get(o, o)) for o in official_ops]
    alphas = model.get_alphas()
    w_opt, w_scheduler, criterion = get_optim_scheduler(model.get_weights(), config)
    a_opt = torch.optim.Adam(
        alphas,
        lr=float(sh["arch_learning_rate"]),
        betas=(0.5, 0.999),
        weight_decay=float(sh["arch_weight_decay"]),
    )
    with torch.no_grad():
        for n, p in pairs.params.items():
            p.copy_(inputs["weights"][n])
        for k, a in zip(keys, alphas):
            a.copy_(inputs["alpha"][k][:, columns])
    for n, p in pairs.params.items():
        if n in inputs["momentum"]:
            w_opt.state[p]["momentum_buffer"] = inputs["momentum"][n].clone()
    for k, a in zip(keys, alphas):
        if k in inputs["adam"]:
            set_adam_state(a_opt, a, {t: v[:, columns] for t, v in inputs["adam"][k].items()})

    # what GDAS.py's / DARTS-V1.py's main loop does at the start of an epoch
    w_scheduler.update(case.epoch, 0.0)
    total = config.epochs + config.warmup
    tau = None
    if name != "darts_nb201":
        tau_max, tau_min = float(sh["tau_max"]), float(sh["tau_min"])
        tau = tau_max - (tau_max - tau_min) * case.epoch / (total - 1)
        model.set_tau(tau)
    loader = [(x, y, vx, vy) for (x, y), (vx, vy) in zip(inputs["train"], inputs["val"])]
    draws = [d[k][:, columns] for d in inputs["exponentials"] for k in keys] if tau else []
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(*a: Any, **k: Any) -> torch.Tensor:
        n = clip(*a, **k)
        norms.append(float(n))
        return n

    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        with fed_exponentials(draws):
            extra = [5.0] if name == "darts_nb201" else []  # DARTS-V1's --gradient_clip default
            script.search_func(
                loader, model, criterion, w_scheduler, w_opt, a_opt, "000", 10**9, _Logger(), *extra
            )
    finally:
        torch.nn.utils.clip_grad_norm_ = clip

    n_ops = len(spec_ops)

    def to_diffnas(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(t.shape[0], n_ops, dtype=t.dtype)
        out[:, columns] = t.detach()
        return out

    result: dict[str, Tensors] = {
        "alpha_grad": {k: to_diffnas(a.grad) for k, a in zip(keys, alphas)},
        "alpha": {k: to_diffnas(a) for k, a in zip(keys, alphas)},
        "weights": {n: p.detach().clone() for n, p in pairs.params.items()},
        "buffers": {n: b.detach().clone() for n, b in pairs.buffers.items()},
    }
    if name == "darts_nb201":
        model.eval()
        with torch.no_grad():
            result["eval_logits"] = {"val": model(inputs["val"][-1][0])[1]}
        model.train()
    settings = {
        "epochs": config.epochs,
        "w_lr": config.LR,
        "w_lr_min": config.eta_min,
        "w_momentum": config.momentum,
        "w_weight_decay": config.decay,
        "w_nesterov": bool(config.nesterov),
        "batch_size": config.batch_size,
        "arch_lr": float(sh["arch_learning_rate"]),
        "arch_weight_decay": float(sh["arch_weight_decay"]),
        "lr_this_epoch": w_opt.param_groups[0]["lr"],
        "tau_this_epoch": tau,
    }
    return {"result": result, "settings": settings, "clip_norm": norms, "inert": len(pairs.inert)}


def preset_settings(s: Any) -> dict[str, Any]:
    c = s.config.search
    out = {
        "epochs": None,  # the case sets the length
        "w_lr": c.w_lr,
        "w_lr_min": c.w_lr_min,
        "w_momentum": c.w_momentum,
        "w_weight_decay": c.w_weight_decay,
        "w_nesterov": c.w_nesterov,
        "arch_lr": c.arch_lr,
        "arch_weight_decay": c.arch_weight_decay,
        "lr_this_epoch": s.w_opt.param_groups[0]["lr"],
        "tau_this_epoch": getattr(s.relaxation, "tau", None),
    }
    return out


def run_step(key: str, root: Path, write: Path | None, command: str, commit: str | None) -> bool:
    case = CASES[key]
    diffnas, inputs, s = diffnas_step(case)
    before = {n: w.clone() for n, w in inputs["weights"].items()}
    off = official_step(case, root, inputs, s)
    official = off["result"]
    diffs = compare(diffnas, official)
    ok = print_diffs(key, diffs)
    mine = preset_settings(s)
    mismatched = {
        k: (mine[k], v)
        for k, v in off["settings"].items()
        if mine.get(k) is not None and not math.isclose(float(mine[k]), float(v))
    }
    print(f"  official settings {off['settings']}")
    print(f"  preset settings that differ (diffnas, official): {mismatched or 'none'}")
    print(
        f"  clip norms (official, incl. α and inert biases): {off['clip_norm']}; inert official conv biases: {off['inert']}"
    )
    if write is not None:
        write_fixture(
            write,
            {
                "reference": {
                    "repository": REFERENCE,
                    "commit": official_commit(root, commit),
                    "files": [
                        MODELS[key],
                        f"exps/NAS-Bench-201-algos/{SCRIPTS[key]}.py (search_func)",
                        f"configs/nas-benchmark/algos/{CONFIGS[key]}",
                        f"scripts-search/NAS-Bench-201-algos/{SCRIPTS[key]}.sh",
                    ],
                },
                "command": command,
                "shims": SHIMS.get(key, "none beyond CPU/imports (see the harness docstring)"),
                "case": case_dict(case),
                "official_settings": off["settings"],
                "official_clip_norm": off["clip_norm"],
                "diffnas_vs_official": diffs,
                "official": summarize(case.seed, official, before),
            },
        )
    return ok


# =========================================================================== discrete network
def official_network(arch: str, channels: int, layers: int, classes: int) -> nn.Module:
    from xautodl.models.cell_infers.tiny_network import TinyNetwork
    from xautodl.models.cell_searchs.genotypes import Structure

    return TinyNetwork(channels, layers, Structure.str2structure(arch), classes)


def network_pairs(d: nn.Module, o: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Parameters and buffers of the two discrete networks in module order, shapes checked."""

    def tensors(m: nn.Module) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for leaf in m.modules():
            if isinstance(leaf, LEAVES):
                out += [t for t in (leaf.weight, leaf.bias) if t is not None]
                if isinstance(leaf, nn.BatchNorm2d) and leaf.track_running_stats:
                    out += [leaf.running_mean, leaf.running_var]  # type: ignore[list-item]
        return out

    a, b = tensors(d), tensors(o)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise AssertionError("the discrete networks' layers differ")
    return list(zip(a, b))


def compare_network(arch: str, seed: int = 0, size: int = 8, batch: int = 4) -> dict[str, float]:
    d = diffnas_network(arch, seed=seed)
    o = official_network(arch, 4, 1, 10)
    with torch.no_grad():
        for a, b in network_pairs(d, o):
            b.copy_(a)
    x1, x2 = network_inputs(seed, size, batch)
    got, want = run_network(d, x1, x2), run_network(o, x1, x2)
    return {k: float((got[k] - want[k]).abs().max()) for k in want}


def run_network_fixture(root: Path, write: Path | None, command: str, commit: str | None) -> bool:
    diffs = compare_network(DISCONNECTED_CELL)
    ok = print_diffs("nb201_network", diffs)
    if write is not None:
        o = official_network(DISCONNECTED_CELL, 4, 1, 10)
        d = diffnas_network(DISCONNECTED_CELL)
        with torch.no_grad():
            for a, b in network_pairs(d, o):
                b.copy_(a)
        logits = run_network(o, *network_inputs(0, 8, 4))
        write_fixture(
            write,
            {
                "reference": {
                    "repository": REFERENCE,
                    "commit": official_commit(root),
                    "files": [
                        "xautodl/models/cell_infers/tiny_network.py",
                        "xautodl/models/cell_infers/cells.py",
                    ],
                },
                "command": command,
                "cell": DISCONNECTED_CELL,
                "sizes": {
                    "channels": 4,
                    "layers": 1,
                    "classes": 10,
                    "seed": 0,
                    "size": 8,
                    "batch": 4,
                },
                "diffnas_vs_official": diffs,
                "official": {k: v.tolist() for k, v in logits.items()},
            },
        )
    return ok


def run_all_cells() -> bool:
    from diffnas.spaces.nb201 import EDGES

    ops = NB201_OPS
    start, bad, worst = time.monotonic(), [], 0.0
    for i, choice in enumerate(itertools.product(ops, repeat=len(EDGES))):
        by_edge = dict(zip(EDGES, choice))
        arch = "+".join(
            "|" + "|".join(f"{by_edge[(src, dst)]}~{src}" for src in range(dst)) + "|"
            for dst in range(1, 4)
        )
        diffs = compare_network(arch, seed=i % 7)
        worst = max(worst, *diffs.values())
        if max(diffs.values()) > TOLERANCE:
            bad.append(arch)
        if (i + 1) % 1000 == 0:
            print(
                f"  {i + 1} cells, {len(bad)} differ, {time.monotonic() - start:.0f} s", flush=True
            )
    n = 5 ** len(EDGES)
    print(
        f"nb201_all: {n - len(bad)} of {n} cells match (train and eval logits, ≤ {TOLERANCE:g}); largest difference {worst:.2e}"
    )
    for arch in bad[:10]:
        print(f"  differs: {arch}")
    return not bad


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official", type=Path, required=True, help="AutoDL-Projects checkout")
    parser.add_argument(
        "--preset",
        required=True,
        choices=[*CASES, "nb201_network", "nb201_all"],
        help="what to compare",
    )
    parser.add_argument("--write", type=Path, help="write the fixture (tests/golden/<preset>.json)")
    parser.add_argument("--commit", help="the checkout's commit, when it is not a git checkout")
    args = parser.parse_args()
    set_float64()
    shim()
    root = args.official.resolve()
    if not (root / "xautodl").is_dir():
        raise SystemExit(f"{root}: not an AutoDL-Projects checkout (no xautodl/ inside)")
    sys.path.insert(0, str(root))
    command = (
        f"python benchmarks/parity/xautodl_ref.py --official AutoDL-Projects --preset {args.preset}"
    )
    if args.write is not None:
        command += f" --write {args.write}"
    if args.preset in CASES:
        ok = run_step(args.preset, root, args.write, command, args.commit)
    elif args.preset == "nb201_network":
        ok = run_network_fixture(root, args.write, command, args.commit)
    else:
        ok = run_all_cells()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
