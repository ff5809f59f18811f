"""Stand-ins for cuda-python's runtime module and a TensorRT engine, where neither can run (no GPU here).

They prove the TensorRT runner's own bookkeeping (buffer reuse, ordering, padding, data types,
freeing) and say nothing about TensorRT or CUDA themselves; the ``tensorrt``-marked tests do that
on a GPU machine. Each piece stands in for a documented behaviour only:

- :class:`FakeCudart` for ``cuda.bindings.runtime``: every call returns ``(cudaError_t, *values)``
  (cuda-bindings ``runtime.pyx``); work queued on a stream runs in order but *lazily*, only when
  the host waits (``cudaStreamSynchronize``, ``cudaEventSynchronize``) or when another stream's
  queued ``cudaStreamWaitEvent`` reaches the event. That is the weakest ordering CUDA promises
  (CUDA C++ Programming Guide, "Streams" and "Events"), so a missing wait or an early reuse of a
  buffer shows up as wrong numbers. Device memory is host memory at other addresses.
- :class:`FakeTensorRT` / :class:`FakeEngine` for the name-based TensorRT API the runner calls
  (``python/src/infer/pyCore.cpp``): tensor addresses and shapes are read when
  ``execute_async_v3`` is called, the work itself runs on the given stream; a version-compatible
  plan deserialises only when ``engine_host_code_allowed`` is set (``IRuntime::
  setEngineHostCodeAllowed``). The "model": logits[j] = mean(image) * (j + 1) / 100.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

NUM_OUT = 17


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorInvalidDevice = 101


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _Handle:
    def __init__(self, n: int) -> None:
        self.n = n

    def __int__(self) -> int:
        return self.n


class _Event(_Handle):
    stream: _Handle | None = None
    complete = True


OK = CudaError.cudaSuccess


class FakeCudart:
    """cuda.bindings.runtime with lazy in-order streams; counts what is alive."""

    cudaError_t = CudaError
    cudaMemcpyKind = MemcpyKind
    cudaEventDisableTiming = 2

    def __init__(self, devices: int = 1, name: bytes = b"NVIDIA Stand-in GPU", cc: tuple[int, int] = (8, 9)):
        self.devices, self.name, self.cc = devices, name, cc
        self.memory: dict[int, tuple[str, Any]] = {}  # ptr -> (kind, ctypes buffer)
        self.queues: dict[int, list[Callable[[], None]]] = {}
        self.events: dict[int, _Event] = {}
        self.ids = itertools.count(1)
        self.copies = {"h2d_pinned": 0, "h2d_pageable": 0, "d2h": 0}

    # --- devices
    def cudaGetDeviceCount(self) -> tuple[CudaError, int]:
        return OK, self.devices

    def cudaSetDevice(self, device: int) -> tuple[CudaError]:
        return (OK,) if 0 <= device < self.devices else (CudaError.cudaErrorInvalidDevice,)

    def cudaGetDeviceProperties(self, device: int) -> tuple[CudaError, Any]:
        return OK, SimpleNamespace(name=self.name + b"\x00\x00", major=self.cc[0], minor=self.cc[1])

    def cudaGetErrorString(self, err: CudaError) -> tuple[CudaError, bytes]:
        return OK, b"stand-in error"

    # --- memory
    def _alloc(self, kind: str, n: int) -> tuple[CudaError, int]:
        buf = ctypes.create_string_buffer(max(int(n), 1))
        ptr = ctypes.addressof(buf)
        self.memory[ptr] = (kind, buf)
        return OK, ptr

    def cudaMalloc(self, n: int) -> tuple[CudaError, int]:
        return self._alloc("device", n)

    def cudaMallocHost(self, n: int) -> tuple[CudaError, int]:
        return self._alloc("pinned", n)

    def _free(self, kind: str, ptr: int) -> tuple[CudaError]:
        if self.memory.get(ptr, ("",))[0] != kind:
            return (CudaError.cudaErrorInvalidValue,)
        del self.memory[ptr]
        return (OK,)

    def cudaFree(self, ptr: int) -> tuple[CudaError]:
        return self._free("device", ptr)

    def cudaFreeHost(self, ptr: int) -> tuple[CudaError]:
        return self._free("pinned", ptr)

    def kind_of(self, ptr: int) -> str:
        for base, (kind, buf) in self.memory.items():
            if base <= ptr < base + ctypes.sizeof(buf):
                return kind
        return "pageable"

    # --- streams and events
    def cudaStreamCreate(self) -> tuple[CudaError, _Handle]:
        h = _Handle(next(self.ids))
        self.queues[h.n] = []
        return OK, h

    def cudaStreamDestroy(self, stream: _Handle) -> tuple[CudaError]:
        self.flush(int(stream))
        del self.queues[int(stream)]
        return (OK,)

    def cudaEventCreateWithFlags(self, flags: int) -> tuple[CudaError, _Event]:
        e = _Event(next(self.ids))
        self.events[e.n] = e
        return OK, e

    def cudaEventDestroy(self, event: _Event) -> tuple[CudaError]:
        del self.events[int(event)]
        return (OK,)

    def enqueue(self, stream: Any, op: Callable[[], None]) -> None:
        self.queues[int(stream)].append(op)

    def flush(self, stream: int, until: _Event | None = None) -> None:
        queue = self.queues[stream]
        while queue and not (until is not None and until.complete):
            queue.pop(0)()

    def cudaEventRecord(self, event: _Event, stream: _Handle) -> tuple[CudaError]:
        event.complete, event.stream = False, stream

        def mark() -> None:
            event.complete = True

        self.enqueue(stream, mark)
        return (OK,)

    def cudaStreamWaitEvent(self, stream: _Handle, event: _Event, flags: int) -> tuple[CudaError]:
        def wait() -> None:
            if not event.complete and event.stream is not None:
                self.flush(int(event.stream), until=event)

        self.enqueue(stream, wait)
        return (OK,)

    def cudaEventSynchronize(self, event: _Event) -> tuple[CudaError]:
        if not event.complete and event.stream is not None:
            self.flush(int(event.stream), until=event)
        return (OK,)

    def cudaStreamSynchronize(self, stream: _Handle) -> tuple[CudaError]:
        self.flush(int(stream))
        return (OK,)

    def cudaMemcpyAsync(
        self, dst: int, src: int, n: int, kind: MemcpyKind, stream: _Handle
    ) -> tuple[CudaError]:
        if kind == MemcpyKind.cudaMemcpyHostToDevice:
            if self.kind_of(dst) != "device" or self.kind_of(src) == "device":
                return (CudaError.cudaErrorInvalidValue,)
            self.copies["h2d_pinned" if self.kind_of(src) == "pinned" else "h2d_pageable"] += 1
        else:
            if self.kind_of(src) != "device" or self.kind_of(dst) == "device":
                return (CudaError.cudaErrorInvalidValue,)
            self.copies["d2h"] += 1
        self.enqueue(stream, lambda: ctypes.memmove(dst, src, n))
        return (OK,)

    def alive(self) -> dict[str, int]:
        kinds = [k for k, _ in self.memory.values()]
        return {
            "device": kinds.count("device"),
            "pinned": kinds.count("pinned"),
            "streams": len(self.queues),
            "events": len(self.events),
        }


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """What :class:`FakeEngine` computes, in numpy."""
    mean = x.reshape(len(x), -1).astype(np.float64).mean(axis=1)
    logits = (mean[:, None] * (np.arange(NUM_OUT) + 1) / 100.0).astype(np.float32)
    return {"logits": logits, "probs": (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)}


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.runs: list[int] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, hi = self.engine.profile[0][0], self.engine.profile[2][0]
        if tuple(shape[1:]) != self.engine.item or not lo <= shape[0] <= hi:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        batch = self.shapes["images"][0]
        return (batch, *self.engine.item) if name == "images" else (batch, NUM_OUT)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        batch = self.shapes["images"][0]
        addr = dict(self.addresses)  # read at enqueue time
        item, dtype = self.engine.item, self.engine.dtype
        size = batch * int(np.prod(item)) * dtype.itemsize

        def run() -> None:
            x = np.frombuffer(ctypes.string_at(addr["images"], size), dtype=dtype).reshape(batch, *item)
            for name, value in reference(x).items():
                ctypes.memmove(addr[name], value.ctypes.data, value.nbytes)

        self.runs.append(batch)
        self.engine.cudart.enqueue(stream, run)
        return True


class FakeEngine:
    def __init__(self, cudart: FakeCudart, dtype: Any, item: tuple[int, ...], profile: tuple[int, int, int]):
        self.cudart, self.dtype, self.item = cudart, np.dtype(dtype), tuple(item)
        self.profile = [(b, *self.item) for b in profile]
        self.num_io_tensors = 3
        self.contexts: list[FakeContext] = []

    def get_tensor_name(self, i: int) -> str:
        return ("images", "logits", "probs")[i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "images" else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> np.dtype[Any]:
        return self.dtype if name == "images" else np.dtype(np.float32)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        static = self.profile[0][0] == self.profile[2][0]
        return (self.profile[0][0] if static else -1, *self.item) if name == "images" else (-1, NUM_OUT)

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return self.profile

    def create_execution_context(self) -> FakeContext:
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


class FakeTensorRT:
    """The part of the ``tensorrt`` module the runner uses; engines come from ``engines[bytes]``."""

    __version__ = "10.3.0"
    TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    def __init__(self, cudart: FakeCudart) -> None:
        self.cudart = cudart
        self.engines: dict[bytes, tuple[FakeEngine, bool]] = {}  # plan -> (engine, version compatible)
        self.runtimes: list[Any] = []
        self.deserialised: list[bytes] = []  # every plan a Runtime was asked to deserialise
        outer = self

        class Runtime:
            num_DLA_cores = 0

            def __init__(self, logger: Any) -> None:
                self.engine_host_code_allowed = False
                self.DLA_core = -1
                outer.runtimes.append(self)

            def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
                outer.deserialised.append(bytes(plan))
                engine, version_compatible = outer.engines.get(bytes(plan), (None, False))
                if engine is None or (version_compatible and not self.engine_host_code_allowed):
                    return None
                return engine

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype: Any) -> Any:
        return np.dtype(dtype).type

    def add_engine(
        self,
        plan: bytes,
        dtype: Any = np.float32,
        item: tuple[int, ...] = (3, 8, 8),
        profile: tuple[int, int, int] = (1, 4, 8),
        version_compatible: bool = False,
    ) -> FakeEngine:
        engine = FakeEngine(self.cudart, dtype, item, profile)
        self.engines[plan] = (engine, version_compatible)
        return engine
