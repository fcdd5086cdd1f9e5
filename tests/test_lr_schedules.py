"""Each paper preset's weight learning rate per epoch against the schedule its official
script produces, computed by PyTorch's own CosineAnnealingLR driven the way that script
drives it (where it calls `scheduler.step()`, and on which PyTorch)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from diffnas.config import load_config
from diffnas.search import Searcher


def _official(pattern: str, lr: float, lr_min: float, epochs: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(epochs), eta_min=lr_min)
    out = []
    # PyTorch warns that a step before optimizer.step() skips the schedule's first value:
    # that skip is what the step-first scripts did
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for epoch in range(epochs):
            if pattern == "step_first":  # `scheduler.step()` at the epoch's start, torch >= 1.1
                sched.step()
            elif pattern == "step_epoch":  # `scheduler.step(epoch)`: the closed form at `epoch`
                sched.step(epoch)
            out.append(opt.param_groups[0]["lr"])
            if pattern in ("step_last", "step_first_torch03"):
                # DrNAS steps after the epoch; PyTorch 0.3-1.0 left `last_epoch` at -1 after
                # the constructor, so DARTS's step-first loop trained epoch e at value e too
                sched.step()
    return out


# (preset, how its official script drives the scheduler, and why)
CASES = [
    ("darts", "step_first_torch03"),  # darts/cnn/train_search.py, PyTorch 0.3.1 (README)
    ("pc_darts", "step_first_torch03"),  # main branch: PyTorch 0.3.1 (README)
    ("beta_darts", "step_first"),  # nasbench201/train_search.py imports torch.utils.tensorboard
    ("sdarts_rs", "step_first"),  # same script family, torch.utils.tensorboard
    ("sdarts_adv", "step_first"),
    ("fair_darts", "step_first"),  # requirements.txt: torch==1.1.0
    ("darts_minus", "step_epoch"),  # src/search/train_search.py: scheduler.step(epoch)
    ("drnas", "step_last"),  # DARTS-space/train_search.py: step after the epoch
    ("drnas_nb201", "step_last"),  # 201-space/train_search.py: step after the epoch
]


@pytest.mark.parametrize("preset,pattern", CASES)
def test_preset_lr_per_epoch_is_the_official_scripts(preset: str, pattern: str) -> None:
    c = load_config([preset], [])
    s = c.search
    ours = [
        Searcher.lr_at(SimpleNamespace(config=c, epochs=s.epochs), e)  # type: ignore[arg-type]
        for e in range(s.epochs)
    ]
    assert ours == pytest.approx(_official(pattern, s.w_lr, s.w_lr_min, s.epochs), rel=1e-9)
