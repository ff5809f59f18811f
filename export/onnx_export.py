"""Export a VCE classifier to ONNX: ``images`` [N,3,224,224] -> ``logits``, ``probs`` [N,17].

With ``input_kind="uint8"`` (``vce-export onnx --input uint8``) the graph takes uint8 RGB crops
[N,224,224,3] and normalises them itself (vce.export.uint8_input), bit-identically to the float
graph fed by ``normalise()``.

Two exporters, both from ``torch.onnx``:

- ``torchscript`` (``dynamo=False``), followed by onnxscript's optimizer (constant folding, which
  folds the parameter-only lambda computation of differential attention, and Identity removal);
- ``dynamo`` (``torch.export``), which always translates at opset >= 18 (its own 18 -> 17
  down-conversion left opset-18 attributes on ReduceMean here, an invalid graph), so opset 17 is
  reached with ``onnx.version_converter`` on the optimised graph.

The default (``DEFAULT_EXPORTER``, torchscript) was chosen by measurement, see bench/bench_export.py. Every export
is audited (vce.runtime.graph_audit) and then run with ONNX Runtime CPU on batches of sizes other than the
traced one and compared with PyTorch; either failing refuses the export.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vce.export.exporters import DEFAULT_EXPORTER, DEFAULT_OPSET, check_exporter, check_opset
from vce.export.uint8_input import add_uint8_input, check_input_kind
from vce.runtime.atomic import atomic_path
from vce.runtime.errors import VCEError
from vce.runtime.graph_audit import INPUT_NAME, OUTPUT_NAMES, AuditReport, audit_model
from vce.runtime.lazy import require
from vce.runtime.preprocess import BIOMEDCLIP, PreprocessSpec, normalise
from vce.train.config import ExportFormulation, Formulation, check_formulation

FORMULATIONS = tuple(f.value for f in ExportFormulation)
DEFAULT_FORMULATION = Formulation.MATMUL.value
#: export-time check against PyTorch (fp32): max |delta prob| and max |delta logit|
EXPORT_ATOL_PROBS = 1e-4
EXPORT_ATOL_LOGITS = 1e-3


class ExportWrapper(nn.Module):
    """images -> (logits, sigmoid(logits)), the graph's two outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        return logits, torch.sigmoid(logits)


@dataclass
class ExportResult:
    path: Path
    exporter: str
    opset: int
    formulation: str | None
    seconds: float
    audit: AuditReport
    check: dict[str, float] = field(default_factory=dict)  # max |delta| per output, ORT CPU vs PyTorch

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "exporter": self.exporter,
            "opset": self.opset,
            "formulation": self.formulation,
            "export_seconds": round(self.seconds, 3),
            "node_count": self.audit.node_count,
            "op_histogram": self.audit.op_histogram,
            "ort_check_max_abs": self.check,
        }


# --- attention formulation -------------------------------------------------------------------------


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """Differential-attention modules (they carry a ``formulation`` attribute and ``lambda_value``)."""
    return [m for m in model.modules() if hasattr(m, "formulation") and hasattr(m, "lambda_value")]


@contextlib.contextmanager
def formulation(model: nn.Module, name: str | None) -> Iterator[int]:
    """Temporarily switch every differential-attention module to ``name``; yields how many."""
    mods = _attention_modules(model)
    if name is None or not mods:
        yield 0
        return
    check_formulation(name, ExportFormulation)
    from vce.train.layers.diff_attention import set_formulation

    before = [m.formulation for m in mods]
    try:
        yield set_formulation(model, name)
    finally:
        for m, f in zip(mods, before, strict=True):
            m.formulation = f


# --- exporters ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints and warnings (they are not the user's business)."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor, opset: int) -> Any:
    onnx = require("onnx", "ONNX export")
    optimizer = require("onnxscript.optimizer", "ONNX export")
    buf = io.BytesIO()
    with _quiet():
        torch.onnx.export(
            wrapper,
            (example,),
            buf,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=opset,
            do_constant_folding=True,
        )
        model = onnx.load_from_string(buf.getvalue())
        model = optimizer.optimize(model)
    return model


def _export_dynamo(wrapper: nn.Module, example: torch.Tensor, opset: int) -> Any:
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "the dynamo ONNX exporter")
    with _quiet():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("N", min=1, max=65536)}},
            opset_version=max(opset, 18),
            external_data=False,
            optimize=True,
        )
        model = program.model_proto
        if opset < 18:
            model = onnx.version_converter.convert_version(model, opset)
            _strip_opset18_reduce_attrs(model)
    return model


def _strip_opset18_reduce_attrs(model: Any) -> None:
    """Undo a down-conversion slip: ``noop_with_empty_axes`` left on reductions that only have it from 18.

    (ReduceSum has had it since 13.) A value of 0 is the opset-17 behaviour, so the attribute is
    dropped; a 1 is kept and the audit then refuses the graph.
    """
    for node in model.graph.node:
        if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum":
            for attr in list(node.attribute):
                if attr.name == "noop_with_empty_axes" and attr.i == 0:
                    node.attribute.remove(attr)


def _finish(model: Any) -> Any:
    """Inline local functions and name the batch dimension N everywhere it appears on the I/O."""
    onnx = require("onnx", "ONNX export")
    if len(model.functions):
        model = onnx.inliner.inline_local_functions(model)
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
    return model


