from __future__ import annotations

import pytest
import torch

import diffnas
from diffnas.errors import CheckpointError, ConfigError
from diffnas.retrain import Trainer, load_train_config, train
from diffnas.retrain.accuracy import evaluate_run
from diffnas.retrain.network import build_model, load_trained
from diffnas.run import RunDir
from diffnas.spaces import zoo

from .conftest import Kill, Poison, tiny_config


def tiny_train(epochs: int = 2, **extra: object) -> list[str]:
    """Overrides for a seconds-long training run on digits (3 cells, C=4)."""
    out = [
        "model.channels=4",
        "model.layers=3",
        "data.subset=0.2",
        "data.batch_size=32",
        f"train.epochs={epochs}",
        "log.progress=false",
        "threads=1",
    ]
    return out + [f"{k}={v}" for k, v in extra.items()]


def weights(run_dir) -> dict[str, torch.Tensor]:
    return RunDir(run_dir).load_checkpoint()["model"]


def test_training_run_directory_and_recipe(tmp_path) -> None:
    result = train("DARTS_V2", overrides=tiny_train(epochs=2), out=tmp_path / "run")
    run = RunDir(tmp_path / "run")
    for path in (run.config_path, run.metrics_path, run.checkpoint_path, run.genotype_path):
        assert path.exists()
    assert run.kind == "train"
    records = run.read_metrics()
    assert [r["epoch"] for r in records] == [0, 1]
    # DARTS recipe: drop-path rises linearly from 0; cosine lr set per epoch from 0.025
    assert [r["drop_path"] for r in records] == [0.0, pytest.approx(0.1)]
    assert [r["lr"] for r in records] == [0.025, pytest.approx(0.0125)]
    # the test split is evaluated once, after the last epoch (no per-epoch test accuracy)
    assert [r["test_acc"] is not None for r in records] == [False, True]
    assert result.test_acc == records[-1]["test_acc"]
    assert diffnas.load_genotype(tmp_path / "run") == zoo.get("DARTS_V2")
    config = run.load_config(diffnas.TrainConfig)
    assert config.genotype == "DARTS_V2" and config.data.augment.cutout == 4  # digits preset
    # the run's own evaluation reproduces the last epoch's test accuracy
    assert evaluate_run(tmp_path / "run").results[0].accuracy == pytest.approx(result.test_acc)


def test_cifar_presets_are_the_darts_recipe() -> None:
    c = load_train_config(["train/cifar10"])
    assert (c.model.channels, c.model.layers, c.model.auxiliary_weight, c.model.drop_path) == (
        36,
        20,
        0.4,
        0.2,
    )
    assert (c.data.batch_size, c.data.augment.cutout, c.train.epochs) == (96, 16, 600)
    t = c.train
    assert (t.lr, t.momentum, t.weight_decay, t.grad_clip) == (0.025, 0.9, 3e-4, 5.0)
    assert load_train_config(["train/cifar100"]).data.dataset == "cifar100"


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.netwrk=imagenet", "did you mean 'network'"),
        ("data.train_portion=0.5", "search setting"),
        ("model.drop_path=1.5", r"model.drop_path must be in \[0, 1\)"),
        ("model.network=mobile", "model.network must be one of cifar, imagenet"),
    ],
)
def test_bad_train_config_fails_clearly(override, match) -> None:
    with pytest.raises(ConfigError, match=match):
        load_train_config(["train/digits"], [override])


def test_drop_path_and_auxiliary_head_only_in_training() -> None:
    torch.manual_seed(0)
    model = build_model(
        zoo.get("DARTS_V2"), num_classes=10, channels=4, layers=3, auxiliary=True, drop_path=0.5
    )
    x = torch.randn(4, 3, 8, 8)
    model.train()
    a, b = model(x), model(x)
    assert isinstance(a, tuple) and a[1].shape == (4, 10)  # auxiliary logits exist
    assert not torch.equal(a[0], b[0])  # drop-path samples differ between forwards
    model.drop_path_prob = 0.0
    c, d = model(x), model(x)
    assert torch.equal(c[0], d[0])  # ... and only drop-path made them differ
    model.drop_path_prob = 0.5
    model.eval()
    e, f = model(x), model(x)
    assert isinstance(e, torch.Tensor) and torch.equal(e, f)  # no aux output, no drop-path


