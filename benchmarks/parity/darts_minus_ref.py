"""Parity of the `darts_minus` preset with Meituan-AutoML/DARTS- (darts space 's5').

Builds the official search supernet (src/search/model_search.py `Network` with the 's5' op
set of src/spaces.py and `--auxiliary_skip`: each `MixedOp` adds `auxiliary_op(x) · β`,
identity or, on a stride-2 edge, a `FactorizedReduce` with its own weights) and diffnas's
for the preset on identical float64 weights (the skips' included), α, optimizer states and
batches; sets β as the official `DecayScheduler` does at the case's epoch (`--decay linear
--skip_beta 1`) and as diffnas's loop does; takes one search step on each (the official
`Architect.step`, first order, then the weight step of the loop body of
src/search/train_search.py `train()`) and prints the largest differences.

The official modules read their options from `src/search/args.py`, which parses the command
line and creates an experiment directory when imported: the harness imports them with the
search command's arguments and a temporary `--save` directory.

    python benchmarks/parity/darts_minus_ref.py --official /path/to/DARTS-
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CASE = common.Case(preset="darts_minus", lr=0.02, epoch=7)


def official_step(
    root: Path, case: common.Case, s: Any, inputs: dict[str, Any]
) -> dict[str, common.Tensors]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = sys.argv
        sys.argv = [
            "train_search.py",
            "--space", "s5",
            "--auxiliary_skip",
            "--skip_beta", "1",
            "--decay", "linear",
            "--disable_cuda",
            "--save", tmp,
            "--layers", str(case.layers),
            "--init_channels", str(case.channels),
            "--nodes", str(case.nodes),
        ]  # fmt: skip
        try:
            args_mod, model_search, spaces, architect = common.import_official(
                root,
                [
                    "src.search.args",
                    "src.search.model_search",
                    "src.spaces",
                    "src.search.architect",
                ],
            )
        finally:
            sys.argv = argv
    args = args_mod.args
    args_mod.beta_decay_scheduler.step(case.epoch)
    print(f"β at epoch {case.epoch}: official {args_mod.beta_decay_scheduler.decay_rate}")
    primitives = spaces.spaces_dict["s5"]
    ops = list(primitives["primitives_normal"][0])
    cfg = s.config.search
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(
        case.channels, case.classes, case.layers, criterion, primitives, steps=case.nodes, args=args
    )
    optimizer = torch.optim.SGD(
        model.parameters(), case.lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    arch = architect.Architect(model, args)
    pairs = common.darts_param_pairs(s, model, ops)
    columns = common.alpha_columns(s.model.arch_specs["normal"].ops, ops)
    alphas = {"normal": model.alphas_normal, "reduce": model.alphas_reduce}
    common.load_official_inputs(s, inputs, pairs, alphas, columns, optimizer)
    common.official_adam_state(arch.optimizer, alphas, inputs, columns)

    (x, y), (xv, yv) = inputs["train"], inputs["val"]
    model.train()
    arch.step(x, y, xv, yv, case.lr, optimizer, unrolled=False)
    n_ops = len(columns)
    grads = {k: common.scatter_columns(a.grad, columns, n_ops) for k, a in alphas.items()}
    alpha = {k: common.scatter_columns(a, columns, n_ops) for k, a in alphas.items()}
    # the rest of the loop body of src/search/train_search.py train()
    optimizer.zero_grad()
    logits = model(x)
    loss = criterion(logits, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return common.official_results(pairs, grads, alpha)


def main(argv: list[str] | None = None) -> int:
    a = common.parser(__doc__, "DARTS-").parse_args(argv)
    ours, inputs, s = common.diffnas_side(CASE)
    print(f"β at epoch {CASE.epoch}: diffnas {s.model.cells[0].dag.aux_beta}")
    settings = common.check_settings(CASE.preset, a.official / "src" / "search" / "args.py")
    official = official_step(a.official, CASE, s, inputs)
    files = [
        "src/search/model_search.py",
        "src/search/args.py",
        "src/utils.py",
        "src/spaces.py",
        "src/search/architect.py",
        "src/search/train_search.py",
    ]
    command = "python benchmarks/parity/darts_minus_ref.py --official DARTS_MINUS_CHECKOUT"
    return common.finish(
        a, "darts_minus", CASE, ours, official, inputs, settings, "Meituan-AutoML/DARTS-",
        files, command,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
