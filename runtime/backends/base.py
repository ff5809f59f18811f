"""The runner interface and the backend registry."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from vce.runtime.errors import VCEError

#: backends, fastest first (the order ``auto`` tries them in)
BACKENDS: tuple[str, ...] = ("trt", "ort-trt", "ort-cuda", "ort-cpu")


class Runner(ABC):
    """Runs one model graph or engine."""

    name: str = "runner"
    input_name: str = "images"
    #: what :meth:`infer` takes, as the graph/engine declares it: float32 [N,3,H,W] (normalised),
    #: or uint8 [N,H,W,3] RGB crops for a uint8 graph (``vce-export onnx --input uint8``)
    input_dtype: np.dtype = np.dtype(np.float32)

    @abstractmethod
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """A batch as :attr:`input_dtype` says -> {"logits": float32 [N,17], "probs": float32 [N,17]}."""

    def as_input(self, images: np.ndarray) -> np.ndarray:
        """``images`` as a contiguous array of :attr:`input_dtype`; VCEError if it is the other kind."""
        x = np.asarray(images)
        if (x.dtype == np.uint8) != (self.input_dtype == np.uint8):
            want = "uint8 [N,H,W,3] RGB crops" if self.input_dtype == np.uint8 else "float32 [N,3,H,W]"
            where = getattr(self, "path", None) or self.name
            raise VCEError(f"{where}: this graph takes {want}, got {x.dtype} {list(x.shape)}")
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the session/engine."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def available_backends() -> list[str]:
    """The backends usable on this machine, fastest first (checks imports and providers only)."""
    from vce.runtime.backends import ort

    found = []
    if ort.trt_engine_available():
        found.append("trt")
    found += [b for b in ort.ort_backends() if b in BACKENDS]
    return [b for b in BACKENDS if b in found]


def create_runner(kind: str, model: str | os.PathLike[str], **options: object) -> Runner:
    """Create a runner: ``trt`` takes an engine file, the ``ort-*`` kinds an ONNX file."""
    path = Path(model)
    if not path.is_file():
        raise VCEError(f"{path}: model file not found")
    if kind == "trt":
        from vce.runtime.backends.trt import TensorRTRunner

        return TensorRTRunner(path, **options)  # type: ignore[arg-type]
    if kind in ("ort-trt", "ort-cuda", "ort-cpu"):
        from vce.runtime.backends.ort import OrtRunner
        from vce.runtime.onnxscan import check_graph

        check_graph(path)  # no external data, standard ops, one image input: before ONNX Runtime reads it
        return OrtRunner(path, kind, **options)  # type: ignore[arg-type]
    raise VCEError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
