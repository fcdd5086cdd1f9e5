"""Parity of the `drnas_nb201` preset with xiangning-chen/DrNAS (201-space, progressive).

Builds the official NAS-Bench-201 search network (201-space/search_model.py `TinyNetwork`,
species 'dirichlet', partial-channel cells of search_cells.py) and diffnas's for the
`drnas_nb201` preset on identical float64 weights, α, optimizer states and batches (the
inputs of xautodl_cases.py, whose NB201 parameter pairing this reuses), seeds torch's
generator alike on both sides (the same Dirichlet samples), and takes `steps` loop
iterations on each: the official loop body of 201-space/train_search_progressive.py
`train()` (Architect.step, then the weight step, whose clipping counts α, an nn.Parameter of
that network) and diffnas's `Searcher.search_step`. `--stage 2` takes them in the second
stage: K = 2 and every edge pruned to its 3 ops of largest α first (`model.pruning(3)`).

    python benchmarks/parity/drnas_nb201_ref.py --official /path/to/DrNAS [--stage 1|2]
        [--reg l2|kl] [--steps N] [--clip C] [--clear-alpha-grad]
        [--write tests/golden/drnas_nb201_stage2.json]

With the preset's clipping (5) the official norms stay below it on these inputs and the
steps are equal. `--clip 1` makes clipping act: then the clipped norm differs, because
diffnas's loop keeps the architecture step's α-gradient while the weight step's adds to it
(`search.grad_clip_alpha` counts both) where the official loop cleared it;
`--clear-alpha-grad` clears it on diffnas's side and the steps are equal again.

The official cells' BatchNorms are built without running statistics (its default keeps
them; training-mode steps never read them), so that they pair with diffnas's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import xautodl_cases as xc
from xautodl_ref import NB201_OPS, pair_nb201

SEED = 11


def _case(stage: int, reg: str) -> tuple[xc.Case, int | None]:
    overrides = [f"search.regularizers=[{{name: dirichlet_anchor, kind: {reg}, scale: 1.0e-3}}]"]
    if stage == 2:
        overrides += [
            "supernet.partial_channels=2",
            "search.schedule={name: progressive, stage_epochs: [50, 50], "
            "partial_channels: [2, 2], keep_ops: [5, 3], warmup_epochs: 10}",
        ]
        return xc.Case("drnas_nb201", overrides, channels=8, epoch=63, epochs=100), 3
    return xc.Case("drnas_nb201", overrides, channels=8, epoch=12, epochs=100), None


def diffnas_steps(
    case: xc.Case, keep: int | None, clear_alpha_grad: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """diffnas's loop steps; `clear_alpha_grad`: α's gradient is cleared after each
    architecture step, as the official loop's `architect.optimizer.zero_grad()` (diffnas has
    no option for it: its weight-step clipping then also counts the architecture step's)."""
    s = xc.build_searcher(case)
    inputs = xc.make_inputs(case, s)
    xc.load_inputs(s, inputs)
    if keep is not None:
        s.relaxation.keep_top_ops(s.arch, keep)  # type: ignore[attr-defined]
    s.val_stream = xc._FixedStream(inputs["val"])  # type: ignore[assignment]
    grads: list[dict[str, torch.Tensor]] = []
    arch_step = s.arch_step

    def recording_arch_step(*a: Any) -> None:
        arch_step(*a)
        grads.append({k: p.grad.detach().clone() for k, p in s.arch.alpha.items()})  # type: ignore[union-attr]
        if clear_alpha_grad:
            for p in s.arch.parameters():
                p.grad = None

    s.arch_step = recording_arch_step  # type: ignore[method-assign]
    torch.manual_seed(SEED)
    for batch in inputs["train"]:
        assert s.schedule.arch_step_due()
        s.search_step(batch)
        s.step += 1
    return {
        "alpha_grad": grads[-1],
        "alpha": {k: p.detach().clone() for k, p in s.arch.alpha.items()},
        "weights": {n: p.detach().clone() for n, p in s.model.named_parameters()},
        "buffers": xc.tracked_buffers(s.model),
    }, inputs


