"""ONNX Runtime runners: CPU, CUDA and the TensorRT execution provider.

What ONNX Runtime does that this module guards against:

- ``get_available_providers()`` lists the providers compiled into the installed build, not the
  ones whose libraries load: when CUDA, cuDNN or TensorRT is missing, the session logs an error
  and silently runs on the next provider in the list. After creating the session the runner
  requires ``session.get_providers()[0]`` to be the provider asked for (:func:`require_provider`).
- ``onnxruntime`` and ``onnxruntime-gpu`` install the same ``onnxruntime`` module; with both
  installed the one written last wins and the GPU providers disappear (microsoft/onnxruntime#7748,
  #26996). :func:`conflicting_distributions` finds that and the error says how to fix it.
- TensorRT provider (option names from ``tensorrt_execution_provider_info.cc``): the engine
  cache and the timing cache go to a cache folder (``trt_engine_cache_path``,
  ``trt_timing_cache_path``); an explicit profile (``trt_profile_min/opt/max_shapes``, format
  ``name:1x3x224x224``, the input read from the file by :mod:`vce.runtime.onnxscan`:
  a CPU session might not load an fp16 graph) covers batch 1 to ``max_batch`` and
  :meth:`OrtRunner.infer` never feeds
  more, so no tail batch rebuilds an engine (an input outside the cached profile makes the
  provider rebuild, TensorRT-ExecutionProvider docs, "engine cache"). ``trt_fp16_enable`` stays
  off: the fp16 graph is already typed, and the flag would let TensorRT lower the fp32 islands
  (LayerNorm, Softmax) the graph keeps on purpose.
- CUDA provider: TF32 is on by default on Ampere and newer (``use_tf32``,
  ``cuda_execution_provider_info.cc``); the runner turns it off unless asked, so an fp32 graph
  computes in fp32 and parity against PyTorch fp32 holds at 1e-4. The TensorRT provider has no
  such option in the list above; its fp32 parity with TF32 has not been measured.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vce.runtime.backends.base import Runner
from vce.runtime.errors import VCEError
from vce.runtime.lazy import require
from vce.runtime.onnxscan import first_input

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
#: what each GPU provider loads at session creation (names as on Linux; .dll on Windows)
PROVIDER_LIBRARIES = {
    "TensorrtExecutionProvider": (
        "TensorRT (libnvinfer, libnvonnxparser of the TensorRT major this onnxruntime-gpu was built "
        "with) plus CUDA and cuDNN 9"
    ),
    "CUDAExecutionProvider": "the CUDA runtime, cuBLAS and cuDNN 9 of the CUDA major this onnxruntime-gpu was built with",
}
#: distributions that all install the ``onnxruntime`` module
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
FIX_CONFLICT = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
#: default largest batch of the TensorRT provider's profile (vce-export trt's default too)
MAX_BATCH = 32
CACHE_ENV = "VCE_ORT_TRT_CACHE"
CACHE_DIR = "ort-trt-cache"


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def conflicting_distributions() -> list[str]:
    """The ONNX Runtime distributions installed side by side (more than one means a broken module)."""
    found = set()
    for dist in importlib.metadata.distributions():
        name = _normal(dist.metadata.get("Name") or "")
        if name in ORT_DISTRIBUTIONS:
            found.add(name)
    return sorted(found) if len(found) > 1 else []


def conflict_message() -> str | None:
    both = conflicting_distributions()
    if not both:
        return None
    return (
        f"{' and '.join(both)} are both installed and overwrite each other's onnxruntime module, so the GPU "
        f"providers may be missing; fix it with: {FIX_CONFLICT}"
    )


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


def _build_info(ort: Any) -> str:
    try:
        from onnxruntime.capi import build_and_package_info as info  # type: ignore[import-not-found]
    except ImportError:
        return ""
    parts = [f"{k} {getattr(info, k)}" for k in ("cuda_version", "cudnn_version") if getattr(info, k, None)]
    return f" (this build: {', '.join(parts)})" if parts else ""


def require_provider(session: Any, kind: str, ort: Any, model: str | os.PathLike[str] = "") -> None:
    """Refuse a session that fell back: its first provider must be the one ``kind`` asks for."""
    wanted = _REQUIRED[kind]
    got = list(session.get_providers())
    if got and got[0] == wanted:
        return
    library = PROVIDER_LIBRARIES.get(wanted, wanted)
    conflict = conflict_message()
    hint = conflict or (
        f"{wanted} is compiled in but did not load, so ONNX Runtime fell back to {got[0] if got else 'nothing'}: "
        f"it needs {library}{_build_info(ort)}; see ONNX Runtime's error above for the missing file"
    )
    where = f"{model}: " if model else ""
    raise VCEError(
        f"{where}backend {kind} asked for {wanted} but the session runs on {', '.join(got)}; {hint}"
    )


def _shape(dims: list[int]) -> str:
    return "x".join(str(int(d)) for d in dims)


def model_input(path: Path) -> tuple[str, list[int]]:
    """The graph's input: its name and its item shape (dims after the batch axis), from the file itself."""
    graph_input = first_input(path)
    dims = list(graph_input.shape)[1:]
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        raise VCEError(
            f"{path}: only the batch axis of the input may be dynamic, it is {list(graph_input.shape)}"
        )
    return graph_input.name, [int(d) for d in dims]


def default_cache_dir(model: Path, ort_version: str) -> Path:
    """``$VCE_ORT_TRT_CACHE`` or ``<bundle>/ort-trt-cache``, one subfolder per onnxruntime version."""
    root = Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else model.parent / CACHE_DIR
    return root / f"onnxruntime-{ort_version}"


