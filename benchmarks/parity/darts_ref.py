"""Parity of the `darts` preset (first and second order) with quark0/darts (cnn/).

Builds the official search supernet (cnn/model_search.py `Network`) and diffnas's for the
`darts` preset on identical float64 weights, α, optimizer states and batches, takes one search
step on each (the official `Architect.step` of cnn/architect.py, then the weight step of the
loop body of cnn/train_search.py `train()`) and prints the largest differences of α-gradient,
α and weights. With --write, stores the official numbers as a golden fixture.

    python benchmarks/parity/darts_ref.py --official /path/to/darts [--order 2]
        [--write tests/golden/darts_2nd.json]
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CASES = {
    1: common.Case(preset="darts", lr=0.02, epoch=3),
    2: common.Case(preset="darts", overrides=["search.updater=second_order"], lr=0.02, epoch=3),
}


def official_step(
    root: Path, case: common.Case, s: Any, inputs: dict[str, Any], unrolled: bool
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
    common.load_official_inputs(s, inputs, pairs, alphas, columns, optimizer)
    common.official_adam_state(arch.optimizer, alphas, inputs, columns)

    (x, y), (xv, yv) = inputs["train"], inputs["val"]
    model.train()
    arch.step(x, y, xv, yv, case.lr, optimizer, unrolled=unrolled)
    n_ops = len(columns)
    grads = {k: common.scatter_columns(a.grad, columns, n_ops) for k, a in alphas.items()}
    alpha = {k: common.scatter_columns(a, columns, n_ops) for k, a in alphas.items()}
    # the rest of the loop body of train_search.py train()
    optimizer.zero_grad()
    logits = model(x)
    loss = criterion(logits, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return common.official_results(pairs, grads, alpha)


def cosine(a: common.Tensors, b: common.Tensors) -> float:
    va = torch.cat([t.flatten() for t in a.values()])
    vb = torch.cat([t.flatten() for t in b.values()])
    return float(va @ vb / (va.norm() * vb.norm()))


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__, "quark0/darts")
    ap.add_argument("--order", type=int, choices=(1, 2), default=1)
    a = ap.parse_args(argv)
    case = CASES[a.order]
    root = a.official / "cnn"
    ours, inputs, s = common.diffnas_side(case)
    settings = common.check_settings(case.preset, root / "train_search.py")
    official = official_step(root, case, s, inputs, unrolled=a.order == 2)
    if a.order == 2:  # what the paper's plain virtual step would give instead
        plain = common.Case(
            **{
                **vars(case),
                "overrides": [
                    *case.overrides,
                    "search.updater={name: second_order, virtual_step: plain}",
                ],
            }
        )
        alt, _ = common.diffnas_step(plain)
        print(
            f"virtual_step=plain instead: α-gradient cosine to the official "
            f"{cosine(alt['alpha_grad'], official['alpha_grad']):.4f}, max diff "
            f"{common.compare_full(alt, official)['alpha_grad']:.2e}"
        )
    files = ["cnn/model_search.py", "cnn/architect.py", "cnn/train_search.py"]
    command = "python benchmarks/parity/darts_ref.py " + " ".join(
        shlex.quote(x) for x in ["--official", "DARTS_CHECKOUT", "--order", str(a.order)]
    )
    return common.finish(
        a, f"darts order {a.order}", case, ours, official, inputs, settings, "quark0/darts",
        files, command,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
