"""Parity of the `beta_darts` preset with Sunshine-Ye/Beta-DARTS (darts space, sota/cnn).

Builds the official darts-space search supernet (sota/cnn/model_search.py `Network` with the
's5' op set of sota/cnn/spaces.py) and diffnas's for the `beta_darts` preset on identical
float64 weights, α, optimizer states and batches, takes one search step on each (the
official `Architect.step` of optimizers/darts/architect.py with its beta-decay loss
`mlc_loss`, then the weight step of the loop body of sota/cnn/train_search.py `train()`
without α perturbation) and prints the largest differences. --write stores a golden fixture.

The official darts-space search does not run as published: sota/cnn/train_search.py calls
`architect.step(...)` without the `epoch` argument the Architect requires, and `mlc_loss`
passes the list of the two α tensors to `torch.logsumexp`, which takes one tensor. The
harness calls `step` with the epoch and gives `mlc_loss` the two α concatenated (the mean
over all 28 edges, what the NB201 code computes for its single α); it prints the error the
unshimmed call raises.

    python benchmarks/parity/beta_darts_ref.py --official /path/to/Beta-DARTS
        [--write tests/golden/beta_darts.json]
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

CASE = common.Case(preset="beta_darts", lr=0.02, epoch=7)


def official_step(
    root: Path, case: common.Case, s: Any, inputs: dict[str, Any]
) -> dict[str, common.Tensors]:
    model_search, spaces, architect = common.import_official(
        root, ["sota.cnn.model_search", "sota.cnn.spaces", "optimizers.darts.architect"]
    )
    primitives = spaces.spaces_dict["s5"]
    ops = list(primitives["primitives_normal"][0])
    cfg = s.config.search
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(case.channels, case.classes, case.layers, criterion, primitives)
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
    try:
        arch.mlc_loss(model._arch_parameters)
    except TypeError as exc:
        print(f"official mlc_loss on the darts-space α list: TypeError: {exc}")
    mlc_loss = architect.Architect.mlc_loss

    def mlc_loss_shim(self: Any, arch_param: Any) -> torch.Tensor:
        if isinstance(arch_param, list):
            arch_param = torch.cat(arch_param, dim=0)
        return mlc_loss(self, arch_param)

    architect.Architect.mlc_loss = mlc_loss_shim
    pairs = common.darts_param_pairs(s, model, ops)
    columns = common.alpha_columns(s.model.arch_specs["normal"].ops, ops)
    alphas = {"normal": model.alphas_normal, "reduce": model.alphas_reduce}
    common.load_official_inputs(s, inputs, pairs, alphas, columns, optimizer)
    common.official_adam_state(arch.optimizer, alphas, inputs, columns)

    (x, y), (xv, yv) = inputs["train"], inputs["val"]
    model.train()
    arch.step(x, y, xv, yv, case.lr, optimizer, case.epoch, unrolled=False)
    n_ops = len(columns)
    grads = {k: common.scatter_columns(a.grad, columns, n_ops) for k, a in alphas.items()}
    alpha = {k: common.scatter_columns(a, columns, n_ops) for k, a in alphas.items()}
    # the rest of the loop body of sota/cnn/train_search.py train(), --perturb_alpha none
    optimizer.zero_grad()
    arch.optimizer.zero_grad()
    model.softmax_arch_parameters()
    logits = model(x, updateType="weight")
    loss = criterion(logits, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    model.restore_arch_parameters()
    return common.official_results(pairs, grads, alpha)


def main(argv: list[str] | None = None) -> int:
    a = common.parser(__doc__, "Sunshine-Ye/Beta-DARTS").parse_args(argv)
    ours, inputs, s = common.diffnas_side(CASE)
    settings = common.check_settings(CASE.preset, a.official / "sota" / "cnn" / "train_search.py")
    print(
        f"λ at epoch {CASE.epoch}: official 50·epoch/100 = {50 * CASE.epoch / 100}, "
        f"diffnas {s.regularizers[0].params.lambda_per_epoch} · {CASE.epoch}"
    )
    official = official_step(a.official, CASE, s, inputs)
    files = [
        "sota/cnn/model_search.py",
        "sota/cnn/spaces.py",
        "optimizers/darts/architect.py",
        "sota/cnn/train_search.py",
    ]
    command = "python benchmarks/parity/beta_darts_ref.py --official BETA_DARTS_CHECKOUT"
    return common.finish(
        a, "beta_darts", CASE, ours, official, inputs, settings, "Sunshine-Ye/Beta-DARTS",
        files, command,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
