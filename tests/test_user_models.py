"""User models with choices, user Datasets/DataLoaders, plugins with user ops (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import diffnas
from diffnas.choices import ChosenInputs, InputChoice, MixedChoice, ModelSpace, fix
from diffnas.errors import CheckpointError, ConfigError, DatasetError, GenotypeError
from diffnas.registry import RELAXATIONS
from diffnas.supernet.mixed import MixWeights

from .conftest import Kill

FAST = ["search.epochs=1", "data.batch_size=16", "threads=1", "checkpoint.every_s=1e9"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = MixedChoice({"lin": nn.Linear(8, 8), "tanh": nn.Tanh(), "id": nn.Identity()})
        self.c = MixedChoice([nn.Linear(8, 8), nn.ReLU()], label="c")
        self.skip = InputChoice(3, 2, label="skip")
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h1 = self.b(h)
        h2 = self.c(h1)
        return self.head(self.skip([h, h1, h2]))


def data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def test_mixed_choice_is_the_weighted_sum_of_its_candidates() -> None:
    torch.manual_seed(0)
    net = Net().double()
    space = ModelSpace(net)
    assert list(space.arch_specs()) == ["b", "c", "skip"]
    sup = space.build_supernet(diffnas.config.SupernetConfig(), 0, 0, 0)
    w = {
        k: torch.softmax(torch.randn(s.shape, dtype=torch.float64), -1)
        for k, s in space.arch_specs().items()
    }
    x = torch.randn(4, 6, dtype=torch.float64)
    out = sup(x, MixWeights(w))
    # reference: the candidates called by hand
    h = net.a(x)
    h1 = sum(w["b"][0, o] * m(h) for o, m in enumerate(net.b.candidates))
    h2 = w["c"][0, 0] * net.c.candidates[0](h1) + w["c"][0, 1] * torch.relu(h1)
    ref = net.head(w["skip"][0, 0] * h + w["skip"][0, 1] * h1 + w["skip"][0, 2] * h2)
    assert torch.allclose(out, ref)
    # only the active candidate is computed (GDAS): the others contribute nothing
    active = {"b": [[2]], "c": [[1]], "skip": [[0]]}
    out1 = sup(x, MixWeights(w, active))
    ref1 = net.head(w["skip"][0, 0] * h)
    assert torch.allclose(out1, ref1)
    with pytest.raises(ConfigError, match="has no architecture weights"):
        net(x)  # outside a search, before fix


def test_fix_gives_a_plain_module_with_the_chosen_candidates() -> None:
    net = Net()
    fixed = fix(net, {"b": "tanh", "c": "linear", "skip": [0, 2]})
    assert isinstance(fixed.b, nn.Tanh) and isinstance(fixed.c, nn.Linear)
    assert isinstance(fixed.skip, ChosenInputs)
    assert not any(isinstance(m, MixedChoice | InputChoice) for m in fixed.modules())
    x = torch.randn(3, 6)
    h = net.a(x)
    ref = net.head(h + net.c.candidates[0](torch.tanh(h)))
    assert torch.allclose(fixed(x), ref)
    with pytest.raises(GenotypeError, match="missing: skip"):
        fix(net, {"b": "tanh", "c": "linear"})
    with pytest.raises(GenotypeError, match="has no candidate 'relu6'"):
        fix(net, {"b": "relu6", "c": "linear", "skip": [0, 1]})


@pytest.mark.parametrize("relaxation", RELAXATIONS.names())
def test_every_relaxation_searches_a_user_model(relaxation: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = diffnas.search(
        net,
        train_data=data(),
        out=tmp_path / "run",
        progress=False,
        overrides=[*FAST, f"search.relaxation={relaxation}"],
    )
    assert set(r.choices) == {"b", "c", "skip"} and len(r.choices["skip"]) == 2
    assert r.history[0]["arch_steps"] == 2  # 32 samples for α, batch 16
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert json.loads((tmp_path / "run" / "choices.json").read_text()) == r.choices
    model = r.fixed_model()
    assert model(torch.randn(2, 6)).shape == (2, 3)


def test_second_order_dataloader_and_user_loss(tmp_path: Path) -> None:
    """A DataLoader for weights, a Dataset for α, a regression loss on float targets."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=g)
    y = x[:, :3].sin()
    net = Net()
    r = diffnas.search(
        net,
        train_data=DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16, shuffle=True),
        val_data=TensorDataset(x[32:], y[32:]),
        loss=F.mse_loss,
        out=tmp_path / "run",
        progress=False,
        overrides=[*FAST, "search.updater=second_order"],
    )
    h = r.history[0]
    assert h["train_acc"] is None and h["val_acc"] is None  # no accuracy for regression
    assert h["train_loss"] > 0 and h["arch_steps"] == 2


def test_dataloader_is_split_for_the_bilevel(tmp_path: Path) -> None:
    r = diffnas.search(
        Net(),
        train_data=DataLoader(data(), batch_size=16, shuffle=True),
        method="gdas",
        out=tmp_path / "run",
        progress=False,
        overrides=FAST,
    )
    assert r.history[0]["arch_steps"] == 2 and r.history[0]["train_acc"] is not None


