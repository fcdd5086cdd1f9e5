"""Parity of the `drnas` preset with xiangning-chen/DrNAS (darts space, CIFAR-10 search).

Builds the official search supernet (DARTS-space/model_search.py `Network`: Dirichlet op
weights with concentration elu(α) + 1, partial channels K, no `none`) and diffnas's for the
`drnas` preset on identical float64 weights, α, optimizer states and batches, seeds torch's
generator identically on both sides before each step (so both draw the same Dirichlet
samples), takes one search step on each (the official `Architect.step` of architect.py with
the l2 anchor as Adam's weight_decay, then the weight step of the loop body of
DARTS-space/train_search.py `train()`, as after the 10 warm-up epochs of a stage) and prints
the largest differences. `--stage 2` takes the step of the second stage: K = 4 and every edge
pruned to its 4 ops of largest α (the official `model.pruning(4)`), the mixed ops built at
that width. --write stores a golden fixture.

    python benchmarks/parity/drnas_ref.py --official /path/to/DrNAS [--stage 1|2]
        [--reg l2|kl] [--write tests/golden/drnas.json]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

# 12 channels: the partial-channel ops see 12/6 = 2 of them (4 and 8 in the reduction cells);
# 3 nodes per cell keep the golden test short
CASES = {
    1: common.Case(preset="drnas", channels=12, nodes=3, lr=0.08, epoch=10, sample_seed=5),
    2: common.Case(
        preset="drnas",
        # the supernet built at the second stage's K (the official code grows it there)
        overrides=[
            "supernet.partial_channels=4",
            "search.schedule={name: progressive, stage_epochs: [25, 25], "
            "partial_channels: [4, 4], keep_ops: [7, 4], warmup_epochs: 10}",
        ],
        channels=12,
        nodes=3,
        lr=0.05,
        epoch=35,
        sample_seed=7,
        prune_keep=4,
    ),
}


def official_step(
    root: Path, case: common.Case, s: Any, inputs: dict[str, Any]
) -> dict[str, common.Tensors]:
    (architect,) = common.import_official(root, ["architect"])  # also root's utils.py
    model_search, genotypes = common.import_official(
        root / "DARTS-space", ["model_search", "genotypes"]
    )
    ops = list(genotypes.PRIMITIVES)
    cfg = s.config.search
    (anchor,) = cfg.regularizers
    k = s.config.supernet.partial_channels
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(
        case.channels,
        case.classes,
        case.layers,
        criterion,
        steps=case.nodes,
        multiplier=case.nodes,
        k=k,
        reg_type=anchor.params["kind"],
        reg_scale=anchor.params["scale"],
    )
    optimizer = torch.optim.SGD(
        model.parameters(), case.lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    args = SimpleNamespace(
        momentum=cfg.w_momentum,
        weight_decay=cfg.w_weight_decay,
        arch_learning_rate=cfg.arch_lr,
        reg_type=anchor.params["kind"],
        reg_scale=anchor.params["scale"],
    )
    arch = architect.Architect(model, args)
    pairs = common.darts_param_pairs(s, model, ops)
    columns = common.alpha_columns(s.model.arch_specs["normal"].ops, ops)
    alphas = {"normal": model.alphas_normal, "reduce": model.alphas_reduce}
    common.load_official_inputs(s, inputs, pairs, alphas, columns, optimizer)
    common.official_adam_state(arch.optimizer, alphas, inputs, columns)
    if case.prune_keep is not None:
        model.pruning(case.prune_keep)

    (x, y), (xv, yv) = inputs["train"], inputs["val"]
    model.train()
    assert case.sample_seed is not None
    before = {k: a.detach().clone() for k, a in alphas.items()}
    torch.manual_seed(case.sample_seed)
    arch.step(x, y, xv, yv, case.lr, optimizer, unrolled=False)  # `if epoch >= 10:`
    n_ops = len(columns)
    # the gradient Adam steps with: with l2, .grad + reg_scale · α (Adam's weight_decay),
    # which diffnas's l2 anchor puts into α's gradient itself
    decay = args.reg_scale if args.reg_type == "l2" else 0.0
    grads = {
        k: common.scatter_columns(a.grad + decay * before[k], columns, n_ops)
        for k, a in alphas.items()
    }
    alpha = {k: common.scatter_columns(a, columns, n_ops) for k, a in alphas.items()}
    # the rest of the loop body of DARTS-space/train_search.py train()
    optimizer.zero_grad()
    arch.optimizer.zero_grad()
    torch.manual_seed(case.sample_seed + 1)
    logits = model(x)
    loss = criterion(logits, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return common.official_results(pairs, grads, alpha)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__, "xiangning-chen/DrNAS")
    ap.add_argument("--stage", type=int, choices=sorted(CASES), default=1)
    ap.add_argument(
        "--reg", choices=["l2", "kl"], default="l2", help="the anchor (official --reg_type)"
    )
    a = ap.parse_args(argv)
    case = CASES[a.stage]
    if a.reg == "kl":  # the official --reg_type kl with its default --reg_scale
        case = dataclasses.replace(
            case,
            overrides=[
                *case.overrides,
                "search.regularizers=[{name: dirichlet_anchor, kind: kl, scale: 1.0e-3}]",
            ],
        )
    ours, inputs, s = common.diffnas_side(case)
    settings = common.check_settings(case.preset, a.official / "DARTS-space" / "train_search.py")
    official = official_step(a.official, case, s, inputs)
    files = [
        "utils.py",
        "architect.py",
        "DARTS-space/model_search.py",
        "DARTS-space/train_search.py",
    ]
    command = (
        f"python benchmarks/parity/drnas_ref.py --official DRNAS_CHECKOUT --stage {a.stage} "
        f"--reg {a.reg}"
    )
    return common.finish(
        a, f"drnas stage {a.stage} {a.reg}", case, ours, official, inputs, settings,
        "xiangning-chen/DrNAS", files, command,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
