"""Lazy imports of optional dependencies, with a message naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from vce.runtime.errors import MissingDependencyError

#: top-level module -> how to install it
INSTALL_HINTS: dict[str, str] = {
    "tensorrt": (
        "pip install 'vce[trt]' (= trt-cu13: TensorRT 11, CUDA 13, driver R580+) or 'vce[trt-cu12]' "
        "(TensorRT 10, CUDA 12, driver R525+); on a Jetson TensorRT comes with JetPack"
    ),
    "matplotlib": "pip install 'vce[plots]'",
    "onnx": "pip install 'vce[int8]'",
    "scipy": "pip install scipy",
    "torch": "pip install 'vce[train]'",
    "torchvision": "pip install 'vce[train]'",
    "open_clip": "pip install 'vce[train]'",
    "timm": "pip install 'vce[train]'",
    "safetensors": "pip install 'vce[train]'",
    "onnxscript": "pip install 'vce[export]'",
    "onnxconverter_common": "pip install 'vce[export]'",
    "onnxruntime": "pip install onnxruntime (CPU) or 'vce[gpu]' (CUDA)",
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        what = f" for {purpose}" if purpose else ""
        hint = INSTALL_HINTS.get(top, f"pip install {top}")
        raise MissingDependencyError(f"{top} is not installed{what}; install it with: {hint}") from exc