def test_auxiliary_loss_trains_the_head() -> None:
    cfg = load_train_config(["train/digits"], tiny_train(epochs=1))
    trainer = Trainer(cfg, zoo.get("DARTS_V2"))
    batch = next(iter(trainer.train_stream.epoch(0)))
    trainer.train_step(batch)
    head = trainer.model.auxiliary.classifier.weight
    assert head.grad is not None and float(head.grad.abs().sum()) > 0
    cfg = load_train_config(["train/digits"], tiny_train(epochs=1, **{"model.auxiliary_weight": 0}))
    assert Trainer(cfg, zoo.get("DARTS_V2")).model.auxiliary is None


def test_resume_after_kill_at_epoch_end_gives_identical_weights(tmp_path) -> None:
    overrides = tiny_train(epochs=3, **{"data.subset": 0.1})
    train("DARTS_V2", overrides=overrides, out=tmp_path / "a")
    # killed after epoch 1: drop-path (0 in epoch 0) has drawn random masks by then
    with pytest.raises(KeyboardInterrupt):
        train("DARTS_V2", overrides=overrides, out=tmp_path / "b", callbacks=[Kill(after_epoch=1)])
    assert len(RunDir(tmp_path / "b").read_metrics()) == 2
    diffnas.resume_training(tmp_path / "b")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(RunDir(tmp_path / "a").read_metrics()) == strip(
        RunDir(tmp_path / "b").read_metrics()
    )


def test_resume_after_kill_mid_epoch_gives_identical_weights(tmp_path) -> None:
    overrides = tiny_train(epochs=2, **{"data.subset": 0.1, "checkpoint.every_steps": 2})
    train("DARTS_V2", overrides=overrides, out=tmp_path / "a")
    # 4 steps per epoch; killed after step 7 (epoch 1, where drop-path is on), last
    # checkpoint at global step 6 = epoch 1, step 2
    with pytest.raises(KeyboardInterrupt):
        train("DARTS_V2", overrides=overrides, out=tmp_path / "b", callbacks=[Kill(after_step=7)])
    state = RunDir(tmp_path / "b").load_checkpoint()
    assert (state["epoch"], state["step"]) == (1, 2)
    diffnas.resume_training(tmp_path / "b")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_search_and_train_runs_are_not_confused(tmp_path) -> None:
    diffnas.search(tiny_config("nb201", epochs=1), out=tmp_path / "search")
    with pytest.raises(CheckpointError, match="is a search run.*diffnas search --resume"):
        diffnas.resume_training(tmp_path / "search")
    with pytest.raises(CheckpointError, match="is a search run, not a training run"):
        load_trained(tmp_path / "search")
    # a search run directory is a genotype source: train its result (nb201 network)
    result = train(tmp_path / "search", overrides=tiny_train(epochs=1), out=tmp_path / "train")
    assert result.genotype.space == "nb201"
    with pytest.raises(CheckpointError, match="is a training run.*diffnas train --resume"):
        diffnas.resume(tmp_path / "train")


@pytest.mark.parametrize("every", [None, 3])
def test_a_nan_training_loss_names_its_step_when_found_late(tmp_path, every) -> None:
    from diffnas.errors import NumericalError

    extra = {} if every is None else {"train.finite_check_every": every}
    with pytest.raises(NumericalError) as info:
        train("DARTS_V2", overrides=tiny_train(1, **extra), callbacks=[Poison(after_step=1)])
    message = str(info.value)
    assert "training loss became nan at epoch 1, step 2 " in message
    assert "Lower train.lr" in message
    late = "found 1 step later: the losses are checked every 3 steps (train.finite_check_every)"
    assert (late in message) == (every == 3)  # cpu default: every step, found at once
