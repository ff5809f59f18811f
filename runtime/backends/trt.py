"""TensorRT engine runner (TensorRT 10.x and 11.x Python API, device memory via cuda-python).

Everything TensorRT/CUDA is imported lazily, so this module imports anywhere. The engine's
sidecar (``<engine>.json``, :class:`~vce.runtime.engine_info.EngineInfo`) is checked against this
GPU and TensorRT version *before* the engine is deserialised: a mismatch is one clear line, not a
TensorRT crash.

API used (name-based I/O, TensorRT >= 8.5, the only one left in 10/11): ``Runtime.
deserialize_cuda_engine``, ``ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode /
get_tensor_dtype / get_tensor_profile_shape / create_execution_context``, ``IExecutionContext.
set_input_shape / get_tensor_shape / set_tensor_address / execute_async_v3``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from vce.runtime.backends.base import Runner
from vce.runtime.engine_info import EngineInfo
from vce.runtime.errors import VCEError
from vce.runtime.lazy import require


def cudart() -> ModuleType:
    """cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime  # type: ignore[import-not-found]

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime  # type: ignore[import-not-found,no-redef]

        return runtime
    except ImportError as exc:
        raise VCEError(
            "cuda-python is not installed (the TensorRT backend needs it for device memory); "
            "install it with: pip install 'vce[trt]'"
        ) from exc


def _check(result: Any, what: str) -> Any:
    """cuda-python calls return ``(err, *values)``; raise on an error, return the value(s)."""
    rt = cudart()
    if isinstance(result, tuple):
        err, *values = result
    else:
        err, values = result, []
    if err != rt.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise VCEError(f"CUDA error in {what}: {name}; check the GPU driver and that a GPU is visible")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device ``device``."""
    rt = cudart()
    count = _check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not count or device >= count:
        raise VCEError(
            f"no CUDA GPU {device} on this machine (found {count or 0}); the trt backend needs one"
        )
    props = _check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.split("\x00", 1)[0].strip(), f"{props.major}.{props.minor}"


def tensorrt_version() -> str:
    return str(require("tensorrt", "the TensorRT backend").__version__)


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    p = Path(engine)
    return p.with_name(p.name + ".json")


def check_engine(
    engine: str | os.PathLike[str],
    sidecar: str | os.PathLike[str] | None = None,
    *,
    gpu: tuple[str, str] | None = None,
    trt_version: str | None = None,
) -> EngineInfo:
    """Load the engine's sidecar and refuse an engine built for another GPU or TensorRT version.

    ``gpu`` (name, compute capability) and ``trt_version`` default to this machine's.
    """
    info = EngineInfo.load(sidecar or sidecar_path(engine))
    name, cc = gpu if gpu is not None else gpu_info()
    version = trt_version if trt_version is not None else tensorrt_version()
    info.check_runs_on(name, cc, version, str(engine))
    return info


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine with a dynamic batch axis (splits/pads to its profile)."""

    name = "trt"

    def __init__(
        self,
        engine_path: str | os.PathLike[str],
        *,
        sidecar: str | os.PathLike[str] | None = None,
        device: int = 0,
        check: bool = True,
    ) -> None:
        trt = require("tensorrt", "the TensorRT backend")
        rt = cudart()
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise VCEError(f"{self.path}: engine file not found")
        _check(rt.cudaSetDevice(device), "cudaSetDevice")
        if check:
            check_engine(self.path, sidecar, gpu=gpu_info(device), trt_version=str(trt.__version__))
        self._rt = rt
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise VCEError(
                f"{self.path}: TensorRT {trt.__version__} cannot deserialize this engine; rebuild it "
                "here with `vce-export trt`"
            )
        self.context = self.engine.create_execution_context()
        inputs, outputs = [], []
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(tname)
        if len(inputs) != 1:
            raise VCEError(f"{self.path}: expected one input tensor, the engine has {inputs}")
        self.input_name = inputs[0]
        self.output_names = outputs
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in (*inputs, *outputs)}
        self.input_dtype = self._dtypes[self.input_name]  # uint8 for an engine of a uint8 graph
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self._chw = tuple(int(d) for d in shape[1:])
        if any(d < 0 for d in self._chw):
            raise VCEError(f"{self.path}: only the batch axis may be dynamic, input shape is {shape}")
        if shape[0] >= 0:
            self.min_batch = self.max_batch = int(shape[0])
        else:
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self._stream = _check(rt.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._allocate(self.max_batch)

    def _allocate(self, batch: int) -> None:
        rt = self._rt
        self.context.set_input_shape(self.input_name, (batch, *self._chw))
        for tname in (self.input_name, *self.output_names):
            shape = tuple(self.context.get_tensor_shape(tname))
            nbytes = int(np.prod(shape)) * self._dtypes[tname].itemsize
            ptr = _check(rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes}) for {tname}")
            self._buffers[tname] = (int(ptr), nbytes)
            self.context.set_tensor_address(tname, int(ptr))

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        rt = self._rt
        n = x.shape[0]
        pad = max(self.min_batch - n, 0)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        x = np.ascontiguousarray(x, dtype=self._dtypes[self.input_name])
        self.context.set_input_shape(self.input_name, x.shape)
        kind = rt.cudaMemcpyKind
        ptr, _ = self._buffers[self.input_name]
        _check(
            rt.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice, self._stream),
            "cudaMemcpyAsync (to the GPU)",
        )
        if not self.context.execute_async_v3(int(self._stream)):
            raise VCEError(f"{self.path}: TensorRT failed to run the engine on a batch of {x.shape[0]}")
        outs: dict[str, np.ndarray] = {}
        for tname in self.output_names:
            out = np.empty(tuple(self.context.get_tensor_shape(tname)), dtype=self._dtypes[tname])
            ptr, _ = self._buffers[tname]
            _check(
                rt.cudaMemcpyAsync(
                    out.ctypes.data, ptr, out.nbytes, kind.cudaMemcpyDeviceToHost, self._stream
                ),
                "cudaMemcpyAsync (from the GPU)",
            )
            outs[tname] = out
        _check(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {k: v[:n].astype(np.float32, copy=False) for k, v in outs.items()}

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = self.as_input(images)
        if tuple(x.shape[1:]) != self._chw:
            raise VCEError(
                f"{self.path}: the engine takes [N, {', '.join(map(str, self._chw))}], got {x.shape}"
            )
        parts = [self._run(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}

    def close(self) -> None:
        rt = getattr(self, "_rt", None)
        if rt is None:
            return
        for ptr, _ in getattr(self, "_buffers", {}).values():
            rt.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            rt.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = None
        self.engine = None