def test_bad_user_input_fails_before_a_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cases = [
        (dict(train_data=[1, 2, 3]), DatasetError, "must be a torch.utils.data.Dataset"),
        (dict(train_data=TensorDataset(torch.zeros(0, 6), torch.zeros(0))), DatasetError, "empty"),
        (dict(train_data=None), DatasetError, "needs train_data="),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            diffnas.search(Net(), out=out, progress=False, overrides=FAST, **kwargs)
    with pytest.raises(ConfigError, match="has no MixedChoice or InputChoice"):
        diffnas.search(nn.Linear(6, 3), train_data=data(), out=out, overrides=FAST)
    for part, match in (
        ("search.regularizers=[rdarts]", "regularizer .rdarts. does not work on a user model"),
        ("search.derive=aca", "derivation 'aca' does not work on a user model"),
        ("search.derive=top_k", "input choice.s. skip keep several inputs"),
    ):
        with pytest.raises(ConfigError, match=match):
            diffnas.search(Net(), train_data=data(), out=out, overrides=[*FAST, part])
    assert not out.exists()
    # a part needing multiply-add tables refuses a user model when it is set up
    with pytest.raises(ConfigError, match="cost tables of metric 'params' only"):
        diffnas.search(
            Net(),
            train_data=data(),
            out=out,
            overrides=[*FAST, "search.relaxation={name: enhanced, metric: macs}"],
        )


def test_torch_dataset_given_as_dataset_searches_a_builtin_space(tmp_path: Path) -> None:
    """The issue's failing call: dataset=TensorDataset(...) on the darts space."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    r = diffnas.search(
        "darts",
        dataset=TensorDataset(x, y),
        out=tmp_path / "run",
        progress=False,
        overrides=[*FAST, "space.layers=3", "space.channels=4"],
    )
    assert r.genotype.space == "darts" and r.history[0]["arch_steps"] == 1


# =========================================================================== plugins
PLUGIN = Path(__file__).parent / "plugins" / "gelu_ops.py"
ONLY_GELU = "space.exclude_ops=[none,max_pool_3x3,avg_pool_3x3,skip_connect,sep_conv_3x3,sep_conv_5x5,dil_conv_3x3]"


def _forget_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffnas import plugins
    from diffnas.registry import SPACES

    items = dict(SPACES._items)
    items.pop("darts_gelu", None)
    monkeypatch.setattr(SPACES, "_items", items)
    monkeypatch.setattr(plugins, "_loaded", {})


def test_user_op_through_import_survives_search_derive_train_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffnas.cli import main

    _forget_plugin(monkeypatch)
    search, train = tmp_path / "search", tmp_path / "train"
    sets = ["--set", "data.subset=0.05", "--set", "data.batch_size=32", "--threads", "1"]
    argv = ["search", "--space", "darts_gelu", "--epochs", "1", "--no-progress"]
    argv += ["--out", str(search), "--set", "space.layers=3", "--set", "space.channels=4"]
    assert main(argv + sets) == 2
    assert "unknown space 'darts_gelu'" in capsys.readouterr().err
    assert main(["--import", str(PLUGIN), *argv, "--set", ONLY_GELU, *sets]) == 0
    assert "gelu_conv_3x3" in (search / "genotype.json").read_text()
    assert str(PLUGIN.resolve()) in (search / "config.yaml").read_text()

    capsys.readouterr()
    # a new process: the run's config.yaml names the plugin, but a file never imports code
    _forget_plugin(monkeypatch)
    assert main(["derive", str(search)]) == 2
    err = capsys.readouterr().err
    assert f"names the plugin '{PLUGIN.resolve()}'" in err and "--import" in err
    _forget_plugin(monkeypatch)
    assert main(["--import", str(PLUGIN), "derive", str(search)]) == 0
    assert "gelu_conv_3x3" in capsys.readouterr().out
    _forget_plugin(monkeypatch)
    argv = ["train", str(search), "--epochs", "1", "--out", str(train), "--no-progress"]
    argv += ["--layers", "2", "--channels", "4"]
    assert main(["--import", str(PLUGIN), *argv, *sets]) == 0
    _forget_plugin(monkeypatch)
    assert main(["--import", str(PLUGIN), "export", str(train), "--format", "torchscript"]) == 0
    assert "ok" in capsys.readouterr().out

    # the plugin moved: a clear error naming it and the fix
    _forget_plugin(monkeypatch)
    assert main(["--import", "/nowhere/gone.py", "derive", str(search)]) == 2
    err = capsys.readouterr().err
    assert "cannot import the plugin '/nowhere/gone.py'" in err and "check the path" in err


def test_a_run_directory_never_imports_the_code_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.yaml naming a planted .py: derive and search --config refuse and run nothing."""
    from diffnas.cli import main

    _forget_plugin(monkeypatch)
    marker = tmp_path / "ran"
    planted = tmp_path / "planted.py"
    planted.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    run = tmp_path / "run"
    argv = ["search", "--space", "nb201", "--epochs", "1", "--no-progress", "--threads", "1"]
    argv += ["--set", "data.subset=0.05", "--set", "space.channels=4", "--set", "space.layers=1"]
    assert main([*argv, "--out", str(run)]) == 0
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("imports: []", f"imports: [{planted}]"))
    assert f"imports: [{planted}]" in config.read_text()
    assert main(["derive", str(run)]) == 2
    assert "diffnas does not import code that a file names" in capsys.readouterr().err
    assert main(["search", "--config", str(config), "--out", str(tmp_path / "again")]) == 2
    assert "--import" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "again").exists()


