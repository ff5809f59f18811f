"""Shared test configuration: gpu/tensorrt markers skip with a reason where the hardware is absent."""

from __future__ import annotations

import functools
import importlib.util

import pytest


@functools.cache
def _cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU on this machine"


@functools.cache
def _tensorrt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'vce[trt]' on a GPU machine)"
    return _cuda_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tensorrt" in item.keywords and (reason := _tensorrt_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
        elif "gpu" in item.keywords and (reason := _cuda_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
