"""A typed FP16 graph for strongly typed TensorRT (11 always, 10 with STRONGLY_TYPED).

TensorRT 11 has no FP16 builder flag: precision lives in the graph. This casts the fp32 graph with
onnxconverter-common, keeping in fp32:

- the graph inputs and outputs (``images`` in, ``logits``/``probs`` out stay float32);
- a uint8 graph's normalisation (cast, scale, mean, 1/std, transpose: vce.export.uint8_input), so
  its first values are the fp32 graph's, bit for bit, before the first fp16 layer;
- ``LayerNormalization``, ``Softmax`` and the normalisation reductions/powers (``ReduceMean``,
  ``ReduceSum``, ``Pow``, ``Sqrt``, ``Reciprocal``: the DIFF variant's RMSNorm and anything similar),
  plus ``Exp``/``Sigmoid`` (the lambda exponentials and the output probabilities);
- the differential-attention lambda: any remaining parameter-only computation (the exporters
  usually fold lambda into a constant) and its application ``x1 - lambda * x2`` (a ``Mul`` by a small
  constant that feeds a ``Sub``), so the cancellation that differential attention relies on
  happens in fp32.

Everything else (MatMul/Gemm/Conv, GELU, residual adds, reshapes) becomes fp16.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vce.export.uint8_input import is_preamble_node
from vce.runtime.atomic import atomic_path
from vce.runtime.errors import VCEError
from vce.runtime.graph_audit import AuditReport, audit_model
from vce.runtime.lazy import require
from vce.runtime.onnxscan import check_graph

#: op types always kept in fp32
FP32_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Sigmoid",
    "BatchNormalization",
)
#: a constant this small multiplying activations into a Sub is a lambda (scalar or one per head)
LAMBDA_MAX_NUMEL = 64
#: parameter-only computations up to this size are kept fp32 (larger ones are weight transforms)
CONST_MAX_NUMEL = 4096
#: default fp16-vs-fp32 tolerance (max |delta prob|)
FP16_ATOL_PROBS = 1e-2


@dataclass
class Fp16Report:
    path: Path
    seconds: float
    audit: AuditReport
    kept_fp32: dict[str, int]  # op type -> nodes kept in fp32
    lambda_nodes: list[str]
    fp16_fraction: float  # share of compute nodes (not Cast) that run in fp16
    check: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "convert_seconds": round(self.seconds, 3),
            "node_count": self.audit.node_count,
            "op_histogram": self.audit.op_histogram,
            "kept_fp32": self.kept_fp32,
            "lambda_nodes": len(self.lambda_nodes),
            "fp16_fraction": round(self.fp16_fraction, 4),
            "check": self.check,
        }


def _numel(shapes: dict[str, list[int | None]], name: str) -> int | None:
    dims = shapes.get(name)
    if dims is None or any(d is None for d in dims):
        return None
    return int(np.prod(dims)) if dims else 1


def _shapes(onnx: Any, model: Any) -> dict[str, list[int | None]]:
    """Static shapes of every value (None for a symbolic dimension) from shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | None]] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def lambda_nodes(model: Any) -> list[str]:
    """Names of the nodes that compute or apply differential attention's lambda (kept in fp32).

    1. parameter-only float computations (every input an initializer/constant) of small size;
    2. ``Mul(activation, small constant)`` whose output feeds a ``Sub``, and that ``Sub``.
    Unnamed nodes are given names so the converter can block them.
    """
    onnx = require("onnx", "the fp16 conversion")
    graph = model.graph
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_vce_{i}"
    shapes = _shapes(onnx, model)
    const = {init.name for init in graph.initializer}
    blocked: list[str] = []
    for node in graph.node:
        ins = [x for x in node.input if x]
        if node.op_type == "Constant" or (ins and all(x in const for x in ins)):
            const.update(node.output)
            if node.op_type != "Constant":
                sizes = [_numel(shapes, o) for o in node.output]
                if all(s is None or s <= CONST_MAX_NUMEL for s in sizes):
                    blocked.append(node.name)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        a, b = node.input
        small = [x for x in (a, b) if x in const and (_numel(shapes, x) or 0) <= LAMBDA_MAX_NUMEL]
        data = [x for x in (a, b) if x not in const]
        if len(small) != 1 or len(data) != 1:
            continue
        subs = [c for c in consumers.get(node.output[0], []) if c.op_type == "Sub"]
        if subs:
            blocked.append(node.name)
            blocked += [s.name for s in subs]
    return list(dict.fromkeys(blocked))