def official_steps(
    root: Path, case: xc.Case, keep: int | None, inputs: dict[str, Any]
) -> tuple[dict[str, Any], list[float]]:
    (architect,) = common.import_official(root, ["architect"])  # also root's utils.py
    sys.path.insert(0, str(root / "201-space"))
    (search_model,) = common.import_official(
        root / "201-space", ["cell_operations", "search_cells", "search_model"]
    )[2:]
    s = xc.build_searcher(case)  # the config and the parameter names
    cfg = s.config.search
    (anchor,) = cfg.regularizers
    criterion = nn.CrossEntropyLoss()
    model = search_model.TinyNetwork(
        C=case.channels,
        N=case.layers,
        max_nodes=4,
        num_classes=case.classes,
        criterion=criterion,
        search_space=NB201_OPS,
        affine=False,
        track_running_stats=False,
        k=s.config.supernet.partial_channels,
        species="dirichlet",
        reg_type=anchor.params["kind"],
        reg_scale=anchor.params["scale"],
    )
    alpha = model._parameters.pop("_arch_parameters")  # pair the weights without α
    pairs = pair_nb201(s.model, model)
    model.register_parameter("_arch_parameters", alpha)  # back: the clipping counts it
    (key,) = s.arch.alpha
    lr = s.w_opt.param_groups[0]["lr"]
    optimizer = torch.optim.SGD(
        model.get_weights(), lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    args = SimpleNamespace(
        momentum=cfg.w_momentum,
        weight_decay=cfg.w_weight_decay,
        arch_learning_rate=cfg.arch_lr,
        reg_type=anchor.params["kind"],
        reg_scale=anchor.params["scale"],
    )
    arch = architect.Architect(model, args)
    columns = [list(s.model.arch_specs[key].ops).index(o) for o in NB201_OPS]
    with torch.no_grad():
        for n, p in pairs.params.items():
            p.copy_(inputs["weights"][n])
        alpha.copy_(inputs["alpha"][key][:, columns])
    for n, p in pairs.params.items():
        if n in inputs["momentum"]:
            optimizer.state[p]["momentum_buffer"] = inputs["momentum"][n].clone()
    xc.set_adam_state(
        arch.optimizer, alpha, {t: v[:, columns] for t, v in inputs["adam"][key].items()}
    )
    if keep is not None:
        model.pruning(keep)

    decay = args.reg_scale if args.reg_type == "l2" else 0.0
    norms: list[float] = []
    grad = torch.zeros(0)
    torch.manual_seed(SEED)
    for (x, y), (xv, yv) in zip(inputs["train"], inputs["val"]):
        # the loop body of train_search_progressive.py train(), after the stage's warm-up
        model.train()
        before = alpha.detach().clone()
        arch.step(x, y, xv, yv, lr, optimizer, unrolled=False)
        grad = alpha.grad.detach() + decay * before  # what Adam steps with (l2: weight_decay)
        optimizer.zero_grad()
        arch.optimizer.zero_grad()
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)))
        optimizer.step()
        optimizer.zero_grad()
        arch.optimizer.zero_grad()

    def to_diffnas(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(t.shape[0], len(columns), dtype=t.dtype)
        out[:, columns] = t.detach()
        return out

    return {
        "alpha_grad": {key: to_diffnas(grad)},
        "alpha": {key: to_diffnas(alpha)},
        "weights": {n: p.detach().clone() for n, p in pairs.params.items()},
        "buffers": {n: b.detach().clone() for n, b in pairs.buffers.items()},
    }, norms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="xiangning-chen/DrNAS checkout")
    ap.add_argument("--stage", type=int, choices=[1, 2], default=1)
    ap.add_argument("--reg", choices=["l2", "kl"], default="l2")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--write", type=Path, help="store the official numbers as a golden fixture")
    ap.add_argument("--commit", help="the checkout's commit (default: git rev-parse HEAD)")
    ap.add_argument(
        "--clear-alpha-grad",
        action="store_true",
        help="clear α's gradient between the two steps on diffnas's side (as the official loop)",
    )
    ap.add_argument(
        "--clip", type=float, help="a smaller search.grad_clip, so that clipping acts (e.g. 1)"
    )
    a = ap.parse_args(argv)
    xc.set_float64()
    common.shim_old_torch()
    case, keep = _case(a.stage, a.reg)
    extra = [] if a.clip is None else [f"search.grad_clip={a.clip}"]
    case = dataclasses.replace(case, steps=a.steps, overrides=[*case.overrides, *extra])
    ours, inputs = diffnas_steps(case, keep, a.clear_alpha_grad)
    official, norms = official_steps(a.official, case, keep, inputs)
    diffs = xc.compare(ours, official)
    ok = all(v <= xc.TOLERANCE for v in diffs.values())
    cells = "  ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    print(
        f"drnas_nb201 stage {a.stage} {a.reg:<3} {a.steps} steps  max |diffnas − official|: "
        f"{cells}  {'OK' if ok else 'DIFFERS'}  (official clipped norms {norms})"
    )
    if a.write:
        command = (
            f"python benchmarks/parity/drnas_nb201_ref.py --official DRNAS_CHECKOUT --stage "
            f"{a.stage} --reg {a.reg} --steps {a.steps}"
            + ("" if a.clip is None else f" --clip {a.clip}")
            + f" --write {a.write}"
        )
        xc.write_fixture(
            a.write,
            {
                "reference": {
                    "repository": "xiangning-chen/DrNAS",
                    "commit": a.commit or common.checkout_commit(a.official),
                    "files": [
                        "utils.py",
                        "architect.py",
                        "201-space/search_model.py",
                        "201-space/search_cells.py",
                        "201-space/train_search_progressive.py",
                    ],
                },
                "command": command,
                "case": xc.case_dict(case),
                "keep_ops": keep,
                "official_clip_norms": norms,
                "diffnas_vs_official": diffs,
                "official": xc.summarize(case.seed, official, inputs["weights"]),
            },
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
