"""Test-split accuracy of a network: PyTorch, TorchScript or ONNX Runtime, same batches.

Inputs are normalized with the training run's mean/std, so a run evaluated on another copy
of its dataset (or after export) sees exactly the inputs its weights were trained for.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.config import DataConfig
from diffnas.data import BatchStream, Dataset, load_dataset
from diffnas.data.loader import prepare_dataset
from diffnas.errors import ConfigError, DatasetError, ExportError

Predict = Callable[[torch.Tensor], torch.Tensor]
BACKENDS = ("pytorch", "torchscript", "onnx")


@dataclass
class EvalResult:
    backend: str
    loss: float
    accuracy: float  # percent
    n: int
    predictions: torch.Tensor  # [n] predicted class per test image, in test-split order

    def __str__(self) -> str:
        return (
            f"{self.backend}: top-1 {self.accuracy:.2f} % (loss {self.loss:.4f}, {self.n} images)"
        )


def eval_stream(
    ds: Dataset,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> BatchStream:
    """The whole test split in order, no augmentation, last partial batch kept."""
    return BatchStream(
        ds.test,
        torch.arange(len(ds.test)),
        batch_size,
        mean,
        std,
        None,
        shuffle=False,
        drop_last=False,
        device=device,
    )


@torch.no_grad()
def evaluate(predict: Predict, stream: BatchStream, backend: str = "pytorch") -> EvalResult:
    """Mean cross-entropy and top-1 accuracy of `predict` (inputs -> logits) over a stream."""
    loss_sum, correct, n = 0.0, 0, 0
    preds = []
    for x, y in stream.epoch(0):
        logits = predict(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        p = logits.argmax(1)
        correct += int((p == y).sum())
        n += len(y)
        preds.append(p.cpu())
    return EvalResult(
        backend, loss_sum / max(n, 1), 100.0 * correct / max(n, 1), n, torch.cat(preds)
    )


def pytorch_predict(model: nn.Module) -> Predict:
    from diffnas.retrain.network import main_logits

    model.eval()
    return lambda x: main_logits(model(x))


def torchscript_predict(path: str | Path, device: torch.device | str = "cpu") -> Predict:
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.13 but works
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=device)
    module.eval()
    return lambda x: module(x)


def onnx_predict(path: str | Path, threads: int | None = None) -> Predict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    return predict


def dataset_for_run(
    data_info: dict[str, Any], config_data: DataConfig, dataset: str | None, data_root: str | None
) -> Dataset:
    """The dataset a trained run is evaluated on: its own, or another one with the same classes."""
    if dataset is None and data_root is None:
        ds = prepare_dataset(config_data)
    else:
        name = dataset or config_data.dataset
        ds = load_dataset(name, data_root or config_data.root, config_data.cache_dir)
        size = int(data_info["input_size"])
        if ds.input_size != size:
            from diffnas.data.transforms import resize

            ds.test.images = resize(ds.test.images, size)
    if ds.num_classes != int(data_info["num_classes"]):
        raise DatasetError(
            f"dataset '{ds.label}' has {ds.num_classes} classes but the run was trained for "
            f"{data_info['num_classes']} ({data_info['label']}); evaluate it on a dataset with "
            f"the same classes"
        )
    if ds.in_channels != int(data_info["in_channels"]):
        raise DatasetError(
            f"dataset '{ds.label}' has {ds.in_channels}-channel images; the run was trained on "
            f"{data_info['in_channels']}-channel images"
        )
    return ds


def check_backend(name: str) -> str:
    if name not in (*BACKENDS, "all"):
        raise ConfigError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}, all")
    return name


@dataclass
class RunEvaluation:
    header: str
    results: list[EvalResult]


def evaluate_run(
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    backend: str = "pytorch",
    export_dir: str | Path | None = None,
    batch_size: int = 256,
    threads: int | None = None,
    device: str = "cpu",
) -> RunEvaluation:
    """Test accuracy of a training run's final weights with one backend, or all of them."""
    from diffnas.retrain.config import TrainConfig
    from diffnas.retrain.export import FILES, read_export_info
    from diffnas.retrain.network import load_trained
    from diffnas.utils import resolve_device, set_threads

    check_backend(backend)
    if backend in ("onnx", "all"):
        from diffnas.errors import require_extra

        require_extra("export", "onnxruntime", what=f"diffnas eval --backend {backend}")
    set_threads(threads)
    dev = resolve_device(device)
    spec = load_trained(run_dir)
    assert spec.run is not None and spec.data_info is not None
    info = spec.data_info
    config = spec.run.load_config(TrainConfig)
    ds = dataset_for_run(info, config.data, dataset, data_root)
    mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["std"]).view(1, -1, 1, 1)
    exported = Path(export_dir) if export_dir else spec.run.path / "export"
    backends = list(BACKENDS) if backend == "all" else [backend]
    results = []
    for b in backends:
        if b == "pytorch":
            stream = eval_stream(ds, mean, std, batch_size, dev)
            model = spec.build().to(dev)
            results.append(evaluate(pytorch_predict(model), stream, "pytorch"))
            continue
        path = exported / FILES[b]
        if not path.exists():
            if backend == "all":
                continue
            raise ExportError(
                f"no {b} model at '{path}'; write it with `diffnas export {run_dir}` "
                f"(or point --export-dir at the export directory)"
            )
        meta = read_export_info(exported)
        if meta.get("epoch") != info["epoch"]:
            raise ExportError(
                f"the files in '{exported}' were exported at epoch {meta.get('epoch')} but the "
                f"run's checkpoint is at epoch {info['epoch']}; export it again"
            )
        stream = eval_stream(ds, mean, std, batch_size, "cpu")
        predict = torchscript_predict(path) if b == "torchscript" else onnx_predict(path, threads)
        results.append(evaluate(predict, stream, f"{b} ({path.name})"))
    header = (
        f"{run_dir}: {spec.genotype.name or spec.genotype.space + ' genotype'} after epoch "
        f"{info['epoch']}/{info['epochs']}, {ds.label} test split"
    )
    return RunEvaluation(header, results)