def trt_provider_options(
    input_name: str, item_shape: list[int], cache_dir: Path, max_batch: int = MAX_BATCH
) -> dict[str, object]:
    """TensorRT provider options: engine + timing cache in ``cache_dir``, a profile for batch 1..max_batch."""
    if max_batch < 1:
        raise VCEError(f"the TensorRT provider's largest batch must be at least 1, got {max_batch}")
    if any(c in input_name for c in ":,"):
        raise VCEError(f"input name {input_name!r}: the TensorRT provider's profile syntax cannot name it")
    lo, hi = [1, *item_shape], [max_batch, *item_shape]
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": f"{input_name}:{_shape(lo)}",
        "trt_profile_opt_shapes": f"{input_name}:{_shape(hi)}",
        "trt_profile_max_shapes": f"{input_name}:{_shape(hi)}",
    }


def _check_kind(kind: str, ort: Any) -> None:
    """Refuse a backend this onnxruntime cannot offer, before any session is made."""
    if kind not in PROVIDERS:
        raise VCEError(f"unknown ONNX Runtime backend {kind!r}")
    if kind != "ort-cpu" and (conflict := conflict_message()):
        raise VCEError(f"backend {kind}: {conflict}")
    if kind not in ort_backends():
        raise VCEError(
            f"backend {kind} needs {_REQUIRED[kind]}, which this onnxruntime does not offer "
            f"(it has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu on a CUDA "
            "machine: pip install 'vce[gpu-cu13]' (CUDA 13) or 'vce[gpu-cu12]' (CUDA 12)"
        )


def _session_options(ort: Any, threads: int | None, spin: bool) -> Any:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _trt_cache(path: Path, cache_dir: str | os.PathLike[str] | None, ort_version: str) -> Path:
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(path, ort_version)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VCEError(
            f"{cache}: cannot create the TensorRT provider's cache folder ({exc.strerror}); set "
            f"{CACHE_ENV} to a writable folder"
        ) from exc
    return cache


@dataclass
class LoadedSession:
    """A session checked to run on its provider, and what the runner needs to feed it."""

    path: Path
    kind: str
    session: Any
    #: the ort-trt split size (its profile's largest batch); 0: no split
    max_batch: int
    cache_dir: Path | None


def load_session(
    model: str | os.PathLike[str],
    kind: str = "ort-cpu",
    *,
    threads: int | None = None,
    provider_options: dict[str, dict[str, object]] | None = None,
    max_batch: int = MAX_BATCH,
    cache_dir: str | os.PathLike[str] | None = None,
    tf32: bool = False,
    spin: bool = True,
) -> LoadedSession:
    """Create an ONNX Runtime session on ``kind``'s provider and refuse one that fell back.

    ``spin=False``: the intra-op threads sleep as soon as a run ends (ONNX Runtime's session entry
    ``session.intra_op.allow_spinning``; by default they spin a while waiting for the next run,
    which costs CPU when runs come one frame at a time, as in ``vce-run --follow``).
    """
    ort = require("onnxruntime", "ONNX Runtime inference")
    _check_kind(kind, ort)
    path = Path(model)
    defaults: dict[str, dict[str, object]] = {"CUDAExecutionProvider": {"use_tf32": tf32}}
    cache: Path | None = None
    if kind == "ort-trt":
        name, item = model_input(path)
        cache = _trt_cache(path, cache_dir, ort.__version__)
        defaults["TensorrtExecutionProvider"] = trt_provider_options(name, item, cache, max_batch)
    providers = PROVIDERS[kind]
    prov_opts = [{**defaults.get(p, {}), **(provider_options or {}).get(p, {})} for p in providers]
    try:
        session = ort.InferenceSession(
            str(path), _session_options(ort, threads, spin), providers=providers, provider_options=prov_opts
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise VCEError(f"{path}: ONNX Runtime cannot load this model ({str(exc).splitlines()[0]})") from exc
    require_provider(session, kind, ort, path)
    return LoadedSession(path, kind, session, max_batch if kind == "ort-trt" else 0, cache)


class OrtRunner(Runner):
    """An ONNX Runtime session on one execution provider, checked to really run there.

    ``model`` is an ONNX file (``options`` go to :func:`load_session`) or a :class:`LoadedSession`.
    """

    def __init__(
        self, model: str | os.PathLike[str] | LoadedSession, kind: str = "ort-cpu", **options: Any
    ) -> None:
        if isinstance(model, LoadedSession) and options:
            raise TypeError(
                f"session options ({', '.join(options)}) go to load_session, not with a loaded session"
            )
        loaded = model if isinstance(model, LoadedSession) else load_session(model, kind, **options)
        self.session = loaded.session
        self.name = loaded.kind
        self.path = loaded.path
        self.max_batch = loaded.max_batch
        self.cache_dir = loaded.cache_dir
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_dtype = np.dtype(_NUMPY.get(graph_input.type, np.float32))
        # ONNX Runtime gives a symbolic dim as its name (str) or None: unknown, not checked
        self.item_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in graph_input.shape[1:])

    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a checked batch (cast to the graph's input type), at most ``max_batch`` frames per run for ort-trt."""
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        n = x.shape[0]
        step = self.max_batch if self.max_batch and n > self.max_batch else max(n, 1)
        parts = [
            self.session.run(None, {self.input_name: x[i : i + step]}) for i in range(0, max(n, 1), step)
        ]
        return {
            name: np.concatenate([np.asarray(p[j], dtype=np.float32) for p in parts])
            for j, name in enumerate(self.output_names)
        }


#: ONNX Runtime's input type strings -> numpy
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
