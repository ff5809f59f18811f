"""Reading TensorRT's engine-inspector JSON (TensorRT 10 and 11 layouts) into a precision report.

``IEngineInspector::getEngineInformation(kJSON)`` with DETAILED profiling verbosity lists the
engine's layers, each with its input and output tensors. Two layouts exist:

- TensorRT 10: one field ``"Format/Datatype"``. Classic kernels print a format that names the
  type ("Row major linear FP16 format", "Channel major FP16 format where channel % 8 == 0";
  NVIDIA/TensorRT#3876); Myelin kernels print the type alone ("Float", "Half";
  ``samples/sampleEditableTimingCache/README.md`` in NVIDIA/TensorRT, a 10.8 run).
- TensorRT 11: the field is split into ``"Format"`` and ``"Datatype"`` (TensorRT 11 migration
  guide, "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"; the tensor schema of
  NVIDIA/TensorRT ``.agents/skills/trt-perf-analysis/schemas/analyze-data.schema.json``). The type
  is read from ``"Datatype"`` only (``"DataType"`` is accepted too: the 11.x ``"I/O Tensors"``
  entries spell it so).

A type that is missing or ``N/A`` is *unverified*, never fp32: without an execution context whose
input shapes are set, the inspector prints -1 for shape-dependent values and leaves the format
out (``IEngineInspector::setExecutionContext``, NvInferRuntime.h).

TensorRT 10 and later list Myelin's kernels one by one: names ending ``_myl<graph>_<kernel>`` or
starting ``__myl_``, layer types such as ``gemm`` and ``kgen`` (sample above; the layer-info parser
of the same repository, ``.agents/skills/trt-perf-analysis/scripts/trt_perf/layer_info.py``).
They carry their own data types, so they count as evidence. Only the TensorRT 8-style opaque block
(``{ForeignNode[...]}``, layer type ``Myelin``) hides the types of what it runs.

The check is a report: an fp16 build is refused only on evidence, i.e. when every tensor's type is
verified and none is reduced precision.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vce.runtime.errors import VCEError

UNVERIFIED = "unverified"
#: inspector type names (and the format words of TensorRT 10's classic kernels) -> one canonical name
_TYPES = (
    ("BFloat16", re.compile(r"\b(BFloat16|BF16|kBF16)\b", re.I)),
    ("Half", re.compile(r"\b(Half|FP16|kHALF|Float16)\b", re.I)),
    ("Float", re.compile(r"\b(Float|FP32|kFLOAT|Float32)\b", re.I)),
    ("FP8", re.compile(r"\b(FP8|kFP8|FP8E4M3)\b", re.I)),
    ("Int8", re.compile(r"\b(Int8|kINT8)\b", re.I)),
    ("UInt8", re.compile(r"\b(UInt8|kUINT8)\b", re.I)),
    ("Int32", re.compile(r"\b(Int32|kINT32)\b", re.I)),
    ("Int64", re.compile(r"\b(Int64|kINT64)\b", re.I)),
    ("Bool", re.compile(r"\b(Bool|kBOOL)\b", re.I)),
    ("FP4", re.compile(r"\b(FP4|FP4E2M1|kFP4)\b", re.I)),
    ("Int4", re.compile(r"\b(Int4|kINT4)\b", re.I)),
)
REDUCED = {"Half", "BFloat16", "FP8", "Int8", "FP4", "Int4"}
FLOATS = {"Float", "Half", "BFloat16", "FP8"}
_MYELIN_KERNEL = re.compile(r"(_myl\d+(?:_\d+)?$)|(^__?myl_)")
_OPAQUE_BLOCK = re.compile(r"\{ForeignNode\[")


def type_name(text: Any) -> str:
    """A type name or TensorRT 10 format string -> "Half", "Float", ... or "unverified"."""
    if not isinstance(text, str) or not text.strip() or "N/A" in text.upper():
        return UNVERIFIED
    for name, pattern in _TYPES:
        if pattern.search(text):
            return name
    return UNVERIFIED


def tensor_type(tensor: Any) -> str:
    """The data type of one inspector tensor entry, in either layout."""
    if not isinstance(tensor, dict):
        return UNVERIFIED
    for key in ("Datatype", "DataType"):  # TensorRT 11
        if key in tensor:
            return type_name(tensor[key])
    return type_name(tensor.get("Format/Datatype"))  # TensorRT 10


def is_myelin_kernel(layer: dict[str, Any]) -> bool:
    return bool(_MYELIN_KERNEL.search(str(layer.get("Name", "")))) or layer.get("LayerType") == "kgen"


def is_opaque_block(layer: dict[str, Any]) -> bool:
    return layer.get("LayerType") == "Myelin" or bool(_OPAQUE_BLOCK.search(str(layer.get("Name", ""))))


@dataclass
class PrecisionReport:
    """What the inspector shows: layer histogram (first float output's type) and tensor counts."""

    layers: int = 0
    histogram: Counter[str] = field(default_factory=Counter)
    tensors: Counter[str] = field(default_factory=Counter)  # every input/output entry by type
    myelin_kernels: int = 0
    opaque_blocks: int = 0
    names_only: bool = False  # LAYER_NAMES_ONLY verbosity: nothing about types

    @property
    def reduced_tensors(self) -> int:
        return sum(n for t, n in self.tensors.items() if t in REDUCED)

    @property
    def unverified_tensors(self) -> int:
        return self.tensors.get(UNVERIFIED, 0)

    def complete(self) -> bool:
        """Every tensor's type is known and nothing hides its layers: the report is evidence."""
        return (
            self.layers > 0
            and not self.names_only
            and self.unverified_tensors == 0
            and self.opaque_blocks == 0
        )

    def summary(self) -> str:
        if self.names_only:
            return f"inspector: {self.layers} layers, names only (no data types)"
        types = ", ".join(f"{n} {t}" for t, n in sorted(self.tensors.items(), key=lambda kv: -kv[1]))
        extra = f"; {self.myelin_kernels} Myelin kernels" if self.myelin_kernels else ""
        extra += f"; {self.opaque_blocks} opaque Myelin blocks" if self.opaque_blocks else ""
        return f"inspector: {self.layers} layers, tensors {types or 'none'}{extra}"


def inspect_layers(engine_json: str | dict[str, Any] | list[Any]) -> PrecisionReport:
    """Count an inspected engine's layers and tensors by data type (both inspector layouts)."""
    data = json.loads(engine_json) if isinstance(engine_json, str) else engine_json
    layers = data if isinstance(data, list) else data.get("Layers", [])
    report = PrecisionReport()
    for layer in layers:
        report.layers += 1
        if not isinstance(layer, dict):  # LAYER_NAMES_ONLY prints bare names
            report.names_only = True
            report.histogram[UNVERIFIED] += 1
            continue
        report.myelin_kernels += is_myelin_kernel(layer)
        report.opaque_blocks += is_opaque_block(layer)
        outputs = []
        for key in ("Inputs", "Outputs"):
            for tensor in layer.get(key) or []:
                t = tensor_type(tensor)
                report.tensors[t] += 1
                if key == "Outputs":
                    outputs.append(t)
        floats = [t for t in outputs if t in FLOATS]
        if floats:
            report.histogram[floats[0]] += 1
        elif UNVERIFIED in outputs:
            report.histogram[UNVERIFIED] += 1
        else:
            report.histogram["other"] += 1  # integer/bool outputs, or no outputs (Myelin signal/wait)
    return report


def judge_precision(
    requested: str, report: PrecisionReport, network_half: int, strongly_typed: bool
) -> tuple[str, str]:
    """(precision to record, one-line report); VCEError only when the inspector *proves* a wrong engine.

    ``network_half``: fp16 tensors in the parsed network. In a strongly typed network those types
    are what TensorRT builds, so they, not the inspector, set the recorded precision.
    """
    typed = f"network: {network_half} fp16 tensors ({'strongly typed' if strongly_typed else 'weakly typed'})"
    line = f"{typed}; {report.summary()}"
    if requested != "fp16":
        if report.reduced_tensors:
            line += f"; note: {report.reduced_tensors} reduced-precision tensors in an fp32 build"
        return "fp32", line
    if report.complete() and report.reduced_tensors == 0:
        raise VCEError(
            f"the engine was requested fp16 but every one of its {sum(report.tensors.values())} inspected tensors "
            "is fp32 (or integer): TensorRT built an fp32 engine. Build from the typed fp16 graph (`vce-export "
            "fp16` first); TensorRT 11 has no FP16 builder flag"
        )
    if strongly_typed and network_half:
        verified = "confirmed" if report.reduced_tensors else "not visible to the inspector"
        return "fp16", f"{line}; fp16 {verified}"
    if report.reduced_tensors:
        return "fp16", f"{line}; fp16 seen by the inspector"
    return UNVERIFIED, f"{line}; fp16 unverified"
