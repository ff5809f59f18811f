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
    """Runs one model graph or engine.

    :meth:`infer` checks the batch once, here, against what the graph/engine declares, and only
    then calls the backend's :meth:`_infer` (Polygraphy's ``BaseRunner.infer`` -> ``infer_impl``,
    ``tools/Polygraphy/polygraphy/backend/base/runner.py``). Backends set the attributes below
    when they load their model.
    """

    name: str = "runner"
    input_name: str = "images"
    #: what :meth:`infer` takes, as the graph/engine declares it: float [N,3,H,W] (normalised; cast
    #: to this type), or uint8 [N,H,W,3] RGB crops for a uint8 graph (``vce-export onnx --input uint8``)
    input_dtype: np.dtype = np.dtype(np.float32)
    #: the input's dims after the batch axis as declared (None: a symbolic dim, not checked);
    #: None: not known, only the kind and the rank are checked
    item_shape: tuple[int | None, ...] | None = None
    #: the largest batch one call takes, for a backend that cannot split a batch itself (None: any;
    #: the TensorRT runner and ort-trt split larger batches into runs within their profile)
    batch_limit: int | None = None
    #: what the error messages call the model ("graph", "engine")
    model_kind: str = "graph"

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """A batch as :attr:`input_dtype` says -> {"logits": float32 [N,17], "probs": float32 [N,17]}."""
        return self._infer(self.check_input(images))

    @abstractmethod
    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch that :meth:`check_input` accepted (not yet cast to :attr:`input_dtype`)."""

    def expected_input(self) -> str:
        """What :meth:`infer` takes, in words: "uint8 RGB crops [N, 224, 224, 3]", "float [N, 3, 224, 224]"."""
        uint8 = self.input_dtype == np.uint8
        letters = ("H", "W", "3") if uint8 else ("3", "H", "W")
        item = self.item_shape if self.item_shape is not None else (None,) * 3
        dims = [
            str(d) if d is not None else (letters[i] if len(item) == 3 else "?") for i, d in enumerate(item)
        ]
        shape = f"[{', '.join(['N', *dims])}]"
        return f"uint8 RGB crops {shape}" if uint8 else f"float {shape}"

    def check_input(self, images: np.ndarray) -> np.ndarray:
        """``images`` as an array, if it is the kind, rank and item shape the model declares (VCEError if not).

        The kind: uint8 for a uint8 graph, any float type otherwise (cast by the backend). The batch
        must be at most :attr:`batch_limit` where the backend declares one.
        """
        x = np.asarray(images)
        uint8 = self.input_dtype == np.uint8
        item = self.item_shape
        fits = (x.dtype == np.uint8) if uint8 else (x.dtype.kind == "f")
        fits = fits and x.ndim == (len(item) + 1 if item is not None else 4)
        if fits and item is not None:
            fits = all(want is None or int(got) == want for got, want in zip(x.shape[1:], item, strict=True))
        where = getattr(self, "path", None) or self.name
        if not fits:
            raise VCEError(
                f"{where}: this {self.model_kind} takes {self.expected_input()}, got {x.dtype} "
                f"{list(x.shape)}; feed it what the bundle's preprocessing makes for it "
                "(vce.runtime.preprocess.model_input)"
            )
        if self.batch_limit is not None and x.shape[0] > self.batch_limit:
            raise VCEError(
                f"{where}: this {self.model_kind} takes at most {self.batch_limit} frames per call, got "
                f"{x.shape[0]}; split the batch"
            )
        return x

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