def convert_fp16(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    keep_ops: tuple[str, ...] = FP32_OPS,
    check: bool = True,
    atol_probs: float = FP16_ATOL_PROBS,
    batch: int = 4,
    image_size: int | None = None,
    input_kind: str | None = None,
) -> Fp16Report:
    """Write the typed fp16 graph of ``src`` to ``dst`` (atomically) and check it against fp32.

    The fp16 graph passes the one graph audit with the fp32 graph's I/O contract (``image_size`` and
    ``input_kind``; None: those of ``src``'s input). The check runs both graphs with ONNX Runtime CPU
    on random batches; if this onnxruntime has no kernel for an fp16 op, the report says so instead
    (``check["ran"] == False``). Beyond ``atol_probs`` the conversion is refused.
    """
    onnx = require("onnx", "the fp16 conversion")
    float16 = require("onnxconverter_common.float16", "the fp16 conversion")
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.is_file():
        raise VCEError(f"{src_path}: fp32 ONNX graph not found; run `vce-export onnx` first")
    image = check_graph(src_path).required_inputs[0]  # before onnx.load, which would read external data
    input_kind = input_kind or image.dtype
    if image_size is None:
        side = image.dims[2] if input_kind == "uint8" else image.dims[-1]
        image_size = side if isinstance(side, int) else 0  # a symbolic size fails the audit
    start = time.perf_counter()
    model = onnx.load(str(src_path))
    lam = lambda_nodes(model)
    lam += [n.name for n in model.graph.node if is_preamble_node(n) and n.name not in lam]
    _unshare_initializers(model, set(keep_ops), set(lam))
    try:
        with warnings.catch_warnings():  # "float32 number ... truncated": tiny weights flushed, expected
            warnings.simplefilter("ignore")
            m16 = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=list(keep_ops), node_block_list=lam
            )
    except Exception as exc:
        raise VCEError(f"{src_path}: the fp16 conversion failed ({exc})") from exc
    _fp32_outputs(onnx, m16)
    seconds = time.perf_counter() - start
    audit = audit_model(m16, image_size=image_size, input_kind=input_kind)
    audit.path = str(dst_path)
    audit.raise_if_failed("fp16", "The conversion was refused")
    kept, fraction = precision_split(m16)
    report = Fp16Report(dst_path, seconds, audit, kept, lam, fraction)
    with atomic_path(dst_path) as tmp:
        onnx.save(m16, str(tmp))
        if check:
            report.check = compare_fp16(src_path, tmp, batch=batch)
            worst = report.check.get("max_abs_probs")
            if worst is not None and not worst <= atol_probs:
                raise VCEError(
                    f"{dst_path}: the fp16 graph differs from fp32 by max |delta prob| {worst:.2e} > {atol_probs:g}; "
                    "refused (keep more ops in fp32 with --keep-fp32)"
                )
    return report


