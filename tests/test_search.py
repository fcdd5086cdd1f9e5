from __future__ import annotations

import json

import pytest
import torch

import diffnas
from diffnas.errors import CheckpointError, NumericalError
from diffnas.nasbench import nb201
from diffnas.run import RunDir
from diffnas.spaces import load_genotype

from .conftest import Kill, Poison, tiny_config


def final_alpha(run_dir) -> dict[str, torch.Tensor]:
    return RunDir(run_dir).load_checkpoint()["arch"]


def test_nb201_search_writes_a_complete_run(tmp_path) -> None:
    result = diffnas.search(tiny_config("nb201", epochs=2), out=tmp_path / "run")
    run = RunDir(tmp_path / "run")
    for path in (run.config_path, run.metrics_path, run.checkpoint_path, run.genotype_path):
        assert path.exists()
    records = run.read_metrics()
    assert [r["epoch"] for r in records] == [0, 1] == [h["epoch"] for h in result.history]
    for key in (
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "alpha",
        "genotype",
        "arch_steps",
    ):
        assert key in records[-1]
    assert records[-1]["arch_steps"] == records[-1]["arch_steps"] > 0
    if nb201.available():
        assert 10.0 <= records[-1]["lookup_acc"] <= 95.0
    assert load_genotype(tmp_path / "run") == result.genotype
    assert result.genotype.info["dataset"].startswith("digits")


def test_darts_space_search_second_order(tmp_path) -> None:
    cfg = tiny_config(
        "darts", epochs=1, **{"search.updater": "second_order", "data.subset": "0.15"}
    )
    result = diffnas.search(cfg, out=tmp_path / "run")
    assert {c.type for c in result.genotype.cells} == {"normal", "reduce"}
    assert all(len(c.edges) == 8 for c in result.genotype.cells)


def test_resume_after_kill_at_epoch_end_gives_identical_alpha(tmp_path) -> None:
    cfg = tiny_config("nb201", epochs=3)
    diffnas.search(cfg, out=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        diffnas.search(cfg, out=tmp_path / "b", callbacks=[Kill(after_epoch=0)])
    assert len(RunDir(tmp_path / "b").read_metrics()) == 1
    diffnas.resume(tmp_path / "b")
    a, b = final_alpha(tmp_path / "a"), final_alpha(tmp_path / "b")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(RunDir(tmp_path / "a").read_metrics()) == strip(
        RunDir(tmp_path / "b").read_metrics()
    )


def test_resume_after_kill_mid_epoch_gives_identical_alpha(tmp_path) -> None:
    # one epoch of 4 steps: killed after step 3, the resumed run takes the last 2
    cfg = tiny_config("darts", epochs=1, **{"checkpoint.every_steps": 2, "data.subset": 0.2})
    diffnas.search(cfg, out=tmp_path / "a")
    assert RunDir(tmp_path / "a").read_metrics()[-1]["arch_steps"] == 4
    with pytest.raises(KeyboardInterrupt):
        diffnas.search(cfg, out=tmp_path / "b", callbacks=[Kill(after_step=3)])
    state = RunDir(tmp_path / "b").load_checkpoint()
    assert (state["epoch"], state["step"]) == (0, 2)  # killed after step 3, last checkpoint at 2
    diffnas.resume(tmp_path / "b")
    a, b = final_alpha(tmp_path / "a"), final_alpha(tmp_path / "b")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path) -> None:
    with pytest.raises(NumericalError, match="validation loss became nan at epoch 2.*intact"):
        diffnas.search(
            tiny_config("nb201", epochs=3), out=tmp_path / "run", callbacks=[Poison(at_epoch=1)]
        )
    assert RunDir(tmp_path / "run").load_checkpoint()["epoch"] == 1


def test_truncated_checkpoint_and_existing_run_dir(tmp_path) -> None:
    cfg = tiny_config("nb201", epochs=1)
    diffnas.search(cfg, out=tmp_path / "run")
    with pytest.raises(CheckpointError, match="already holds a run.*--resume"):
        diffnas.search(cfg, out=tmp_path / "run")
    ckpt = RunDir(tmp_path / "run").checkpoint_path
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        diffnas.resume(tmp_path / "run")


def test_config_written_to_run_dir_reloads(tmp_path) -> None:
    cfg = tiny_config("nb201", epochs=1, **{"search.arch_lr": "0.001"})
    diffnas.search(cfg, out=tmp_path / "run")
    again = RunDir(tmp_path / "run").load_config()
    assert again == cfg
    assert json.loads(RunDir(tmp_path / "run").genotype_path.read_text())["space"] == "nb201"


def test_checkpoint_keeps_the_alpha_gradient_the_next_clipping_counts() -> None:
    """With search.grad_clip_alpha the weight step's clipping norm counts α's gradient held
    from the last architecture step (XAutoDL clips network.parameters()), so a resumed run
    must get it back to end where an unbroken one does."""
    from diffnas.search import Searcher

    cfg = tiny_config(
        "nb201",
        epochs=1,
        **{
            "search.schedule": "{name: alternate, order: weight_first}",
            "search.grad_clip_alpha": "true",
        },
    )
    s = Searcher(cfg)
    s.search_step(next(iter(s.data.train.epoch(0))))  # weight step, then the α step
    held = {k: p.grad.clone() for k, p in s.arch.alpha.items()}
    assert all(bool(g.abs().sum() > 0) for g in held.values())
    resumed = Searcher(cfg)
    resumed.load_state_dict(s.state_dict())
    for k, p in resumed.arch.alpha.items():
        assert p.grad is not None and torch.equal(p.grad, held[k]), k
