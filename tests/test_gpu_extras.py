"""The GPU extras pin matching majors: TensorRT, cuda-python and onnxruntime-gpu for one CUDA major each.

Facts checked against PyPI (December 2026): ``tensorrt`` 11.x depends on ``tensorrt_cu13``;
``tensorrt-cu12`` also ships 11.x, so CUDA 12 / TensorRT 10 needs an upper bound; onnxruntime-gpu
1.26 requires ``nvidia-*-cu12`` for its cuda extra, 1.27 ``nvidia-*-cu13``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement  # pytest's own dependency
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _extras() -> dict[str, dict[str, Requirement]]:
    data = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return {name: {Requirement(r).name: Requirement(r) for r in reqs} for name, reqs in data.items()}


def _allows(req: Requirement, version: str) -> bool:
    return req.specifier.contains(Version(version), prereleases=True)


def test_tensorrt_extras_keep_tensorrt_and_cuda_python_on_one_cuda_major() -> None:
    extras = _extras()
    cu12, cu13 = extras["trt-cu12"], extras["trt-cu13"]
    assert _allows(cu12["tensorrt-cu12"], "10.16.1.11") and not _allows(cu12["tensorrt-cu12"], "11.4.0.106")
    assert _allows(cu12["cuda-bindings"], "12.9.10") and not _allows(cu12["cuda-bindings"], "13.0.0")
    assert _allows(cu13["tensorrt-cu13"], "11.4.0.106") and not _allows(cu13["tensorrt-cu13"], "10.16.1.11")
    assert _allows(cu13["cuda-bindings"], "13.5.0") and not _allows(cu13["cuda-bindings"], "12.9.10")
    assert "tensorrt" not in cu12 and "tensorrt" not in cu13  # the unpinned meta package follows CUDA 13


def test_onnxruntime_gpu_extras_follow_the_cuda_major_of_the_wheels() -> None:
    extras = _extras()
    ort12, ort13 = extras["gpu-cu12"]["onnxruntime-gpu"], extras["gpu-cu13"]["onnxruntime-gpu"]
    assert _allows(ort12, "1.26.0") and not _allows(ort12, "1.27.0")
    assert _allows(ort13, "1.27.0") and _allows(ort13, "1.31.1") and not _allows(ort13, "1.26.0")
    assert str(extras["trt"]["vce"]) == "vce[trt-cu13]" and str(extras["gpu"]["vce"]) == "vce[gpu-cu13]"