def export_model_proto(
    model: nn.Module,
    *,
    exporter: str = DEFAULT_EXPORTER,
    opset: int = DEFAULT_OPSET,
    formulation_name: str | None = DEFAULT_FORMULATION,
    image_size: int = 224,
    trace_batch: int = 2,
) -> tuple[Any, float]:
    """Export ``model`` (logits) wrapped as images -> (logits, probs); returns (ModelProto, seconds)."""
    check_exporter(exporter)
    check_opset(opset)
    if trace_batch < 2:
        raise VCEError("trace with a batch of at least 2 (torch.export specialises size-1 dimensions)")
    model = model.eval()
    wrapper = ExportWrapper(model).eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(trace_batch, 3, image_size, image_size, generator=gen)
    start = time.perf_counter()
    with formulation(model, formulation_name), torch.no_grad():
        try:
            if exporter == "dynamo":
                proto = _export_dynamo(wrapper, example, opset)
            else:
                proto = _export_torchscript(wrapper, example, opset)
        except VCEError:
            raise
        except Exception as exc:
            raise VCEError(
                f"the {exporter} ONNX exporter failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                f"try --exporter {'dynamo' if exporter == 'torchscript' else 'torchscript'}"
            ) from exc
    return _finish(proto), time.perf_counter() - start


def torch_outputs(model: nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    """The PyTorch fp32 reference for a batch: {"logits", "probs"} as float32 numpy arrays."""
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
    return {"logits": logits.float().numpy(), "probs": torch.sigmoid(logits).float().numpy()}


def check_with_ort(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    *,
    batches: tuple[int, ...] = (1, 3),
    image_size: int = 224,
    atol_probs: float = EXPORT_ATOL_PROBS,
    atol_logits: float = EXPORT_ATOL_LOGITS,
    seed: int = 1,
    spec: PreprocessSpec = BIOMEDCLIP,
) -> dict[str, float]:
    """Run the graph with ONNX Runtime CPU on random batches and compare with PyTorch.

    Batch sizes other than the traced one also prove the batch dimension really is dynamic. A
    uint8 graph gets random uint8 crops, PyTorch their ``normalise(crops, spec)``. Raises VCEError
    beyond tolerance; returns the max |delta| per output.
    """
    from vce.runtime.backends import create_runner

    rng = np.random.default_rng(seed)
    worst = {"logits": 0.0, "probs": 0.0}
    with create_runner("ort-cpu", onnx_path) as runner:
        for n in batches:
            if runner.input_dtype == np.uint8:
                crops = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
                x, feed = normalise(crops, spec), crops
            else:
                x = rng.standard_normal((n, 3, image_size, image_size), dtype=np.float32)
                feed = x
            ref = torch_outputs(model, x)
            out = runner.infer(feed)
            for name in worst:
                if out[name].shape != ref[name].shape:
                    raise VCEError(
                        f"{onnx_path}: ONNX Runtime gives {name} of shape {out[name].shape} for a batch of {n}, "
                        f"PyTorch {ref[name].shape}; the batch dimension is not dynamic"
                    )
                d = np.abs(out[name].astype(np.float64) - ref[name])
                worst[name] = max(worst[name], float(np.nanmax(d)) if d.size else 0.0)
                if not np.all(np.isfinite(out[name])):
                    worst[name] = float("inf")
    if worst["probs"] > atol_probs or worst["logits"] > atol_logits:
        raise VCEError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch beyond tolerance (max |delta prob| "
            f"{worst['probs']:.2e} > {atol_probs:g} or max |delta logit| {worst['logits']:.2e} > {atol_logits:g}); "
            "the export was refused"
        )
    return worst


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    exporter: str = DEFAULT_EXPORTER,
    opset: int = DEFAULT_OPSET,
    formulation_name: str | None = DEFAULT_FORMULATION,
    image_size: int = 224,
    trace_batch: int = 2,
    metadata: dict[str, str] | None = None,
    check: bool = True,
    input_kind: str = "float32",
    spec: PreprocessSpec = BIOMEDCLIP,
) -> ExportResult:
    """Export, audit, write atomically, and (``check``) compare ONNX Runtime CPU with PyTorch.

    ``metadata`` goes into the graph's ``metadata_props``. ``input_kind`` "uint8": the graph takes
    uint8 RGB crops [N,S,S,3] and normalises them with ``spec``'s mean/std. Nothing is left at
    ``path`` if any step fails.
    """
    onnx = require("onnx", "ONNX export")
    check_input_kind(input_kind)
    proto, seconds = export_model_proto(
        model,
        exporter=exporter,
        opset=opset,
        formulation_name=formulation_name,
        image_size=image_size,
        trace_batch=trace_batch,
    )
    if input_kind == "uint8":
        proto = add_uint8_input(proto, spec)
    for key, value in (metadata or {}).items():
        set_metadata(proto, key, value)
    audit = audit_model(proto, image_size=image_size, input_kind=input_kind)
    audit.path = str(path)
    audit.raise_if_failed()
    target = Path(path)
    worst: dict[str, float] = {}
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
        if check:
            worst = check_with_ort(model, tmp, image_size=image_size, spec=spec)
    return ExportResult(target, exporter, opset, formulation_name, seconds, audit, worst)


def set_metadata(proto: Any, key: str, value: str) -> None:
    """Set (or replace) one ``metadata_props`` entry of an ONNX model."""
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
