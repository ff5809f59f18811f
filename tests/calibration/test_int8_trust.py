"""INT8 quantization refuses graphs with external data (issue 11, hole 1): the quantizer would load
the external file into the INT8 graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx.external_data_helper import convert_model_to_external_data  # noqa: E402
from tinymodel import build_tiny_vit  # noqa: E402

from vce.calibration.int8 import quantize_dynamic_int8, quantize_static_qdq  # noqa: E402
from vce.runtime.errors import VCEError  # noqa: E402


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_refuses_a_graph_with_external_data(mode: str, tmp_path: Path) -> None:
    src = build_tiny_vit(tmp_path / "model.onnx", image_size=32)
    model = onnx.load(str(src))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    onnx.save(model, str(src))
    out = tmp_path / "model_int8.onnx"
    with pytest.raises(VCEError, match="stores tensor data in external files"):
        if mode == "static":
            quantize_static_qdq(src, out, np.zeros((4, 3, 32, 32), np.float32))
        else:
            quantize_dynamic_int8(src, out)
    assert not out.exists()
