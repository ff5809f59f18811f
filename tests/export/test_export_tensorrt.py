"""TensorRT: the engine-inspection logic (pure parsing) here; the real build where TensorRT and a GPU exist."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from vce.export.tensorrt_build import BuildOptions, check_precision, layer_precisions
from vce.runtime.errors import VCEError


def _layer(name: str, kind: str, out_fmt: str, in_fmt: str | None = None) -> dict:
    """A layer as IEngineInspector prints it with DETAILED verbosity (JSON format)."""

    def tensor(fmt: str) -> dict:
        return {"Name": "t", "Location": "Device", "Dimensions": [8, 197, 768], "Format/Datatype": fmt}

    return {
        "Name": name,
        "LayerType": kind,
        "Inputs": [tensor(in_fmt or out_fmt)],
        "Outputs": [tensor(out_fmt)],
    }


FP16_ENGINE = {"Layers": [
    _layer("patch_embed", "CaskConvolution", "Row major linear FP16 format", "Row major linear FP32 format"),
    _layer("blocks.0.attn", "CaskGemm", "Channel major FP16 format where channel % 8 == 0"),
    _layer("blocks.0.norm1", "Normalization", "Row major linear FP32 format", "Row major linear FP16 format"),
    _layer("head", "CaskGemm", "Row major linear FP32 format"),
]}  # fmt: skip
FP32_ENGINE = {"Layers": [_layer(f"l{i}", "CaskGemm", "Row major linear FP32 format") for i in range(5)]}
MYELIN_ENGINE = {"Layers": [_layer("{ForeignNode[/model/...]}", "Myelin", "Row major linear FP32 format")]}


def test_fp16_engine_histogram():
    hist, opaque, half = layer_precisions(json.dumps(FP16_ENGINE))
    assert hist == Counter({"Half": 2, "Float": 2})
    assert opaque == 0 and half == 4
    assert check_precision("fp16", hist, opaque, half, network_half=100) == "fp16"


def test_requested_fp16_that_came_out_fp32_is_refused():
    hist, opaque, half = layer_precisions(FP32_ENGINE)
    assert hist == Counter({"Float": 5}) and half == 0
    with pytest.raises(VCEError, match="built an fp32 engine"):
        check_precision("fp16", hist, opaque, half, network_half=0)
    assert check_precision("fp32", hist, opaque, half, network_half=0) == "fp32"


def test_opaque_myelin_engine_relies_on_the_typed_network():
    hist, opaque, half = layer_precisions(MYELIN_ENGINE)
    assert opaque == 1
    assert check_precision("fp16", hist, opaque, half, network_half=250) == "fp16"
    with pytest.raises(VCEError):
        check_precision("fp16", hist, opaque, half, network_half=0)


def test_build_options_are_checked():
    with pytest.raises(VCEError, match="batch sizes"):
        BuildOptions(min_batch=4, opt_batch=2).check()
    with pytest.raises(VCEError, match="precision"):
        BuildOptions(precision="int4").check()


@pytest.mark.tensorrt
@pytest.mark.slow
def test_build_fp16_and_fp32_engines_and_parity(tiny_bundle, tmp_path):
    import shutil

    from vce.export.bundle_io import resolve_model
    from vce.export.parity import run_parity, synthetic_frames
    from vce.export.tensorrt_build import add_engine
    from vce.runtime.bundle import Bundle
    from vce.runtime.engine_info import EngineInfo

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    cache = tmp_path / "timing.cache"
    _, info16 = add_engine(root, BuildOptions(precision="fp16", max_batch=8, opt_batch=4, timing_cache=cache))
    _, info32 = add_engine(root, BuildOptions(precision="fp32", max_batch=8, opt_batch=4, timing_cache=cache))
    assert info16.precision == "fp16" and info32.precision == "fp32"
    assert cache.is_file()
    side = EngineInfo.load(root / "model.engine.json")
    assert side.profile == {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 3, 224, 224]}
    b = Bundle.load(root)
    assert [e["precision"] for e in b.manifest.engines] == ["fp16", "fp32"]
    model, _ = resolve_model("tiny", "paper", seed=0)
    images, frames = synthetic_frames(b.manifest.preprocess_spec(), 16)
    report = run_parity(model, b, images, frames, targets=["trt"], batch=8)
    assert report.passed, report.to_dict()
