"""An ONNX graph's first input (name, element type, shape) read straight from the protobuf, without onnx.

The TensorRT provider needs the input's shape before its session exists (for the profile), and an
ONNX Runtime CPU session cannot always be made to ask (an fp16 graph may have no CPU kernels), and
the runtime does not depend on ``onnx``. The file is memory-mapped and walked by protobuf wire
format, skipping the weights by their length, so even a large graph costs a few reads.

Field numbers from ``onnx/onnx.proto`` (onnx/onnx): ModelProto.graph = 7; GraphProto.input = 11,
GraphProto.initializer = 5; ValueInfoProto.name = 1, .type = 2; TypeProto.tensor_type = 1;
TypeProto.Tensor.elem_type = 1, .shape = 2; TensorShapeProto.dim = 1; Dimension.dim_value = 1,
.dim_param = 2. Element types: TensorProto.DataType (FLOAT = 1, UINT8 = 2, FLOAT16 = 10, ...).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vce.runtime.errors import VCEError

ELEM_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}


class _Bad(Exception):
    pass


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Bad
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or payload start, payload end) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Bad
            yield field, wire, pos, pos + length
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise _Bad


def _sub(buf: mmap.mmap | bytes, start: int, end: int, number: int) -> Iterator[tuple[int, int]]:
    for field, wire, a, b in _fields(buf, start, end):
        if field == number and wire == 2:
            yield a, b


@dataclass(frozen=True)
class GraphInput:
    name: str
    elem_type: str  # "float32", "float16", "uint8", ...
    shape: tuple[int | str, ...]  # ints, or the symbolic name of a dynamic axis


def _input(buf: mmap.mmap | bytes, a: int, b: int) -> GraphInput:
    name, elem, dims = "", "unknown", []
    for field, wire, x, y in _fields(buf, a, b):
        if field == 1 and wire == 2:
            name = bytes(buf[x:y]).decode("utf-8", "replace")
        elif field == 2 and wire == 2:
            for ta, tb in _sub(buf, x, y, 1):  # tensor_type
                for f, w, u, v in _fields(buf, ta, tb):
                    if f == 1 and w == 0:
                        elem = ELEM_TYPES.get(u, f"type {u}")
                    elif f == 2 and w == 2:
                        for da, db in _sub(buf, u, v, 1):  # dim
                            dim: int | str = "?"
                            for g, gw, p, q in _fields(buf, da, db):
                                if g == 1 and gw == 0:
                                    dim = p
                                elif g == 2 and gw == 2:
                                    dim = bytes(buf[p:q]).decode("utf-8", "replace")
                            dims.append(dim)
    return GraphInput(name, elem, tuple(dims))


def first_input(path: str | os.PathLike[str]) -> GraphInput:
    """The graph's first input that is not an initializer; one VCEError line if the file is not ONNX."""
    p = Path(path)
    try:
        with p.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            end = len(buf)
            for ga, gb in _sub(buf, 0, end, 7):  # ModelProto.graph
                initializers = set()
                inputs = []
                for field, wire, a, b in _fields(buf, ga, gb):
                    if field == 11 and wire == 2:
                        inputs.append(_input(buf, a, b))
                    elif field == 5 and wire == 2:  # an initializer's name (TensorProto.name = 8)
                        for f, w, x, y in _fields(buf, a, b):
                            if f == 8 and w == 2:
                                initializers.add(bytes(buf[x:y]).decode("utf-8", "replace"))
                for graph_input in inputs:
                    if graph_input.name not in initializers:
                        return graph_input
    except (OSError, ValueError, _Bad) as exc:
        raise VCEError(f"{p}: not a readable ONNX file ({type(exc).__name__}); re-export the bundle") from exc
    raise VCEError(f"{p}: the ONNX graph has no input; re-export the bundle")