def _unshare_initializers(model: Any, keep_ops: set[str], keep_nodes: set[str]) -> None:
    """Give fp16 consumers their own copy of an initializer that an fp32 (blocked) node also reads.

    onnxconverter-common leaves such a shared initializer fp32 and the fp16 consumer then has
    inconsistent input types (the optimisers deduplicate equal tensors, e.g. zero biases).
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for x in node.input:
            if x in inits:
                users.setdefault(x, []).append(node)
    for name, nodes in users.items():
        blocked = [n.op_type in keep_ops or n.name in keep_nodes for n in nodes]
        if all(blocked) or not any(blocked):
            continue
        copy = graph.initializer.add()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}__fp16"
        for node, is_blocked in zip(nodes, blocked, strict=True):
            if not is_blocked:
                for i, x in enumerate(node.input):
                    if x == name:
                        node.input[i] = copy.name


def _fp32_outputs(onnx: Any, model: Any) -> None:
    """Make every graph output float32 again.

    onnxconverter-common casts the output of a blocked (fp32) node that produces a graph output back
    to fp16 and declares the output fp16, despite ``keep_io_types``: drop that Cast (or turn a genuine
    fp16 output into fp32 with a Cast).
    """
    graph = model.graph
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    producers = {o: n for n in graph.node for o in n.output}
    for out in graph.output:
        tt = out.type.tensor_type
        if tt.elem_type != f16:
            continue
        node = producers.get(out.name)
        to = next((a.i for a in node.attribute if a.name == "to"), None) if node is not None else None
        if node is not None and node.op_type == "Cast" and to == f16:
            src = node.input[0]
            graph.node.remove(node)
            for other in graph.node:  # rename the fp32 source to the output's name
                for i, name in enumerate(other.output):
                    if name == src:
                        other.output[i] = out.name
                for i, name in enumerate(other.input):
                    if name == src:
                        other.input[i] = out.name
        else:
            tmp = f"{out.name}_fp16"
            for other in graph.node:
                for i, name in enumerate(other.output):
                    if name == out.name:
                        other.output[i] = tmp
                for i, name in enumerate(other.input):
                    if name == out.name:
                        other.input[i] = tmp
            graph.node.append(
                onnx.helper.make_node("Cast", [tmp], [out.name], to=f32, name=f"{out.name}_to_fp32")
            )
        tt.elem_type = f32


def precision_split(model: Any) -> tuple[dict[str, int], float]:
    """(op type -> nodes computing in fp32, share of compute nodes computing in fp16).

    A node computes in fp16 when its first float input/output is float16 (by the graph's types).
    """
    onnx = require("onnx", "the fp16 conversion")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    types.update({i.name: i.data_type for i in model.graph.initializer})
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    kept: Counter[str] = Counter()
    n16 = total = 0
    for node in model.graph.node:
        if node.op_type in ("Cast", "Constant", "Shape"):
            continue
        dtypes = [types.get(x) for x in (*node.output, *node.input) if x and types.get(x) in (f32, f16)]
        if not dtypes:
            continue
        total += 1
        if dtypes[0] == f16:
            n16 += 1
        else:
            kept[node.op_type] += 1
    return dict(kept.most_common()), (n16 / total if total else 0.0)


def compare_fp16(
    fp32_path: str | os.PathLike[str], fp16_path: str | os.PathLike[str], *, batch: int = 4, seed: int = 2
) -> dict[str, Any]:
    """Max |delta| of the fp16 graph against the fp32 graph, both on ONNX Runtime CPU."""
    from vce.runtime.backends import create_runner

    rng = np.random.default_rng(seed)
    with create_runner("ort-cpu", fp32_path) as ref_runner:
        shape = ref_runner.session.get_inputs()[0].shape  # type: ignore[attr-defined]
        if ref_runner.input_dtype == np.uint8:  # a uint8 graph: random RGB crops [N,S,S,3]
            x = rng.integers(0, 256, (batch, shape[1], shape[2], 3), dtype=np.uint8)
        else:
            x = rng.standard_normal((batch, 3, shape[-1], shape[-1]), dtype=np.float32)
        ref = ref_runner.infer(x)
    try:
        with create_runner("ort-cpu", fp16_path) as runner:
            out = runner.infer(x)
    except VCEError as exc:
        return {"ran": False, "backend": "ort-cpu", "reason": str(exc)}
    result: dict[str, Any] = {"ran": True, "backend": "ort-cpu", "batch": batch}
    for name in ("logits", "probs"):
        d = np.abs(out[name].astype(np.float64) - ref[name])
        result[f"max_abs_{name}"] = float(np.max(d)) if np.all(np.isfinite(out[name])) else float("inf")
    return result
