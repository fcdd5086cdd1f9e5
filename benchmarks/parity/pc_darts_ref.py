"""Parity of the `pc_darts` preset with yuhuixu1993/PC-DARTS (CIFAR-10 search).

Builds the official search supernet (model_search.py `Network`: partial channels K=4, edge
normalization β) and diffnas's for the `pc_darts` preset on identical float64 weights, α, β,
optimizer states and batches, takes one search step on each (the official `Architect.step` of
architect.py, then the weight step of the loop body of train_search.py `train()`, as after
the 15 warm-up epochs) and prints the largest differences. --write stores a golden fixture.

    python benchmarks/parity/pc_darts_ref.py --official /path/to/PC-DARTS
        [--write tests/golden/pc_darts.json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

# 8 channels: the partial-channel ops see 8/4 = 2 of them (16/4 in the reduction cells)
CASE = common.Case(preset="pc_darts", channels=8, lr=0.08, epoch=20)


def official_step(
    root: Path, case: common.Case, s: Any, inputs: dict[str, Any]
) -> dict[str, common.Tensors]:
    model_search, architect, genotypes = common.import_official(
        root, ["model_search", "architect", "genotypes"]
    )
    ops = list(genotypes.PRIMITIVES)
    cfg = s.config.search
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(case.channels, case.classes, case.layers, criterion)
    optimizer = torch.optim.SGD(
        model.parameters(), case.lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    args = SimpleNamespace(
        momentum=cfg.w_momentum,
        weight_decay=cfg.w_weight_decay,
        arch_learning_rate=cfg.arch_lr,
        arch_weight_decay=cfg.arch_weight_decay,
    )
    arch = architect.Architect(model, args)
    pairs = common.darts_param_pairs(s, model, ops)
    columns = common.alpha_columns(s.model.arch_specs["normal"].ops, ops)
    alphas = {"normal": model.alphas_normal, "reduce": model.alphas_reduce}
    betas = {"normal": model.betas_normal, "reduce": model.betas_reduce}
    common.load_official_inputs(s, inputs, pairs, alphas, columns, optimizer, betas)
    params = {**alphas, **{"beta:" + k: b for k, b in betas.items()}}
    common.official_adam_state(arch.optimizer, params, inputs, columns)

    (x, y), (xv, yv) = inputs["train"], inputs["val"]
    model.train()
    arch.step(x, y, xv, yv, case.lr, optimizer, unrolled=False)  # `if epoch>=15:`
    n_ops = len(columns)
    grads = {k: common.scatter_columns(a.grad, columns, n_ops) for k, a in alphas.items()}
    alpha = {k: common.scatter_columns(a, columns, n_ops) for k, a in alphas.items()}
    grads.update({"beta:" + k: b.grad.detach().clone() for k, b in betas.items()})
    alpha.update({"beta:" + k: b.detach().clone() for k, b in betas.items()})
    # the rest of the loop body of train_search.py train()
    optimizer.zero_grad()
    logits = model(x)
    loss = criterion(logits, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return common.official_results(pairs, grads, alpha)


def main(argv: list[str] | None = None) -> int:
    a = common.parser(__doc__, "yuhuixu1993/PC-DARTS").parse_args(argv)
    ours, inputs, s = common.diffnas_side(CASE)
    settings = common.check_settings(CASE.preset, a.official / "train_search.py")
    official = official_step(a.official, CASE, s, inputs)
    files = ["model_search.py", "architect.py", "train_search.py"]
    command = "python benchmarks/parity/pc_darts_ref.py --official PC_DARTS_CHECKOUT"
    return common.finish(
        a, "pc_darts", CASE, ours, official, inputs, settings, "yuhuixu1993/PC-DARTS", files,
        command,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
