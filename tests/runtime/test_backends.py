"""Backend choice (auto, --graph), engine/GPU mismatch, and the TensorRT runner (where TensorRT exists)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_testdata import make_bundle, make_onnx

from vce.runtime.backends.ort import OrtRunner
from vce.runtime.backends.select import choose_backend
from vce.runtime.backends.trt import check_engine
from vce.runtime.bundle import Bundle, sha256_file
from vce.runtime.engine_info import EngineInfo
from vce.runtime.errors import VCEError

ORIN = ("Orin", "8.7")
H100 = ("NVIDIA H100 80GB HBM3", "9.0")


def _sidecar(gpu: tuple[str, str], trt: str = "10.3.0", source_sha256: str = "0" * 64) -> EngineInfo:
    return EngineInfo(
        gpu_name=gpu[0],
        compute_capability=gpu[1],
        tensorrt_version=trt,
        precision="fp16",
        profile={"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [16, 3, 32, 32]},
        source_onnx="model_fp16.onnx",
        source_onnx_sha256=source_sha256,
    )


@pytest.fixture
def full_bundle(tmp_path: Path) -> Bundle:
    """A bundle with fp32 + fp16 graphs and an engine built (per its sidecar) for a Jetson Orin."""
    root = make_bundle(tmp_path / "bundle")
    bundle = Bundle.load(root)
    shutil.copy(root / "model.onnx", root / "model_fp16.onnx")
    bundle.add_file("model_fp16.onnx", "fp16")
    (root / "model.engine").write_bytes(b"serialized engine bytes")  # only its sidecar is read here
    _sidecar(ORIN, source_sha256=sha256_file(root / "model_fp16.onnx")).save(root / "model.engine.json")
    bundle.add_file("model.engine", "engine")
    bundle.add_file("model.engine.json", "engine-sidecar")
    bundle.manifest.engines = [{"file": "model.engine", "sidecar": "model.engine.json"}]
    bundle.save()
    return Bundle.load(root)


def _checker(gpu: tuple[str, str], trt: str):  # type: ignore[no-untyped-def]
    return lambda engine, sidecar: check_engine(engine, sidecar, gpu=gpu, trt_version=trt)


def test_auto_picks_the_fastest_backend_that_can_run_the_bundle(full_bundle: Bundle) -> None:
    on_orin = choose_backend(
        full_bundle, available=["trt", "ort-cuda", "ort-cpu"], check_engine=_checker(ORIN, "10.3.0")
    )
    assert (on_orin.backend, on_orin.graph, on_orin.model.name) == ("trt", "engine", "model.engine")
    assert on_orin.model_hash == full_bundle.manifest.files["model.engine"]["sha256"]
    on_h100 = choose_backend(
        full_bundle, available=["trt", "ort-cuda", "ort-cpu"], check_engine=_checker(H100, "10.3.0")
    )
    assert (on_h100.backend, on_h100.graph) == ("ort-cuda", "fp16")  # the engine does not fit this GPU
    assert (
        "skipped trt" in on_h100.note and "built for Orin (sm 8.7), this GPU is NVIDIA H100" in on_h100.note
    )
    cpu = choose_backend(full_bundle, available=["ort-cpu"])
    assert (cpu.backend, cpu.graph) == ("ort-cpu", "fp32") and "trt (not installed)" in cpu.note


def test_explicit_backend_and_graph(full_bundle: Bundle) -> None:
    forced = choose_backend(full_bundle, "ort-cpu", "fp16", available=["ort-cpu"])
    assert forced.model.name == "model_fp16.onnx"
    with pytest.raises(VCEError, match="has no int8 graph"):
        choose_backend(full_bundle, "ort-cpu", "int8", available=["ort-cpu"])
    with pytest.raises(VCEError, match=r"backend trt is not available here.*vce\[trt-cu13\]"):
        choose_backend(full_bundle, "trt", available=["ort-cpu"])
    with pytest.raises(VCEError, match="unknown --backend"):
        choose_backend(full_bundle, "cuda", available=["ort-cpu"])
    with pytest.raises(VCEError, match=r"built with TensorRT 10\.3\.0, this machine has 11\.1\.0"):
        choose_backend(full_bundle, "trt", available=["trt"], check_engine=_checker(ORIN, "11.1.0"))


@pytest.mark.parametrize(("within", "expect"), [(True, "int8-dynamic"), (False, "fp32"), (None, "fp32")])
def test_cpu_default_is_the_dynamic_int8_graph_only_when_it_passed_its_drift_check(
    full_bundle: Bundle, within: bool | None, expect: str
) -> None:
    root = full_bundle.root
    shutil.copy(root / "model.onnx", root / "model_int8_dynamic.onnx")
    extra = {} if within is None else {"within_tolerance": within}
    full_bundle.add_file("model_int8_dynamic.onnx", "int8-dynamic", **extra)
    full_bundle.save()
    bundle = Bundle.load(root)
    cpu = choose_backend(bundle, "ort-cpu", available=["ort-cpu"])
    assert cpu.graph == expect
    assert choose_backend(bundle, "auto", available=["ort-cpu"]).graph == expect
    assert choose_backend(bundle, "ort-cpu", "fp32", available=["ort-cpu"]).graph == "fp32"
    # the GPU backends keep their fp16 graph
    assert choose_backend(bundle, "ort-cuda", available=["ort-cuda"]).graph == "fp16"


def test_engine_sidecar_checks(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    _sidecar(ORIN).save(tmp_path / "model.engine.json")
    assert check_engine(engine, gpu=ORIN, trt_version="10.3.0").gpu_name == "Orin"
    with pytest.raises(VCEError, match="rebuild it here with `vce-export trt`"):
        check_engine(engine, gpu=H100, trt_version="10.3.0")
    (tmp_path / "model.engine.json").unlink()
    with pytest.raises(VCEError, match="engine sidecar missing"):
        check_engine(engine, gpu=ORIN, trt_version="10.3.0")


@pytest.mark.tensorrt
def test_tensorrt_runner_matches_onnx_runtime(tmp_path: Path) -> None:
    import tensorrt as trt

    from vce.runtime.backends.trt import TensorRTRunner, gpu_info

    onnx_path = make_onnx(tmp_path / "model.onnx", size=32)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    config.add_optimization_profile(profile)
    engine = tmp_path / "model.engine"
    engine.write_bytes(bytes(builder.build_serialized_network(network, config)))
    gpu = gpu_info()
    _sidecar(gpu, trt.__version__).save(tmp_path / "model.engine.json")
    x = np.random.default_rng(0).normal(size=(11, 3, 32, 32)).astype(np.float32)  # > max batch: split
    with TensorRTRunner(engine) as runner:
        got = runner.infer(x)
    want = OrtRunner(onnx_path).infer(x)
    np.testing.assert_allclose(got["probs"], want["probs"], atol=1e-5)
    np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-4)
    _sidecar(("Some Other GPU", "5.0"), trt.__version__).save(tmp_path / "model.engine.json")
    with pytest.raises(VCEError, match="built for Some Other GPU"):
        TensorRTRunner(engine)
