"""TorchScript and ONNX export of a discrete network in eval mode, checked against PyTorch.

Each file is reloaded (torch.jit.load, onnxruntime) and run on random inputs of two batch
sizes (the batch axis is dynamic); the largest absolute difference from the PyTorch output
is reported and must stay within tolerance. Eval mode means no auxiliary head and no
drop-path in the exported graph. An op that cannot be exported is named, with the module
(and genotype edge) that uses it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from diffnas.errors import ConfigError, ExportError, require_extra
from diffnas.retrain.network import ModelSpec, main_logits
from diffnas.utils import atomic_write_json

FORMATS = ("torchscript", "onnx")
ONNX_EXPORTERS = ("dynamo", "torchscript")
FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
MIN_OPSET = 17


@dataclass
class ExportResult:
    format: str
    path: str
    max_abs_diff: float  # largest |exported - PyTorch| over the check inputs
    max_abs_output: float  # largest |PyTorch output|, for scale
    tolerance: float
    seconds: float
    opset: int | None = None
    exporter: str | None = None

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        what = self.format + (
            f" (opset {self.opset}, {self.exporter} exporter)" if self.opset else ""
        )
        mark = "ok" if self.ok else "MISMATCH"
        return (
            f"{what}: {self.path}\n  max |difference| vs PyTorch {self.max_abs_diff:.3g} "
            f"(outputs up to {self.max_abs_output:.3g}; tolerance {self.tolerance:.3g}) {mark}"
        )


# --------------------------------------------------------------------------- locating ops
class _OpRecorder(TorchDispatchMode):
    """Records, for every op a forward dispatches, the first module path that ran it."""

    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack = stack
        self.where: dict[str, str] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.where.setdefault(func._schema.name, self.stack[-1] if self.stack else "")
        return func(*args, **(kwargs or {}))


def ops_by_module(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """'namespace::op' -> path of the innermost module that first called it (eval forward)."""
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def pre(m: nn.Module, args: Any) -> None:
        stack.append(names.get(m, "?"))

    def post(m: nn.Module, args: Any, out: Any) -> None:
        stack.pop()

    handles = [m.register_forward_pre_hook(pre) for m in names]
    handles += [m.register_forward_hook(post) for m in names]
    recorder = _OpRecorder(stack)
    try:
        with torch.no_grad(), recorder:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return recorder.where


def edge_of(model: nn.Module, path: str) -> str:
    """' (edge 0->2 sep_conv_3x3 of cells.3)' when `path` lies inside a genotype edge's op."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1] != "ops" or not parts[i].isdigit():
            continue
        cell = model.get_submodule(".".join(parts[: i - 1])) if i > 1 else model
        specs = getattr(cell, "edge_specs", None)
        if specs is not None and int(parts[i]) < len(specs):
            e = specs[int(parts[i])]
            return f" (genotype edge {e.src}->{e.dst} '{e.op}' of {'.'.join(parts[: i - 1])})"
    return ""


def _error_chain(exc: BaseException) -> str:
    texts = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        texts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    return "\n".join(texts)


