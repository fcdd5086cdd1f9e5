"""Parity of the `sdarts_rs` / `sdarts_adv` presets with xiangning-chen/SmoothDARTS (sota/cnn).

Builds the official darts-space search supernet (sota/cnn/model_search.py `Network` with the
's5' op set of sota/cnn/spaces.py) and diffnas's for the preset on identical float64
weights, α, optimizer states and batches, and takes one search step on each: the official
`Architect.step` (optimizers/darts/architect.py, first order), then the loop body of
sota/cnn/train_search.py `train()`: softmax_arch_parameters, the perturbation
(attacker/perturb.py `Random_alpha` or `Linf_PGD_alpha`) at the ε of the case's epoch, the
weight step, restore_arch_parameters. Both sides draw their uniform noise from the same
torch seed, set just before the weight step. Prints the largest differences.

`Linf_PGD_alpha` runs its passes in eval mode, where the official BatchNorm layers normalize
with their running statistics; diffnas's supernet keeps none. For `sdarts_adv` the harness
therefore builds the official BatchNorm layers without running statistics
(track_running_stats=False: eval mode then normalizes with the batch's, as diffnas does) and
says so; with --official-bn it keeps them and shows the size of that difference.

    python benchmarks/parity/sdarts_ref.py --official /path/to/SmoothDARTS --preset sdarts_rs
        [--official-bn] [--steps N] [--write tests/golden/sdarts_rs.json]

Only sdarts_rs has a golden fixture (the attack's passes cost CI too much time); --steps N
compares sdarts_adv with N PGD steps on both sides (the preset's 7 by default).
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


def case_for(preset: str, steps: int = 7) -> common.Case:
    """The comparison; `steps`: PGD steps of sdarts_adv (the preset's 7 unless given)."""
    overrides = (
        [f"search.regularizers=[{{name: sdarts_adv, steps: {steps}}}]"] if steps != 7 else []
    )
    return common.Case(preset=preset, overrides=overrides, lr=0.02, epoch=7, noise_seed=1234)


def official_step(
    root: Path, case: common.Case, s: Any, inputs: dict[str, Any], official_bn: bool
) -> dict[str, common.Tensors]:
    model_search, spaces, architect, perturb = common.import_official(
        root,
        [
            "sota.cnn.model_search",
            "sota.cnn.spaces",
            "optimizers.darts.architect",
            "attacker.perturb",
        ],
    )
    primitives = spaces.spaces_dict["s5"]
    ops = list(primitives["primitives_normal"][0])
    cfg = s.config.search
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(case.channels, case.classes, case.layers, criterion, primitives)
    if case.preset == "sdarts_adv" and not official_bn:
        for m in model.modules():  # eval-mode passes then use batch statistics (see above)
            if isinstance(m, nn.BatchNorm2d):
                m.track_running_stats = False
                m.running_mean = m.running_var = m.num_batches_tracked = None
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
    assert columns == list(range(len(ops))), "the noise is drawn per column: orders must agree"
    alphas = {"normal": model.alphas_normal, "reduce": model.alphas_reduce}
    common.load_official_inputs(s, inputs, pairs, alphas, columns, optimizer)
    common.official_adam_state(arch.optimizer, alphas, inputs, columns)

    (x, y), (xv, yv) = inputs["train"], inputs["val"]
    model.train()
    arch.step(x, y, xv, yv, case.lr, optimizer, unrolled=False)
    n_ops = len(columns)
    grads = {k: common.scatter_columns(a.grad, columns, n_ops) for k, a in alphas.items()}
    alpha = {k: common.scatter_columns(a, columns, n_ops) for k, a in alphas.items()}
    # the rest of the loop body of sota/cnn/train_search.py train()
    epochs = 50  # the script's default (the preset's)
    epsilon_alpha = 0.03 + (0.3 - 0.03) * case.epoch / epochs
    if case.preset == "sdarts_adv":
        steps = s.regularizers[0].params.steps

        def perturb_alpha(model: Any, x: Any, y: Any, eps: float) -> None:
            perturb.Linf_PGD_alpha(model, x, y, eps, steps=steps)

    else:
        perturb_alpha = perturb.Random_alpha
    optimizer.zero_grad()
    arch.optimizer.zero_grad()
    model.softmax_arch_parameters()
    assert case.noise_seed is not None
    torch.manual_seed(case.noise_seed)  # as diffnas's side, just before the weight step
    perturb_alpha(model, x, y, epsilon_alpha)
    optimizer.zero_grad()
    arch.optimizer.zero_grad()
    logits = model(x, updateType="weight")
    loss = criterion(logits, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    model.restore_arch_parameters()
    return common.official_results(pairs, grads, alpha)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__, "SmoothDARTS")
    ap.add_argument("--preset", choices=["sdarts_rs", "sdarts_adv"], default="sdarts_rs")
    ap.add_argument(
        "--official-bn",
        action="store_true",
        help="sdarts_adv: keep the official BatchNorm running statistics (eval-mode attack)",
    )
    ap.add_argument("--steps", type=int, default=7, help="sdarts_adv: PGD steps (preset: 7)")
    a = ap.parse_args(argv)
    if a.write and a.official_bn:
        ap.error("--write stores the comparison without --official-bn")
    common.shim_old_torch()
    # optimizers/darts/utils.py subclasses torchvision's VisionDataset (data loading only)
    sys.modules["torchvision.datasets"].VisionDataset = object  # type: ignore[attr-defined]
    case = case_for(a.preset, a.steps)
    ours, inputs, s = common.diffnas_side(case)
    settings = common.check_settings(case.preset, a.official / "sota" / "cnn" / "train_search.py")
    print(f"ε at epoch {case.epoch}: {s.regularizers[0].epsilon_at(case.epoch, s.epochs)}")
    official = official_step(a.official, case, s, inputs, a.official_bn)
    bn = " (official BN running statistics)" if a.official_bn else ""
    files = [
        "sota/cnn/model_search.py",
        "sota/cnn/spaces.py",
        "optimizers/darts/architect.py",
        "attacker/perturb.py",
        "attacker/linf_sgd.py",
        "sota/cnn/train_search.py",
    ]
    command = (
        f"python benchmarks/parity/sdarts_ref.py --official SMOOTHDARTS_CHECKOUT "
        f"--preset {a.preset} --steps {a.steps}"
    )
    return common.finish(
        a, a.preset + bn, case, ours, official, inputs, settings, "xiangning-chen/SmoothDARTS",
        files, command,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
