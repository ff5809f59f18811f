"""The engine sidecar's rules (vce.runtime.engine_info): where an engine may run, one clear line when not.

The rules are NVIDIA's (cited in the module): platform-specific engines; version-compatible
engines need the building version or later, across majors only 8 -> 10 and 10 -> 11; hardware
compatible (AMPERE_PLUS) engines need compute capability 8.0+; a DLA engine needs its DLA core.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from runtime_testdata import make_bundle

from vce.runtime.backends.select import choose_backend
from vce.runtime.backends.trt import check_engine
from vce.runtime.bundle import Bundle, sha256_file
from vce.runtime.engine_info import EngineInfo, Machine, version_tuple
from vce.runtime.errors import VCEError

L4 = Machine("NVIDIA L4", "8.9", "10.8.0.43", os="Linux x86_64")


def _info(**kw: object) -> EngineInfo:
    base: dict[str, object] = {
        "gpu_name": "NVIDIA L4",
        "compute_capability": "8.9",
        "tensorrt_version": "10.8.0.43",
        "precision": "fp16",
        "profile": {},
        "source_onnx": "model_fp16.onnx",
        "source_onnx_sha256": "a" * 64,
        "os": "Linux x86_64",
    }
    return EngineInfo(**{**base, **kw})  # type: ignore[arg-type]


def _fails(info: EngineInfo, machine: Machine, pattern: str) -> None:
    with pytest.raises(VCEError, match=pattern) as err:
        info.check_machine(machine, "model.engine")
    assert "\n" not in str(err.value) and "vce-export trt" in str(err.value)


def test_version_tuple():
    assert version_tuple("10.3.0.30") == (10, 3, 0, 30)
    assert version_tuple("10.14.1.48.post1") == (10, 14, 1, 48)
    assert version_tuple("11.4.0") > version_tuple("10.16.1.11")


def test_plain_engines_need_the_same_gpu_tensorrt_and_os():
    _info().check_machine(L4, "model.engine")
    _fails(
        _info(),
        Machine("NVIDIA A10", "8.6", "10.8.0.43", os="Linux x86_64"),
        r"built for NVIDIA L4 \(sm 8\.9\)",
    )
    _fails(
        _info(),
        Machine("NVIDIA L4", "8.9", "10.9.0.34", os="Linux x86_64"),
        "or build with --version-compatible",
    )
    _fails(_info(), Machine("NVIDIA L4", "8.9", "10.8.0.43", os="Windows AMD64"), "built on Linux x86_64")


@pytest.mark.parametrize(
    ("built", "running", "ok"),
    [
        ("10.8.0.43", "10.8.0.43", True),
        ("10.8.0.43", "10.16.1.11", True),  # later 10.x
        ("10.8.0.43", "11.4.0.106", True),  # 10 -> 11 is a supported cross-major pair
        ("10.8.0.43", "10.3.0.30", False),  # older runtime
        ("11.1.0.106", "10.16.1.11", False),  # newer-built engine on an older major
        ("8.6.1", "11.4.0.106", False),  # 8 -> 11 is not supported
        ("8.6.1", "10.3.0", True),
    ],
)
def test_version_compatible_engines(built, running, ok):
    info = _info(tensorrt_version=built, version_compatible=True)
    machine = Machine("NVIDIA L4", "8.9", running, os="Linux x86_64")
    if ok:
        info.check_machine(machine, "model.engine")
    else:
        _fails(info, machine, "version-compatible")


def test_hardware_compatible_engines_need_ampere_or_newer():
    info = _info(hardware_compatible=True)
    info.check_machine(Machine("NVIDIA H100 80GB HBM3", "9.0", "10.8.0.43", os="Linux x86_64"), "e")
    info.check_machine(Machine("NVIDIA A10", "8.6", "10.8.0.43", os="Linux x86_64"), "e")
    _fails(
        info, Machine("Tesla T4", "7.5", "10.8.0.43", os="Linux x86_64"), "compute capability 8.0 or higher"
    )


def test_dla_engines_need_their_core():
    info = _info(gpu_name="Orin", compute_capability="8.7", dla_core=1, os="Linux aarch64")
    orin = Machine("Orin", "8.7", "10.8.0.43", os="Linux aarch64", dla_cores=2)
    info.check_machine(orin, "e")
    _fails(
        info,
        Machine("Orin", "8.7", "10.8.0.43", os="Linux aarch64", dla_cores=1),
        "DLA core 1, this device has 1",
    )


def test_check_engine_uses_this_machine_os(tmp_path: Path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    _info(os="Plan9 mips").save(tmp_path / "model.engine.json")
    with pytest.raises(VCEError, match="built on Plan9 mips, this machine is"):
        check_engine(engine, gpu=("NVIDIA L4", "8.9"), trt_version="10.8.0.43")


def test_auto_skips_an_engine_built_from_another_graph(tmp_path: Path):
    root = make_bundle(tmp_path / "bundle")
    bundle = Bundle.load(root)
    shutil.copy(root / "model.onnx", root / "model_fp16.onnx")
    bundle.add_file("model_fp16.onnx", "fp16")
    (root / "model.engine").write_bytes(b"engine")
    info = _info(source_onnx_sha256="f" * 64)  # an engine built from an older fp16 graph
    info.save(root / "model.engine.json")
    bundle.add_file("model.engine", "engine")
    bundle.add_file("model.engine.json", "engine-sidecar")
    bundle.manifest.engines = [{"file": "model.engine", "sidecar": "model.engine.json"}]
    bundle.save()
    bundle = Bundle.load(root)

    def machine_ok(engine: Path, sidecar: Path) -> EngineInfo:
        return check_engine(
            engine, sidecar, gpu=("NVIDIA L4", "8.9"), trt_version="10.8.0.43", os_name="Linux x86_64"
        )

    choice = choose_backend(bundle, available=["trt", "ort-cpu"], check_engine=machine_ok)
    assert choice.backend == "ort-cpu"
    assert "built from a different model_fp16.onnx (sha256 ffffffffffff..." in choice.note
    with pytest.raises(VCEError, match=r"built from a different model_fp16\.onnx"):
        choose_backend(bundle, "trt", available=["trt", "ort-cpu"], check_engine=machine_ok)
    info.source_onnx_sha256 = sha256_file(root / "model_fp16.onnx")
    info.save(root / "model.engine.json")
    bundle.add_file("model.engine.json", "engine-sidecar")
    bundle.save()
    assert choose_backend(Bundle.load(root), available=["trt"], check_engine=machine_ok).backend == "trt"