def test_entry_point_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from diffnas import plugins

    calls: list[str] = []

    class EP:
        name, value = "demo", "demo_plugin:register"

        def load(self) -> None:
            calls.append(self.name)

    def fake(group: str) -> list[EP]:
        return [EP()] if group == plugins.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(metadata, "entry_points", fake)
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    plugins.load_entry_points()
    plugins.load_entry_points()
    assert calls == ["demo"]


def test_signals_example_runs(tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).parents[1] / "examples" / "signals.py"
    spec = importlib.util.spec_from_file_location("signals_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--tiny", "--out", str(tmp_path)])
    assert set(results) == {"darts_prime", "gdas"}
    for method in results:
        assert (tmp_path / f"export-{method}" / "model.torchscript.pt").exists()
        assert (tmp_path / f"search-{method}" / "choices.json").exists()


def test_registered_user_model_from_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/signals.py as a plugin: search, derive, export of a user model; no train."""
    from diffnas import plugins
    from diffnas.cli import main

    monkeypatch.setattr(plugins, "_loaded", {})  # later runs of this process: no plugin

    example = str(Path(__file__).parents[1] / "examples" / "signals.py")
    run, exp = tmp_path / "search", tmp_path / "export"
    argv = ["--import", example, "search", "--space", "signalnet", "--dataset", "signals"]
    argv += ["--config", "gdas", "--epochs", "1", "--no-progress", "--threads", "1"]
    assert main([*argv, "--out", str(run), "--set", "data.batch_size=64"]) == 0
    chosen = json.loads((run / "choices.json").read_text())
    assert set(chosen) == {"block0", "block1", "block2", "head_inputs"}
    assert main(["--import", example, "derive", str(run)]) == 0
    assert f"block0: {chosen['block0']}" in capsys.readouterr().out
    argv = ["--import", example, "export", str(run), "--format", "torchscript"]
    assert main([*argv, "--out", str(exp)]) == 0
    info = json.loads((exp / "export.json").read_text())
    assert info["input"]["shape"] == ["batch", 1, 64]
    assert main(["--import", example, "train", str(run), "--epochs", "1"]) == 2
    assert "is a user model: train it with your own loop" in capsys.readouterr().err


def test_user_model_search_resumes_after_a_kill_to_the_same_alpha(tmp_path: Path) -> None:
    over = ["search.epochs=2", "data.batch_size=8", "threads=1", "checkpoint.every_steps=2"]
    torch.manual_seed(0)
    diffnas.search(Net(), train_data=data(), out=tmp_path / "a", progress=False, overrides=over)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        diffnas.search(
            Net(),
            train_data=data(),
            out=tmp_path / "b",
            progress=False,
            overrides=over,
            callbacks=[Kill(after_step=3)],
        )
    with pytest.raises(CheckpointError, match="searched a user model from Python"):
        diffnas.resume(tmp_path / "b")
    r = diffnas.resume(tmp_path / "b", model=Net(), train_data=data(), progress=False)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["arch"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["arch"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert r.choices == json.loads((tmp_path / "a" / "choices.json").read_text())


def test_dataset_stream_collates_a_generic_dataset_like_a_tensor_dataset() -> None:
    from torch.utils.data import Dataset

    from diffnas.data.user import DatasetStream, LoaderStream

    tensors = data(20)

    class Plain(Dataset):
        def __len__(self) -> int:
            return 20

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return tensors.tensors[0][i], tensors.tensors[1][i]

    idx = torch.arange(20)
    fast, slow = DatasetStream(tensors, idx, 6, seed=3), DatasetStream(Plain(), idx, 6, seed=3)
    assert len(fast) == 3  # drop_last
    for (xa, ya), (xb, yb) in zip(fast.epoch(1), slow.epoch(1), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # shuffled per (seed, epoch): a permutation, another one next epoch
    assert torch.equal(fast.order(1).sort().values, idx)
    assert not torch.equal(fast.order(1), fast.order(2))
    # resuming mid-epoch gives the same batches as the uninterrupted epoch
    assert torch.equal(next(iter(fast.epoch(1, start=2)))[0], list(fast.epoch(1))[2][0])
    loader = LoaderStream(DataLoader(tensors, batch_size=8), "cpu", "train_data")
    assert [len(y) for _, y in loader.epoch(0)] == [8, 8, 4]
    assert torch.equal(next(iter(loader.epoch(0, start=2)))[1], tensors.tensors[1][16:])
