from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from diffnas.errors import ConfigError, ExportError
from diffnas.retrain import export_model, export_spec, resolve_model, train
from diffnas.retrain.accuracy import evaluate_run
from diffnas.retrain.network import build_model
from diffnas.spaces import zoo

from .test_train import tiny_train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    # accurate enough (about 50 %) that predictions vary over the test images; the
    # auxiliary head is trained (weight 0.1) and must be absent from the exported files
    extra = ["data.subset=0.5", "data.augment.cutout=0", "model.drop_path=0"]
    train(
        "DARTS_V2", overrides=[*tiny_train(epochs=2), *extra, "model.auxiliary_weight=0.1"], out=out
    )
    return out


def test_export_parity_and_onnx_accuracy_equals_pytorch(trained_run) -> None:
    spec = resolve_model(trained_run)
    assert spec.trained and spec.build().auxiliary is not None
    results = export_spec(spec, trained_run / "export")
    assert [r.format for r in results] == ["torchscript", "onnx"]
    for r in results:
        assert r.ok and r.max_abs_diff < 1e-4 and r.max_abs_output > 0
    assert results[1].opset is not None and results[1].opset >= 17
    # eval-mode graph: one output, the main logits; no auxiliary head in the file
    graph = onnx.load(str(trained_run / "export" / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits"]
    assert not [n for n in graph.initializer if "auxiliary" in n.name]
    ts = torch.jit.load(str(trained_run / "export" / "model.torchscript.pt"))
    out = ts(torch.randn(5, 1, 8, 8))
    assert isinstance(out, torch.Tensor) and out.shape == (5, 10)
    # the whole digits test split through PyTorch, TorchScript and onnxruntime
    pytorch, torchscript, onnxrt = evaluate_run(trained_run, backend="all").results
    assert pytorch.n == torchscript.n == onnxrt.n == 355
    assert pytorch.accuracy > 30 and len(pytorch.predictions.unique()) >= 5
    assert pytorch.accuracy == torchscript.accuracy == onnxrt.accuracy
    assert torch.equal(pytorch.predictions, onnxrt.predictions)


def test_legacy_onnx_exporter_writes_opset_17(tmp_path) -> None:
    model = build_model(zoo.get("PC_DARTS"), num_classes=10, channels=4, layers=3)
    (r,) = export_model(
        model, (3, 8, 8), tmp_path, formats=("onnx",), opset=17, onnx_exporter="torchscript"
    )
    assert r.opset == 17 and r.ok
    with pytest.raises(ConfigError, match="dynamo ONNX exporter writes opset 18.*torchscript"):
        export_model(model, (3, 8, 8), tmp_path, formats=("onnx",), opset=17)


@torch.library.custom_op("diffnas_test::weird", mutates_args=())
def weird(x: torch.Tensor) -> torch.Tensor:
    return x.sin()


@weird.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Weird(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return weird(x)


def test_unexportable_op_is_named_with_its_module_and_edge(tmp_path) -> None:
    model = build_model(zoo.get("DARTS_V2"), num_classes=10, channels=4, layers=3)
    model.cells[0].ops[1] = Weird()  # DARTS_V2 normal edge 1: sep_conv_3x3 from input 1
    with pytest.raises(ExportError) as exc:
        export_model(model, (3, 8, 8), tmp_path, formats=("onnx",))
    message = str(exc.value)
    assert "diffnas_test::weird" in message
    assert "cells.0.ops.1" in message and "edge 1->2 'sep_conv_3x3'" in message
