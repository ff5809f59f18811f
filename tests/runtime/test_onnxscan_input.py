"""Reading an ONNX graph's input from the protobuf (vce.runtime.onnxscan, for the TensorRT provider's
profile), checked against onnx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from runtime_testdata import make_onnx

from vce.runtime.errors import VCEError
from vce.runtime.onnxscan import first_input


def test_matches_onnx_on_the_test_model(tmp_path: Path) -> None:
    path = make_onnx(tmp_path / "m.onnx", size=32)
    got = first_input(path)
    want = onnx.load(str(path)).graph.input[0]
    assert got.name == want.name == "images"
    assert got.dtype == "float32"
    assert got.shape[1:] == (3, 32, 32) and isinstance(got.shape[0], str)  # the dynamic batch axis


def test_uint8_nhwc_input_after_large_weights_and_initializer_inputs(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((512, 1024), np.float32), "W")  # 2 MB of weights before the inputs
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Identity", ["W"], ["w"]),
        ],
        "g",
        [
            helper.make_tensor_value_info(
                "W", TensorProto.FLOAT, [512, 1024]
            ),  # an initializer listed as input
            helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", 224, 224, 3]),
        ],
        [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 224, 224, 3])],
        initializer=[w],
    )
    path = tmp_path / "u8.onnx"
    onnx.save(helper.make_model(graph), str(path))
    got = first_input(path)
    assert (got.name, got.dtype, got.shape) == ("frames", "uint8", ("N", 224, 224, 3))


def test_not_onnx_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(VCEError, match="not a valid ONNX graph"):
        first_input(bad)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(VCEError, match=r"empty file, not an ONNX graph"):
        first_input(tmp_path / "empty.onnx")
