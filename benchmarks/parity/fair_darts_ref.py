"""Parity of the `fair_darts` preset with xiaomi-automl/FairDARTS (fairdarts/, CIFAR-10 search).

Builds the official search supernet (fairdarts/model_search.py `Network`: sigmoid op weights,
no `none` op) and diffnas's for the `fair_darts` preset on identical float64 weights, α,
optimizer states and batches, takes one search step on each (the official `Architect.step` of
fairdarts/architect.py with the zero-one loss of separate_loss.py `ConvSeparateLoss`, then the
weight step of the loop body of fairdarts/train_search.py `train()`) and prints the largest
differences. --write stores a golden fixture.

    python benchmarks/parity/fair_darts_ref.py --official /path/to/FairDARTS
        [--write tests/golden/fair_darts.json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CASE = common.Case(preset="fair_darts", lr=0.004, epoch=5)


def official_step(
    root: Path, case: common.Case, s: Any, inputs: dict[str, Any]
) -> dict[str, common.Tensors]:
    model_search, architect, genotypes, separate_loss = common.import_official(
        root, ["model_search", "architect", "genotypes", "separate_loss"]
    )
    ops = list(genotypes.PRIMITIVES)
    cfg = s.config.search
    weight = s.regularizers[0].params.weight  # the zero-one loss weight (--aux_loss_weight)
    criterion = separate_loss.ConvSeparateLoss(weight=weight)  # --sep_loss l2 (the default)
    model = model_search.Network(case.channels, case.classes, case.layers, criterion)
    optimizer = torch.optim.SGD(
        model.parameters(), case.lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    args = SimpleNamespace(
        momentum=cfg.w_momentum,
        weight_decay=cfg.w_weight_decay,
        arch_learning_rate=cfg.arch_lr,
        arch_lr_gamma=cfg.arch_betas[0],
        arch_weight_decay=cfg.arch_weight_decay,
    )
    arch = architect.Architect(model, args)
    pairs = common.darts_param_pairs(s, model, ops)
    columns = common.alpha_columns(s.model.arch_specs["normal"].ops, ops)
    alphas = {"normal": model.alphas_normal, "reduce": model.alphas_reduce}
    common.load_official_inputs(s, inputs, pairs, alphas, columns, optimizer)
    common.official_adam_state(arch.optimizer, alphas, inputs, columns)

    (x, y), (xv, yv) = inputs["train"], inputs["val"]
    model.train()
    arch.step(xv, yv)  # bi-level (no --single_level)
    n_ops = len(columns)
    grads = {k: common.scatter_columns(a.grad, columns, n_ops) for k, a in alphas.items()}
    alpha = {k: common.scatter_columns(a, columns, n_ops) for k, a in alphas.items()}
    # the rest of the loop body of fairdarts/train_search.py train()
    optimizer.zero_grad()
    logits = model(x)
    aux_input = torch.cat([F.sigmoid(model.alphas_normal), F.sigmoid(model.alphas_reduce)], dim=0)
    loss, _, _ = criterion(logits, y, aux_input)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return common.official_results(pairs, grads, alpha)


def main(argv: list[str] | None = None) -> int:
    a = common.parser(__doc__, "xiaomi-automl/FairDARTS").parse_args(argv)
    root = a.official / "fairdarts"
    ours, inputs, s = common.diffnas_side(CASE)
    settings = common.check_settings(
        CASE.preset, root / "train_search.py", {"search.arch_betas[0]": "arch_lr_gamma"}
    )
    print(
        f"zero-one weight {s.regularizers[0].params.weight}, official --aux_loss_weight default "
        f"{common.argparse_defaults(root / 'train_search.py')['aux_loss_weight']}"
    )
    official = official_step(root, CASE, s, inputs)
    files = [
        "fairdarts/model_search.py",
        "fairdarts/architect.py",
        "fairdarts/separate_loss.py",
        "fairdarts/train_search.py",
    ]
    command = "python benchmarks/parity/fair_darts_ref.py --official FAIRDARTS_CHECKOUT"
    return common.finish(
        a, "fair_darts", CASE, ours, official, inputs, settings, "xiaomi-automl/FairDARTS",
        files, command,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