def explain_failure(fmt: str, model: nn.Module, x: torch.Tensor, exc: BaseException) -> ExportError:
    """An ExportError naming the op (and module, genotype edge) the exporter choked on."""
    text = _error_chain(exc)
    try:
        where = ops_by_module(model, x)
    except Exception:  # locating is best effort; the exporter's message is still given
        where = {}
    found = None
    for op, path in where.items():
        ns, _, name = op.partition("::")
        if re.search(rf"\b{re.escape(ns)}(::|\.){re.escape(name)}\b", text):
            found = (op, path)
            if ns != "aten":  # a custom op is the likelier culprit than a standard one
                break
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if found is None:
        return ExportError(f"{fmt} export failed: {type(exc).__name__}: {first}")
    op, path = found
    return ExportError(
        f"{fmt} export failed: op '{op}' has no {fmt} translation; it is used by module "
        f"'{path or '<model>'}' ({type(model.get_submodule(path)).__name__})"
        f"{edge_of(model, path)}. Replace that op or, for ONNX, register a translation "
        f"(torch.onnx custom_translation_table). Exporter said: {first}"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporters' progress prints, deprecation warnings and log lines."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --------------------------------------------------------------------------- exporters
def to_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(model, (x,), check_trace=False)
            torch.jit.save(traced, str(path))
    except Exception as exc:
        raise explain_failure("TorchScript", model, x, exc) from None


def to_onnx(
    model: nn.Module, x: torch.Tensor, path: Path, opset: int, exporter: str = "dynamo"
) -> None:
    try:
        with _quiet():
            if exporter == "dynamo":
                torch.onnx.export(
                    model,
                    (x,),
                    str(path),
                    dynamo=True,
                    opset_version=opset,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    external_data=False,
                    verbose=False,
                )
            else:
                torch.onnx.export(
                    model,
                    (x,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                )
    except Exception as exc:
        raise explain_failure("ONNX", model, x, exc) from None


def onnx_opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _check(
    fmt: str,
    path: Path,
    model: nn.Module,
    inputs: list[torch.Tensor],
    seconds: float,
    rtol: float,
    atol: float,
    **extra: Any,
) -> ExportResult:
    from diffnas.retrain.accuracy import onnx_predict, torchscript_predict

    predict = torchscript_predict(path) if fmt == "torchscript" else onnx_predict(path)
    diff, scale = 0.0, 0.0
    with torch.no_grad():
        for x in inputs:
            ref = main_logits(model(x))
            out = predict(x)
            if out.shape != ref.shape:
                raise ExportError(
                    f"the {fmt} model returns shape {tuple(out.shape)} for input "
                    f"{tuple(x.shape)}; PyTorch returns {tuple(ref.shape)}"
                )
            diff = max(diff, float((out - ref).abs().max()))
            scale = max(scale, float(ref.abs().max()))
    return ExportResult(fmt, str(path), diff, scale, atol + rtol * scale, seconds, **extra)


def export_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    out_dir: str | Path,
    *,
    formats: tuple[str, ...] = FORMATS,
    opset: int = 18,
    onnx_exporter: str = "dynamo",
    rtol: float = 1e-4,
    atol: float = 1e-4,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[ExportResult]:
    """Export `model` (switched to eval mode) to each format under `out_dir` and check it;
    `log` hears which format is being exported (an ONNX export can take a minute)."""
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"unknown export format '{f}'; choose from {', '.join(FORMATS)}")
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ConfigError(
            f"unknown ONNX exporter '{onnx_exporter}'; choose from {', '.join(ONNX_EXPORTERS)}"
        )
    if opset < MIN_OPSET:
        raise ConfigError(f"ONNX opset must be >= {MIN_OPSET}, got {opset}")
    if "onnx" in formats:
        require_extra(
            "export", "onnx", "onnxscript", "onnxruntime", what="ONNX export (--format onnx)"
        )
    if "onnx" in formats and onnx_exporter == "dynamo" and opset < 18:
        raise ConfigError(
            f"the dynamo ONNX exporter writes opset 18 or later (asked: {opset}); use "
            f"--onnx-exporter torchscript for opset {opset}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(2, *input_shape, generator=gen)
    # the check uses another batch size than the traced one: the batch axis must be dynamic
    inputs = [torch.randn(b, *input_shape, generator=gen) for b in (1, 3)]
    results = []
    for fmt in formats:
        path = out / FILES[fmt]
        start = time.perf_counter()
        if log is not None:
            how = f", {onnx_exporter} exporter" if fmt == "onnx" else ""
            log(f"exporting {fmt}{how} to {path} and checking it against PyTorch ...")
        if fmt == "torchscript":
            to_torchscript(model, example, path)
            extra: dict[str, Any] = {}
        else:
            to_onnx(model, example, path, opset, onnx_exporter)
            extra = {"opset": onnx_opset(path), "exporter": onnx_exporter}
        seconds = time.perf_counter() - start
        results.append(_check(fmt, path, model, inputs, seconds, rtol, atol, **extra))
    return results


def export_spec(
    spec: ModelSpec,
    out_dir: str | Path,
    **kwargs: Any,
) -> list[ExportResult]:
    """Export the network of a ModelSpec (trained weights if it has them) and write
    export.json: input shape and normalization, classes, genotype, check results."""
    model = spec.build()
    from diffnas.spaces.base import get_space

    # a registered user model (diffnas.choices.register_model) knows its input shape
    own = getattr(get_space(spec.genotype.space), "input_shape", None)
    shape = tuple(own) if own else (spec.in_channels, spec.input_size, spec.input_size)
    results = export_model(model, shape, out_dir, **kwargs)
    info = spec.data_info or {}
    meta = {
        "source": spec.name,
        "trained": spec.trained,
        "epoch": info.get("epoch"),
        "input": {
            "shape": ["batch", *shape],
            "normalize": (
                {"mean": info["mean"], "std": info["std"], "scale": "pixels / 255"}
                if "mean" in info
                else None
            ),
        },
        "output": "logits [batch, classes]",
        "classes": info.get("classes") or spec.num_classes,
        "genotype": spec.genotype.to_json(),
        "network": {"name": spec.network, "channels": spec.channels, "layers": spec.layers},
        # file names relative to export.json, so the directory can move
        "files": [asdict(r) | {"path": Path(r.path).name, "ok": r.ok} for r in results],
    }
    atomic_write_json(Path(out_dir) / "export.json", meta)
    bad = [r for r in results if not r.ok]
    if bad:
        raise ExportError(
            "exported model disagrees with PyTorch: "
            + "; ".join(
                f"{r.format} max |difference| {r.max_abs_diff:.3g} > {r.tolerance:.3g}" for r in bad
            )
        )
    return results


def read_export_info(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / "export.json"
    if not path.exists():
        raise ExportError(f"'{out_dir}' has no export.json; export the run first (diffnas export)")
    return dict(json.loads(path.read_text()))
