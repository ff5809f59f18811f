"""TensorRT engines: the inspector report on real layouts, the build steps against a stand-in, the real build.

The inspector fixtures are laid out as TensorRT prints them, each with its source:

- TensorRT 10, classic kernels: ``"Format/Datatype"`` holds a format naming the type
  (NVIDIA/TensorRT#3876, a TensorRT 10 engine's DETAILED layer JSON: ``"Location": "Device",
  "Dimensions": [1,50,160,160], "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"``).
- TensorRT 10, Myelin kernels: one layer per kernel, names ``<op>_myl0_<i>`` / ``__myl_<...>_myl0_<i>``,
  layer types ``gemm`` / ``kgen``, ``"Format/Datatype"`` the bare type (``Float``), plus
  ``TacticName``, ``StreamId``, ``Metadata`` (NVIDIA/TensorRT ``samples/sampleEditableTimingCache/
  README.md``, output of a 10.8 run; ``kgen`` as in ``tools/experimental/trt-engine-explorer/trex/
  colors.py`` of release/10.13).
- TensorRT 11: ``"Format"`` and ``"Datatype"`` instead of ``"Format/Datatype"``, ``"I/O Tensors"``
  instead of ``"Bindings"`` (TensorRT 11 migration guide, IEngineInspector page; tensor fields as in
  NVIDIA/TensorRT ``.agents/skills/trt-perf-analysis/schemas/analyze-data.schema.json``).
- No execution context: shape-dependent dimensions -1, no format (``IEngineInspector::
  setExecutionContext``, NvInferRuntime.h); ``"N/A"`` as Polygraphy's inspector reader expects it.
- TensorRT 8: one opaque ``{ForeignNode[...]}`` block of layer type ``Myelin`` (NVIDIA/TensorRT#2576).

The build-step tests use ``trt_builder_standin`` (see its docstring for what it stands in for).
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from trt_builder_standin import layers_file, stand_in

from vce.export import tensorrt_build
from vce.export.tensorrt_build import BuildOptions, add_engine, detect_features
from vce.export.trt_inspect import UNVERIFIED, inspect_layers, judge_precision, tensor_type
from vce.runtime.bundle import Bundle
from vce.runtime.engine_info import EngineInfo
from vce.runtime.errors import VCEError


def _t(dims: list[int], **fields: str) -> dict:
    return {"Name": "t", "Location": "Device", "Dimensions": dims, **fields}


TRT10_CLASSIC = {"Layers": [
    {"Name": "/patch_embed/proj/Conv", "LayerType": "CaskConvolution",
     "Inputs": [_t([8, 3, 224, 224], **{"Format/Datatype": "Row major linear FP16 format"})],
     "Outputs": [_t([8, 768, 14, 14], **{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"})],
     "TacticValue": "0x0000000000000000"},
    {"Name": "/head/Gemm", "LayerType": "CaskGemmMatrixMultiply",
     "Inputs": [_t([8, 768], **{"Format/Datatype": "Row major linear FP16 format"})],
     "Outputs": [_t([8, 17], **{"Format/Datatype": "Row major linear FP32 format"})]},
], "Bindings": ["images", "logits", "probs"]}  # fmt: skip

TRT10_MYELIN = {"Layers": [
    {"Name": "/blocks.0/attn/qkv/MatMul_myl0_0", "LayerType": "gemm",
     "Inputs": [_t([8, 197, 768], **{"Format/Datatype": "Half"}), _t([768, 2304], **{"Format/Datatype": "Half"})],
     "Outputs": [_t([8, 197, 2304], **{"Format/Datatype": "Half"})],
     "TacticName": "sm80_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x32", "StreamId": 0, "Metadata": ""},
    {"Name": "__myl_TraMaxSubExpSum_myl0_1", "LayerType": "kgen",
     "Inputs": [_t([8, 12, 197, 197], **{"Format/Datatype": "Half"})],
     "Outputs": [_t([8, 12, 197, 197], **{"Format/Datatype": "Float"})],
     "TacticName": "__myl_TraMaxSubExpSum_0xcbcb71f14cb4526fd18f61134658c571", "StreamId": 0, "Metadata": ""},
    {"Name": "__myl_shape_call_myl0_2", "LayerType": "shape_call", "Inputs": [], "Outputs": []},
], "Bindings": ["images", "logits", "probs"]}  # fmt: skip

TRT11 = {"Layers": [
    {"Name": "/blocks.0/attn/qkv/MatMul_myl0_0", "LayerType": "gemm",
     "Inputs": [_t([8, 197, 768], Format="Row major linear FP16 format (kLINEAR)", Datatype="Half")],
     "Outputs": [_t([8, 197, 2304], Format="Row major linear FP16 format (kLINEAR)", Datatype="Half")],
     "TacticName": "sm90_xmma_gemm_f16f16_f16f32", "StreamId": 0, "Metadata": ""},
    {"Name": "/norm/LayerNormalization_myl0_1", "LayerType": "kgen",
     "Inputs": [_t([8, 197, 768], Format="Row major linear FP16 format (kLINEAR)", Datatype="Half")],
     "Outputs": [_t([8, 197, 768], Format="Row major linear FP32 format (kLINEAR)", Datatype="Float")]},
], "I/O Tensors": [{"Name": "images", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 3, 224, 224],
                    "Location": "Device", "IsShapeInferenceIO": False}]}  # fmt: skip

NO_CONTEXT = {"Layers": [
    {"Name": "/blocks.0/attn/qkv/MatMul_myl0_0", "LayerType": "gemm",
     "Inputs": [_t([-1, 197, 768])], "Outputs": [_t([-1, 197, 2304])]},
    {"Name": "/head/MatMul_myl0_1", "LayerType": "gemm",
     "Inputs": [_t([-1, 768], **{"Format/Datatype": "N/A"})], "Outputs": [_t([-1, 17], **{"Format/Datatype": "N/A"})]},
]}  # fmt: skip

ALL_FP32 = {"Layers": [
    {"Name": f"/blocks.{i}/mlp/fc1/MatMul_myl0_{i}", "LayerType": "gemm",
     "Inputs": [_t([8, 197, 768], **{"Format/Datatype": "Float"})],
     "Outputs": [_t([8, 197, 3072], **{"Format/Datatype": "Row major linear FP32 format"})]}
    for i in range(4)
]}  # fmt: skip

TRT8_FOREIGN = {"Layers": [
    {"Name": "{ForeignNode[/blocks.0/norm1/Cast.../head/MatMul]}", "LayerType": "Myelin",
     "Inputs": [_t([8, 3, 224, 224], **{"Format/Datatype": "Row major linear FP32 format"})],
     "Outputs": [_t([8, 17], **{"Format/Datatype": "Row major linear FP32 format"})]},
]}  # fmt: skip


def test_both_layouts_give_the_same_types():
    assert tensor_type({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}) == "Half"
    assert tensor_type({"Format/Datatype": "Row major linear FP32 format"}) == "Float"
    assert tensor_type({"Format/Datatype": "Half"}) == "Half"  # a Myelin kernel in TensorRT 10
    assert tensor_type({"Format": "Row major linear FP16 format (kLINEAR)", "Datatype": "Half"}) == "Half"
    assert tensor_type({"Format": "Row major linear FP16 format (kLINEAR)", "Datatype": "Float"}) == "Float"
    assert tensor_type({"Datatype": "BFloat16"}) == "BFloat16"
    assert tensor_type({"Format/Datatype": "Row major linear UInt8 format"}) == "UInt8"
    for missing in (
        {},
        {"Format/Datatype": "N/A"},
        {"Datatype": "N/A"},
        {"Format": "Row major linear FP32 format"},
    ):
        assert tensor_type(missing) == UNVERIFIED  # never "Float"


def test_trt10_classic_and_trt11_reports():
    classic = inspect_layers(json.dumps(TRT10_CLASSIC))
    assert classic.histogram == {"Half": 1, "Float": 1} and classic.reduced_tensors == 3
    assert classic.complete() and classic.myelin_kernels == 0
    eleven = inspect_layers(TRT11)
    assert eleven.histogram == {"Half": 1, "Float": 1} and eleven.tensors == {"Half": 3, "Float": 1}
    assert eleven.myelin_kernels == 2 and eleven.opaque_blocks == 0
    assert judge_precision("fp16", eleven, network_half=300, strongly_typed=True)[0] == "fp16"


def test_trt10_myelin_kernels_are_evidence_not_opaque_blocks():
    report = inspect_layers(TRT10_MYELIN)
    assert report.myelin_kernels == 3 and report.opaque_blocks == 0
    assert report.histogram == {"Half": 1, "Float": 1, "other": 1}  # shape_call has no outputs
    precision, line = judge_precision("fp16", report, network_half=300, strongly_typed=True)
    assert precision == "fp16" and "fp16 confirmed" in line and "3 Myelin kernels" in line


def test_missing_types_are_unverified_and_never_refused():
    report = inspect_layers(NO_CONTEXT)
    assert report.tensors == {UNVERIFIED: 4} and not report.complete()
    precision, line = judge_precision("fp16", report, network_half=300, strongly_typed=True)
    assert precision == "fp16" and "not visible to the inspector" in line  # the typed network decides
    assert judge_precision("fp16", report, network_half=0, strongly_typed=False)[0] == UNVERIFIED
    names_only = inspect_layers({"Layers": ["conv1", "gemm2"]})
    assert names_only.names_only and judge_precision("fp16", names_only, 10, True)[0] == "fp16"


def test_an_fp16_build_is_refused_only_on_complete_evidence():
    fp32 = inspect_layers(ALL_FP32)
    with pytest.raises(VCEError, match="every one of its 8 inspected tensors is fp32") as err:
        judge_precision("fp16", fp32, network_half=300, strongly_typed=True)
    assert "\n" not in str(err.value)
    assert judge_precision("fp32", fp32, network_half=0, strongly_typed=True)[0] == "fp32"
    hidden = inspect_layers(TRT8_FOREIGN)  # an opaque block may run fp16 inside: no evidence
    assert hidden.opaque_blocks == 1 and not hidden.complete()
    assert judge_precision("fp16", hidden, network_half=0, strongly_typed=False)[0] == UNVERIFIED


def test_build_options_are_checked_on_construction():
    with pytest.raises(VCEError, match="batch sizes"):
        BuildOptions(min_batch=4, opt_batch=2)
    with pytest.raises(VCEError, match="precision"):
        BuildOptions(precision="int4")
    with pytest.raises(VCEError, match="cannot be combined"):
        BuildOptions(dla_core=0, hardware_compatible=True)
    with pytest.raises(VCEError, match="--workspace"):
        BuildOptions(workspace_mib=0)
    assert not hasattr(BuildOptions, "check")  # one place: __post_init__


# --- the build steps, against the stand-in ------------------------------------------------------


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    return root


def _use(monkeypatch, major: int, cc: str = "8.9", **kw):
    trt = stand_in(major, **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt_build, "gpu_info", lambda device=0: ("NVIDIA Stand-in", cc))
    return trt


@pytest.mark.parametrize(
    ("major", "typing", "flags"), [(11, "always", 0), (10, "flag", 1 << 1), (8, "weak", 1 << 0)]
)
def test_feature_detection_sets_each_typing_branch_where_it_belongs(
    bundle, tmp_path, monkeypatch, major, typing, flags
):
    trt = _use(monkeypatch, major)
    features = detect_features(trt)
    assert features.typing == typing
    _, info = add_engine(
        bundle, BuildOptions(precision="fp16", max_batch=8, opt_batch=4, layers_json=tmp_path / "l.json")
    )
    assert (
        trt.builders[0].networks[0].flags == flags
    )  # 11: no deprecated STRONGLY_TYPED; 10: bit 1; 8: EXPLICIT_BATCH
    config = trt.configs[0]
    assert ("FP16" in config.flags) is (
        typing == "weak"
    )  # the weak-typing flag only where nothing else exists
    assert "TF32" not in config.flags  # cleared unless asked for
    assert info.precision == "fp16" and info.strongly_typed is (typing != "weak")


def test_inspector_runs_through_a_context_at_the_opt_shape(bundle, tmp_path, monkeypatch):
    trt = _use(monkeypatch, 11)
    _, info = add_engine(
        bundle, BuildOptions(precision="fp16", max_batch=8, opt_batch=4, layers_json=tmp_path / "l.json")
    )
    [context] = trt.runtimes[-1].engine.contexts
    assert context.shapes == {"images": [4, 3, 224, 224]}
    layers = layers_file(tmp_path / "l.json")
    assert all(t["Dimensions"][0] == 4 and "Datatype" in t for layer in layers for t in layer["Outputs"])
    assert info.layer_precisions.get(UNVERIFIED, 0) == 0 and "fp16 confirmed" in info.precision_check
    # the old way, without a context: every type unverified, and the build still is not refused
    monkeypatch.setattr(
        tensorrt_build,
        "detect_features",
        lambda t: detect_features(t).__class__(**{**detect_features(t).__dict__, "inspector_context": False}),
    )
    _, info = add_engine(
        bundle, BuildOptions(precision="fp16", max_batch=8, opt_batch=4, layers_json=tmp_path / "l.json")
    )
    assert (
        set(info.layer_precisions) == {UNVERIFIED} and "not visible to the inspector" in info.precision_check
    )


def test_fp32_engine_and_sidecar(bundle, monkeypatch):
    _use(monkeypatch, 10)
    b, _ = add_engine(bundle, BuildOptions(precision="fp32", max_batch=8, opt_batch=4))
    side = EngineInfo.load(bundle / "model_fp32.engine.json")
    assert side.precision == "fp32" and side.profile == {
        "min": [1, 3, 224, 224],
        "opt": [4, 3, 224, 224],
        "max": [8, 3, 224, 224],
    }
    assert (
        side.source_onnx == "model.onnx"
        and side.source_onnx_sha256 == b.manifest.files["model.onnx"]["sha256"]
    )
    assert side.os and side.build_seconds is not None


def test_a_refused_timing_cache_stops_the_build(bundle, tmp_path, monkeypatch):
    _use(monkeypatch, 10)
    cache = tmp_path / "timing.cache"
    add_engine(bundle, BuildOptions(precision="fp16", timing_cache=cache))
    assert cache.read_bytes() == b"timing-cache:10.8.0.43"  # written after the build
    before = (bundle / "model.engine").read_bytes()
    trt = _use(monkeypatch, 11)  # a cache from another TensorRT
    with pytest.raises(VCEError, match="TensorRT refused this timing cache") as err:
        add_engine(bundle, BuildOptions(precision="fp16", timing_cache=cache))
    assert "\n" not in str(err.value)
    assert not trt.runtimes and (bundle / "model.engine").read_bytes() == before  # stopped before building


def test_dla_forces_static_shapes_and_sets_the_core(bundle, monkeypatch):
    trt = _use(monkeypatch, 10, cc="8.7", dla_cores=2)
    options = BuildOptions(precision="fp16", min_batch=1, opt_batch=4, max_batch=16, dla_core=1)
    assert "min = opt = max" in options.profile_batches()[3]
    _, info = add_engine(bundle, options)
    assert info.profile["min"] == info.profile["opt"] == info.profile["max"] == [4, 3, 224, 224]
    config = trt.configs[0]
    assert (config.default_device_type, config.DLA_core) == ("DLA", 1) and "GPU_FALLBACK" in config.flags
    assert trt.runtimes[-1].DLA_core == 1 and info.dla_core == 1
    with pytest.raises(VCEError, match="DLA core 2 requested, this device has 2 DLA cores"):
        add_engine(bundle, BuildOptions(precision="fp16", dla_core=2))


def test_version_and_hardware_compatibility(bundle, monkeypatch):
    trt = _use(monkeypatch, 11)
    _, info = add_engine(
        bundle, BuildOptions(precision="fp16", version_compatible=True, hardware_compatible=True)
    )
    assert (
        "VERSION_COMPATIBLE" in trt.configs[-1].flags
        and trt.configs[-1].hardware_compatibility_level == "AMPERE_PLUS"
    )
    assert trt.runtimes[-1].engine_host_code_allowed is True  # else the inspector could not load the plan
    assert info.version_compatible and info.hardware_compatible
    _use(monkeypatch, 11, cc="7.5")
    with pytest.raises(VCEError, match=r"must be built on an sm 8\.0"):
        add_engine(bundle, BuildOptions(precision="fp16", hardware_compatible=True))


def test_cli_prints_the_engine_it_just_built(bundle, monkeypatch, capsys):
    from vce.export.cli import main

    _use(monkeypatch, 10)
    for precision, name in (("fp16", "model.engine"), ("fp32", "model_fp32.engine")):
        monkeypatch.setattr(sys, "argv", ["vce-export", "trt", str(bundle), "--precision", precision])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 0
        assert f"wrote {bundle / name} ({precision};" in capsys.readouterr().err.replace("\n", "")
    assert [e["file"] for e in Bundle.load(bundle).manifest.engines] == ["model.engine", "model_fp32.engine"]


@pytest.mark.tensorrt
@pytest.mark.slow
def test_build_fp16_and_fp32_engines_and_parity(tiny_bundle, tmp_path):
    """The real thing: TensorRT builds both engines, the inspector confirms fp16, parity against PyTorch (CPU)."""
    from vce.export.parity import run_parity, synthetic_frames
    from vce.train.factory import resolve_model

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    cache = tmp_path / "timing.cache"
    layers = tmp_path / "layers.json"
    _, info16 = add_engine(
        root, BuildOptions(precision="fp16", max_batch=8, opt_batch=4, timing_cache=cache, layers_json=layers)
    )
    _, info32 = add_engine(root, BuildOptions(precision="fp32", max_batch=8, opt_batch=4, timing_cache=cache))
    assert info16.precision == "fp16" and info32.precision == "fp32"
    assert info16.layer_precisions.get(UNVERIFIED, 0) == 0, (
        info16.precision_check
    )  # the context made types visible
    assert cache.is_file() and layers.is_file()
    side = EngineInfo.load(root / "model.engine.json")
    assert side.profile == {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 3, 224, 224]}
    b = Bundle.load(root)
    assert [e["precision"] for e in b.manifest.engines] == ["fp16", "fp32"]
    model, _ = resolve_model("tiny", "paper", seed=0)
    images, frames = synthetic_frames(b.manifest.preprocess_spec(), 16)
    report = run_parity(model, b, images, frames, targets=["trt"], batch=8)
    assert report.passed, report.to_dict()
