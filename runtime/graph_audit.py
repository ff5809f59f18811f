"""The one audit of every vce ONNX graph (fp32, uint8-input, fp16, INT8): standard ops, valid, the I/O contract.

TensorRT and ONNX Runtime both run a graph made of default-domain ONNX ops without control flow.
The audit fails (``AuditReport.raise_if_failed``) on tensor data in external files, a custom-domain
op, ``If``/``Loop``/``Scan`` (or any sub-graph), local functions, a failing full ``onnx.checker`` or
strict shape inference, and on inputs/outputs that are not ``images`` float32 [N,3,S,S] (or, for a
uint8 graph, uint8 [N,S,S,3]) -> ``logits``/``probs`` float32 [N,17] with the same symbolic (dynamic)
batch dimension N.

Torch-free, so that export (fp32, uint8, fp16 graphs) and calibration (INT8 graphs) share it; the
``onnx`` package is imported lazily. External data is found by :mod:`vce.runtime.onnxscan`, on the
file's bytes, before ``onnx`` parses them (``onnx.load`` would read the external files).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vce.runtime.errors import VCEError
from vce.runtime.labels import NUM_LABELS
from vce.runtime.lazy import require
from vce.runtime.onnxscan import DEFAULT_DOMAINS, scan_model_bytes

CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probs")


@dataclass
class AuditReport:
    """What the audit found; ``problems`` empty means the graph passed."""

    path: str
    opset: int
    node_count: int
    op_histogram: dict[str, int]
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    batch_dim: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_failed(self, what: str = "exported", refused: str = "The export was refused") -> None:
        """One line naming the file and every problem (``what``: which graph, ``refused``: the outcome)."""
        if self.problems:
            raise VCEError(
                f"{self.path}: the {what} graph fails the audit: {'; '.join(self.problems)}. "
                f"{refused}; report this with the model config (VCE_DEBUG=1 for details)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "opset": self.opset,
            "node_count": self.node_count,
            "op_histogram": self.op_histogram,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "batch_dim": self.batch_dim,
            "problems": self.problems,
        }


def _value_spec(onnx: Any, value: Any) -> dict[str, Any]:
    t = value.type.tensor_type
    dims: list[int | str] = []
    for d in t.shape.dim:
        dims.append(d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?"))
    return {"dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}


def op_histogram(model: Any) -> dict[str, int]:
    """Op type -> count over the main graph, most common first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def default_opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return -1


#: the two input contracts: dtype -> the shape after N (S: the image size)
INPUT_CONTRACTS = {"float32": ("NCHW", lambda s: [3, s, s]), "uint8": ("NHWC", lambda s: [s, s, 3])}


def audit_model(
    model: Any | str | os.PathLike[str],
    *,
    image_size: int = 224,
    check_io: bool = True,
    input_kind: str | None = None,
) -> AuditReport:
    """Audit an ``onnx.ModelProto`` (or a path to one). Never raises for graph problems: see ``problems``
    (a file that cannot be read or parsed is a VCEError).

    ``input_kind`` ("float32" or "uint8") requires that input; None accepts either contract.
    """
    onnx = require("onnx", "auditing ONNX graphs")
    path = "<in-memory model>"
    if hasattr(model, "graph"):
        data = model.SerializeToString()
    else:
        path = str(model)
        data = _read(Path(path))
    problems: list[str] = []
    external = scan_model_bytes(data, path).external
    if external:
        problems.append(f"tensor data in external files {external[:5]}")
    if not hasattr(model, "graph"):
        model = onnx.load_model_from_string(data)  # never reads external files
    graph = model.graph

    # ops: default domain only, no control flow, no sub-graphs, no local functions
    custom = sorted({f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in DEFAULT_DOMAINS})
    if custom:
        problems.append(f"custom-domain ops {custom}")
    flow = sorted({n.op_type for n in graph.node if n.op_type in CONTROL_FLOW})
    if flow:
        problems.append(f"control-flow ops {flow}")
    subgraphs = [
        n.name or n.op_type
        for n in graph.node
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)
    ]
    if subgraphs and not flow:
        problems.append(f"nodes with sub-graphs {subgraphs[:5]}")
    if len(model.functions):
        problems.append(f"{len(model.functions)} local functions (inline them)")
    extra_domains = sorted({i.domain for i in model.opset_import if i.domain not in DEFAULT_DOMAINS})
    if extra_domains:
        problems.append(f"extra opset domains {extra_domains}")

    # validity
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises several exception types
        problems.append(f"onnx.checker: {str(exc).splitlines()[0]}")
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        problems.append(f"shape inference: {str(exc).splitlines()[0]}")

    inputs = {v.name: _value_spec(onnx, v) for v in graph.input}
    outputs = {v.name: _value_spec(onnx, v) for v in graph.output}
    batch_dim: str | None = None
    if check_io:
        spec = inputs.get(INPUT_NAME)
        kind = input_kind or (spec["dtype"] if spec and spec["dtype"] in INPUT_CONTRACTS else "float32")
        want_in = INPUT_CONTRACTS[kind][1](image_size)
        if list(inputs) != [INPUT_NAME] or spec is None:
            problems.append(f"inputs are {list(inputs)}, expected ['{INPUT_NAME}']")
        elif spec["dtype"] != kind or len(spec["shape"]) != 4 or spec["shape"][1:] != want_in:
            problems.append(
                f"input {INPUT_NAME} is {spec['dtype']} {spec['shape']}, expected {kind} "
                f"[N, {', '.join(map(str, want_in))}]"
            )
        elif not isinstance(spec["shape"][0], str) or spec["shape"][0] == "?":
            problems.append(f"the batch dimension of {INPUT_NAME} is fixed ({spec['shape'][0]}), not dynamic")
        else:
            batch_dim = spec["shape"][0]
        if list(outputs) != list(OUTPUT_NAMES):
            problems.append(f"outputs are {list(outputs)}, expected {list(OUTPUT_NAMES)}")
        else:
            for name in OUTPUT_NAMES:
                o = outputs[name]
                if o["dtype"] != "float32" or o["shape"] != [batch_dim, NUM_LABELS]:
                    problems.append(
                        f"output {name} is {o['dtype']} {o['shape']}, expected float32 [{batch_dim}, {NUM_LABELS}]"
                    )
    return AuditReport(
        path=path,
        opset=default_opset(model),
        node_count=len(graph.node),
        op_histogram=op_histogram(model),
        inputs=inputs,
        outputs=outputs,
        batch_dim=batch_dim,
        problems=problems,
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VCEError(f"{path}: ONNX file not found") from None
    except OSError as exc:
        raise VCEError(f"{path}: cannot read the ONNX graph ({exc.strerror or exc})") from exc


def audit_file(path: str | os.PathLike[str], **kwargs: Any) -> AuditReport:
    """:func:`audit_model` of the graph at ``path`` (a missing file is a VCEError)."""
    return audit_model(Path(path), **kwargs)
