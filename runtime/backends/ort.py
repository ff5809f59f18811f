"""ONNX Runtime runners: CPU, CUDA and the TensorRT execution provider."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from vce.runtime.backends.base import Runner
from vce.runtime.errors import VCEError
from vce.runtime.lazy import require

PROVIDERS = {
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-cpu": ["CPUExecutionProvider"],
}
_REQUIRED = {
    "ort-trt": "TensorrtExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-cpu": "CPUExecutionProvider",
}


def ort_backends() -> list[str]:
    """ONNX Runtime backends whose execution provider this onnxruntime build offers."""
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [kind for kind, provider in _REQUIRED.items() if provider in have]


def trt_engine_available() -> bool:
    """TensorRT's Python API and a CUDA binding are importable (a GPU is checked when an engine loads)."""
    return importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("cuda") is not None


class OrtRunner(Runner):
    """An ONNX Runtime session on one execution provider (the ones after it are fallbacks)."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        kind: str = "ort-cpu",
        *,
        threads: int | None = None,
        provider_options: dict[str, dict[str, object]] | None = None,
    ) -> None:
        ort = require("onnxruntime", "ONNX Runtime inference")
        if kind not in PROVIDERS:
            raise VCEError(f"unknown ONNX Runtime backend {kind!r}")
        if kind not in ort_backends():
            raise VCEError(
                f"backend {kind} needs {_REQUIRED[kind]}, which this onnxruntime does not offer "
                f"(it has {', '.join(ort.get_available_providers())}); install 'vce[gpu]' on a CUDA machine"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        providers = [p for p in PROVIDERS[kind] if p in ort.get_available_providers()]
        prov_opts = [dict((provider_options or {}).get(p, {})) for p in providers]
        path = Path(model)
        try:
            self.session = ort.InferenceSession(
                str(path), opts, providers=providers, provider_options=prov_opts
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise VCEError(
                f"{path}: ONNX Runtime cannot load this model ({str(exc).splitlines()[0]})"
            ) from exc
        self.name = kind
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.session.get_inputs()[0].type == "tensor(uint8)":
            self.input_dtype = np.dtype(np.uint8)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = self.as_input(images)
        outs = self.session.run(None, {self.input_name: x})
        return {
            name: np.asarray(out, dtype=np.float32) for name, out in zip(self.output_names, outs, strict=True)
        }
