"""Bring your own model and data: NAS on 1-D signals with a user-defined op.

A small 1-D conv classifier whose blocks choose their op (a user-defined gated conv, a
plain conv, a dilated conv, or identity) and whose head chooses which block outputs to sum.
The data are synthetic noisy signals of 3 classes (a sine, a square and a sawtooth wave) as
float tensors in a TensorDataset. The model is searched with DARTS-PRIME and with GDAS,
the chosen model is fixed into a plain nn.Module, trained, and exported to TorchScript and
ONNX. See docs/user_models.md.

    python examples/signals.py            # about a minute on a laptop CPU
    python examples/signals.py --tiny     # seconds (what the tests run)
    diffnas --import examples/signals.py search --space signalnet --dataset signals
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import diffnas
from diffnas.choices import InputChoice, MixedChoice, register_model
from diffnas.data.user import UserData
from diffnas.registry import DATASETS
from diffnas.retrain.export import export_model

LENGTH = 64


# --------------------------------------------------------------------------- the user op
class GatedConv1d(nn.Module):
    """A user-defined op: conv(x) * sigmoid(gate(x)), then batch norm."""

    def __init__(self, channels: int, kernel: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.gate = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) * torch.sigmoid(self.gate(x)))


def conv_bn(channels: int, kernel: int, dilation: int = 1) -> nn.Module:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation),
        nn.BatchNorm1d(channels),
    )


# --------------------------------------------------------------------------- the model
class SignalNet(nn.Module):
    """stem -> 3 searched blocks (residual) -> head on the sum of the chosen block outputs."""

    def __init__(self, channels: int = 16, classes: int = 3, blocks: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, channels, 3, padding=1), nn.ReLU())
        self.blocks = nn.ModuleList(
            MixedChoice(
                {
                    "gated5": GatedConv1d(channels),
                    "conv3": conv_bn(channels, 3),
                    "dil3": conv_bn(channels, 3, dilation=2),
                    "identity": nn.Identity(),
                },
                label=f"block{i}",
            )
            for i in range(blocks)
        )
        self.pick = InputChoice(blocks, n_chosen=2, label="head_inputs")
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        outs = []
        for block in self.blocks:
            h = F.relu(h + block(h))
            outs.append(h)
        return self.head(self.pick(outs).mean(dim=-1))


# --------------------------------------------------------------------------- the data
def signals(n: int, seed: int) -> TensorDataset:
    """n noisy waves [n, 1, LENGTH] (float32) with labels 0 sine, 1 square, 2 sawtooth."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    freq = 1 + 3 * torch.rand(n, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    t = torch.linspace(0, 1, LENGTH).expand(n, LENGTH)
    arg = 2 * math.pi * freq * t + phase
    waves = torch.stack(
        [torch.sin(arg), torch.sign(torch.sin(arg)), 2 * ((arg / (2 * math.pi)) % 1) - 1], 1
    )
    x = waves[torch.arange(n), labels] + 0.3 * torch.randn(n, LENGTH, generator=g)
    return TensorDataset(x.unsqueeze(1).float(), labels)


def train_fixed(model: nn.Module, data: TensorDataset, epochs: int, seed: int) -> None:
    """A plain PyTorch loop: the fixed model is the user's own module."""
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=32, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset) -> float:
    model.eval()
    x, y = data.tensors
    return 100.0 * float((model(x).argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- CLI plugin
# `diffnas --import examples/signals.py search --space signalnet --dataset signals` searches
# the same model from the command line; derive and export work on its run directory.
register_model("signalnet", SignalNet, input_shape=(1, LENGTH))
if "signals" not in DATASETS:
    DATASETS.add("signals", lambda root, cache_dir: UserData(signals(512, 0), label="signals"))


def main(argv: list[str] | None = None) -> dict[str, dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a few seconds: tests only")
    parser.add_argument("--out", help="runs and exports go here (default: a temporary folder)")
    args = parser.parse_args(argv)
    n_train, n_test = (64, 32) if args.tiny else (1024, 512)
    search_epochs, train_epochs = (1, 1) if args.tiny else (10, 20)
    out = Path(args.out or tempfile.mkdtemp(prefix="diffnas-signals-"))
    train_data, test_data = signals(n_train, seed=0), signals(n_test, seed=1)

    results: dict[str, dict[str, object]] = {}
    for method in ("darts_prime", "gdas"):
        torch.manual_seed(0)
        found = diffnas.search(
            SignalNet(),
            method=method,
            train_data=train_data,  # split in two: weights on one half, α on the other
            overrides=[f"search.epochs={search_epochs}", "data.batch_size=32", "threads=1"],
            out=out / f"search-{method}",
            progress=False,
        )
        print(f"{method}: {json.dumps(found.choices)}")
        # a fresh SignalNet with each choice fixed: a plain nn.Module, trained from scratch
        model = diffnas.choices.fix(SignalNet(), found.choices)
        train_fixed(model, train_data, train_epochs, seed=0)
        acc = accuracy(model, test_data)
        print(f"  trained: test accuracy {acc:.1f} %")
        formats = ("torchscript",) if args.tiny else ("torchscript", "onnx")
        for r in export_model(model, (1, LENGTH), out / f"export-{method}", formats=formats):
            print(f"  {r}")
        results[method] = {"choices": found.choices, "test_acc": acc}
    print(f"runs and exports in {out}")
    return results


if __name__ == "__main__":
    main()
