"""CUDA runtime calls through cuda-python (``cuda.bindings.runtime``): errors, device info, buffers.

The TensorRT runner's memory code lives here so that ``bench/gpu_check.py`` can time exactly the
code the runner uses. Every cuda-python runtime call returns a tuple ``(cudaError_t, *values)``
(cuda-bindings 12.x and 13.x, ``cuda/bindings/runtime.pyx``); :func:`check` turns a non-success
code into one :class:`VCEError` line naming the call and the error, never a traceback.

Pinned (page-locked) host memory comes from ``cudaMallocHost``. A copy from pageable memory goes
through a driver staging buffer: host-to-device ``cudaMemcpyAsync`` returns once the data is
staged, device-to-host only when the copy is complete, so neither overlaps reliably; from pinned
memory the copy is DMA on its stream and overlaps kernels running on another stream (CUDA Runtime
API, "API synchronization behavior"; CUDA C++ Programming Guide, "Asynchronous Concurrent
Execution").
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import numpy as np

from vce.runtime.errors import VCEError

INSTALL_HINT = "install it with: pip install 'vce[trt-cu13]' (CUDA 13) or 'vce[trt-cu12]' (CUDA 12)"


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
            f"cuda-python is not installed (the TensorRT backend needs it for device memory); {INSTALL_HINT}"
        ) from exc


def _error_name(rt: ModuleType, err: Any) -> str:
    name = getattr(err, "name", None)
    if name:
        return str(name)
    try:
        found = rt.cudaGetErrorName(err)
        raw = found[1] if isinstance(found, tuple) else found
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    except Exception:  # an unknown code: keep its number
        return str(err)


def _error_text(rt: ModuleType, err: Any) -> str:
    try:
        found = rt.cudaGetErrorString(err)
        raw = found[1] if isinstance(found, tuple) else found
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    except Exception:
        return ""


def check(result: Any, what: str, rt: ModuleType | None = None) -> Any:
    """Unpack a cuda-python result ``(err, *values)``: raise one clear line on an error, else the value(s)."""
    rt = rt or cudart()
    if isinstance(result, tuple):
        err, *values = result
    else:
        err, values = result, []
    if err != rt.cudaError_t.cudaSuccess:
        name = _error_name(rt, err)
        text = _error_text(rt, err)
        hint = "check the NVIDIA driver (nvidia-smi) and that a GPU is visible to this process"
        if "Driver" in name:
            hint = (
                "the NVIDIA driver is missing or older than this cuda-python needs "
                "(CUDA 12 builds need driver R525+, CUDA 13 builds R580+)"
            )
        raise VCEError(f"CUDA error in {what}: {name}{f' ({text})' if text else ''}; {hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def versions(rt: ModuleType | None = None) -> dict[str, str]:
    """CUDA versions the driver supports and this cuda-python runtime was built for ("0.0": no driver)."""
    rt = rt or cudart()
    out = {}
    for key, call in (("driver_cuda", "cudaDriverGetVersion"), ("runtime_cuda", "cudaRuntimeGetVersion")):
        try:
            out[key] = _version(int(check(getattr(rt, call)(), call, rt) or 0))
        except VCEError:
            out[key] = "unknown"
    return out


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device ``device``."""
    rt = cudart()
    count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount", rt)
    if not count or device >= count:
        raise VCEError(
            f"no CUDA GPU {device} on this machine (found {count or 0}); the trt backend needs one"
        )
    props = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties", rt)
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.split("\x00", 1)[0].strip(), f"{props.major}.{props.minor}"


def set_device(device: int) -> None:
    check(cudart().cudaSetDevice(device), f"cudaSetDevice({device})")


class Stream:
    """A CUDA stream (``cudaStreamCreate``)."""

    def __init__(self) -> None:
        self.rt = cudart()
        self.handle: Any = check(self.rt.cudaStreamCreate(), "cudaStreamCreate", self.rt)

    def __int__(self) -> int:
        return int(self.handle)

    def wait(self, event: Event) -> None:
        """Later work on this stream waits for ``event`` (``cudaStreamWaitEvent``)."""
        check(self.rt.cudaStreamWaitEvent(self.handle, event.handle, 0), "cudaStreamWaitEvent", self.rt)

    def synchronize(self) -> None:
        check(self.rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize", self.rt)

    def close(self) -> None:
        if self.handle is not None:
            self.rt.cudaStreamDestroy(self.handle)
            self.handle = None


class Event:
    """A CUDA event without timing (``cudaEventCreateWithFlags(cudaEventDisableTiming)``)."""

    def __init__(self) -> None:
        self.rt = cudart()
        flags = int(getattr(self.rt, "cudaEventDisableTiming", 2))
        self.handle: Any = check(self.rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags", self.rt)

    def record(self, stream: Stream) -> None:
        check(self.rt.cudaEventRecord(self.handle, stream.handle), "cudaEventRecord", self.rt)

    def synchronize(self) -> None:
        check(self.rt.cudaEventSynchronize(self.handle), "cudaEventSynchronize", self.rt)

    def close(self) -> None:
        if self.handle is not None:
            self.rt.cudaEventDestroy(self.handle)
            self.handle = None


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``)."""

    def __init__(self, nbytes: int, what: str = "") -> None:
        self.rt = cudart()
        self.nbytes = int(nbytes)
        self.ptr: int | None = int(
            check(self.rt.cudaMalloc(self.nbytes), f"cudaMalloc({nbytes}) {what}", self.rt)
        )

    def close(self) -> None:
        if self.ptr is not None:
            self.rt.cudaFree(self.ptr)
            self.ptr = None


class PinnedBuffer:
    """Page-locked host memory (``cudaMallocHost``) seen as a numpy array of ``shape`` and ``dtype``."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any] | type, what: str = "") -> None:
        self.rt = cudart()
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr: int | None = int(
            check(self.rt.cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes}) {what}", self.rt)
        )
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self.array: np.ndarray = np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)

    def view(self, n: int) -> np.ndarray:
        """The first ``n`` rows (batch items)."""
        return self.array[:n]

    def close(self) -> None:
        if self.ptr is not None:
            self.array = np.empty(0, self.dtype)  # no view may outlive the memory
            self.rt.cudaFreeHost(self.ptr)
            self.ptr = None


def copy_to_device(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    rt = stream.rt
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream.handle), "cudaMemcpyAsync (to the GPU)", rt)


def copy_to_host(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    rt = stream.rt
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream.handle), "cudaMemcpyAsync (from the GPU)", rt)


def host_pointer(array: np.ndarray) -> int:
    """The address of a C-contiguous numpy array (pageable memory unless it is a PinnedBuffer view)."""
    if not array.flags.c_contiguous:
        raise ValueError("host arrays passed to CUDA copies must be C-contiguous")
    return int(array.ctypes.data)
