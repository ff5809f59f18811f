"""Shared test configuration: the hardware markers skip with a reason where their needs are absent.

- ``gpu``: torch with a CUDA GPU (``torch.cuda.is_available()``);
- ``tensorrt``: TensorRT's Python package, cuda-python and a CUDA device cuda-python can open. It
  does *not* need torch with CUDA: a TensorRT machine with a CPU-only torch runs these tests (a
  test that also needs torch on the GPU carries both markers).

Markers are read with ``get_closest_marker``, not ``item.keywords``: keywords also hold the names
of the folders above a test, so a checkout in a folder called ``gpu`` would skip everything.
"""

from __future__ import annotations

import functools
import importlib.util

import pytest


@functools.cache
def _cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU visible to torch on this machine"


@functools.cache
def _tensorrt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'vce[trt-cu13]' or 'vce[trt-cu12]' on a GPU machine)"
    from vce.runtime.backends import cuda_rt
    from vce.runtime.errors import VCEError

    try:
        cuda_rt.gpu_info(0)
    except VCEError as exc:  # cuda-python missing, no driver or no device: one line says which
        return str(exc)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("tensorrt") and (reason := _tensorrt_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
        elif item.get_closest_marker("gpu") and (reason := _cuda_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
