"""The uint8 graph: ``images`` uint8 [N,S,S,3] RGB in, the normalisation done inside the graph.

``vce-export onnx --input uint8`` puts five nodes in front of the float graph::

    images uint8 [N,S,S,3] -> Transpose(0,3,1,2) -> Cast(float32) -> Mul(scale) -> Sub(mean)
                           -> Mul(inv_std) -> the float graph's first node

with the constants of :func:`vce.runtime.preprocess.normalise_constants`, in the order of
:func:`vce.runtime.preprocess.normalise`'s table, so each value is computed by the same float32
operations and the outputs are bit-identical to the float graph fed by ``normalise()``. (The
transpose moves bytes only; done first, on uint8, it is 4x less memory traffic, and the per-channel
constants [1,3,1,1] then broadcast over whole planes, which ONNX Runtime's CPU kernels do ~3x
faster than a [1,1,1,3] broadcast over NHWC.) The host sends 1 byte per channel instead of 4 and
skips the normalisation; the accelerator does it.

The typed fp16 graph keeps these nodes in fp32 (:data:`PREAMBLE_PREFIX` names them); INT8
quantization quantizes only weighted layers, so they stay float there too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np

from vce.runtime.errors import VCEError
from vce.runtime.lazy import require
from vce.runtime.preprocess import PreprocessSpec, normalise_constants


class InputKind(StrEnum):
    """A bundle graph's input: normalised float32 NCHW, or RGB uint8 NHWC normalised inside the graph."""

    FLOAT32 = "float32"
    UINT8 = "uint8"


INPUT_KINDS = tuple(k.value for k in InputKind)
#: every node and constant of the preamble is named with this prefix
PREAMBLE_PREFIX = "vce_u8_"


def input_description(kind: str, image_size: int, name: str = "images") -> dict[str, Any]:
    """The manifest's description of a graph input of ``kind`` (float32 NCHW or uint8 NHWC)."""
    if check_input_kind(kind) == InputKind.UINT8:
        return {"name": name, "dtype": "uint8", "layout": "NHWC", "shape": ["N", image_size, image_size, 3]}
    return {"name": name, "dtype": "float32", "layout": "NCHW", "shape": ["N", 3, image_size, image_size]}


def check_input_kind(kind: str) -> InputKind:
    """``kind`` as an :class:`InputKind`; one clear line if vce makes no such graph input."""
    if kind not in INPUT_KINDS:
        raise VCEError(f"unknown graph input {kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    return InputKind(kind)


def add_uint8_input(model: Any, spec: PreprocessSpec) -> Any:
    """Turn a float32 [N,3,S,S] ``images`` graph into a uint8 [N,S,S,3] one (in place; returned).

    Raises VCEError if the graph does not have one float32 NCHW input.
    """
    onnx = require("onnx", "the uint8 graph")
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if len(graph.input) != 1:
        raise VCEError(f"the graph has {len(graph.input)} inputs; a uint8 input needs exactly one")
    old = graph.input[0]
    tt = old.type.tensor_type
    dims = list(tt.shape.dim)
    if tt.elem_type != TensorProto.FLOAT or len(dims) != 4 or dims[1].dim_value != 3:
        raise VCEError(f"input {old.name} is not float32 [N,3,H,W]; it already takes uint8 or another layout")
    name = old.name
    inner = f"{PREAMBLE_PREFIX}normalised"
    for node in graph.node:  # the body now reads the preamble's output
        for i, x in enumerate(node.input):
            if x == name:
                node.input[i] = inner
    scale, mean, inv_std = normalise_constants(spec)
    consts = {
        "scale": np.asarray(scale, dtype=np.float32),
        "mean": mean.reshape(1, 3, 1, 1),
        "inv_std": inv_std.reshape(1, 3, 1, 1),
    }
    for key, value in consts.items():
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), PREAMBLE_PREFIX + key))
    p = PREAMBLE_PREFIX
    preamble = [
        helper.make_node("Transpose", [name], [p + "nchw"], perm=[0, 3, 1, 2], name=p + "to_nchw"),
        helper.make_node("Cast", [p + "nchw"], [p + "float"], to=TensorProto.FLOAT, name=p + "cast"),
        helper.make_node("Mul", [p + "float", p + "scale"], [p + "scaled"], name=p + "scale_mul"),
        helper.make_node("Sub", [p + "scaled", p + "mean"], [p + "centred"], name=p + "mean_sub"),
        helper.make_node("Mul", [p + "centred", p + "inv_std"], [inner], name=p + "std_mul"),
    ]
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(preamble + body)
    batch = dims[0].dim_param or (str(dims[0].dim_value) if dims[0].HasField("dim_value") else "N")
    size_h, size_w = dims[2], dims[3]
    shape: list[Any] = [
        batch,
        size_h.dim_param or size_h.dim_value,
        size_w.dim_param or size_w.dim_value,
        3,
    ]
    new_input = helper.make_tensor_value_info(name, TensorProto.UINT8, shape)
    graph.input.remove(old)
    graph.input.append(new_input)
    onnx.checker.check_model(model)
    return model


def is_preamble_node(node: Any) -> bool:
    """A node of the uint8 preamble (kept in fp32 by the fp16 conversion)."""
    return str(node.name).startswith(PREAMBLE_PREFIX)
