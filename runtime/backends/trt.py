"""TensorRT engine runner (TensorRT 10.x and 11.x Python API, memory and streams via cuda-python).

Everything TensorRT/CUDA is imported lazily, so this module imports anywhere. The engine's sidecar
(``<engine>.json``, :class:`~vce.runtime.engine_info.EngineInfo`) is checked against this machine
*before* the engine is deserialised: a mismatch is one clear line, not a TensorRT crash.

API used (name-based I/O, the only one left in TensorRT 10/11; ``python/src/infer/pyCore.cpp`` in
NVIDIA/TensorRT): ``Runtime.deserialize_cuda_engine / engine_host_code_allowed / DLA_core /
num_DLA_cores``, ``ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode /
get_tensor_dtype / get_tensor_shape / get_tensor_profile_shape / create_execution_context``,
``IExecutionContext.set_input_shape / get_tensor_shape / set_tensor_address / execute_async_v3``,
``tensorrt.nptype``.

Data path: two buffer sets, each a pinned host input, a device input, device outputs and pinned
host outputs, all allocated once. Uploads run on a copy stream, inference and the (small) output
copies on a compute stream; events order them, so while batch i runs, batch i+1 is uploaded. A set
is reused only after its previous batch's outputs reached the host (``enqueueV3``: registered
memory must not change before the stream is synchronised, NvInferRuntime.h). The overlap happens
inside one :meth:`TensorRTRunner.infer` call that gets more than ``max_batch`` frames.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vce.runtime.backends import cuda_rt
from vce.runtime.backends.base import Runner
from vce.runtime.backends.cuda_rt import cudart, gpu_info  # noqa: F401 - re-exported for callers
from vce.runtime.engine_info import EngineInfo, Machine, this_os
from vce.runtime.errors import VCEError
from vce.runtime.lazy import require

BUFFER_SETS = 2


def tensorrt_version() -> str:
    return str(require("tensorrt", "the TensorRT backend").__version__)


def dla_core_count() -> int:
    """DLA cores TensorRT sees on this device (``IRuntime::getNbDLACores``)."""
    trt = require("tensorrt", "the TensorRT backend")
    return int(trt.Runtime(trt.Logger(trt.Logger.WARNING)).num_DLA_cores)


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    p = Path(engine)
    return p.with_name(p.name + ".json")


def check_engine(
    engine: str | os.PathLike[str],
    sidecar: str | os.PathLike[str] | None = None,
    *,
    gpu: tuple[str, str] | None = None,
    trt_version: str | None = None,
    os_name: str | None = None,
    dla_cores: int | None = None,
) -> EngineInfo:
    """Load the engine's sidecar and refuse an engine that cannot run on this machine.

    ``gpu`` (name, compute capability), ``trt_version``, ``os_name`` and ``dla_cores`` default to this
    machine's (the DLA cores are asked for only when the engine names a DLA core).
    """
    info = EngineInfo.load(sidecar or sidecar_path(engine))
    name, cc = gpu if gpu is not None else gpu_info()
    version = trt_version if trt_version is not None else tensorrt_version()
    if info.dla_core is not None and dla_cores is None:
        dla_cores = dla_core_count()
    machine = Machine(
        name, cc, version, os=os_name if os_name is not None else this_os(), dla_cores=dla_cores
    )
    info.check_machine(machine, str(engine))
    return info


def _runtime_for(trt: Any, logger: Any, info: EngineInfo | None) -> Any:
    """A Runtime set up as the sidecar says: host code for version-compatible engines, the DLA core."""
    runtime = trt.Runtime(logger)
    if info is not None and info.version_compatible:
        # Version-compatible plans embed the lean runtime (host code); TensorRT loads them only when
        # allowed (IRuntime::setEngineHostCodeAllowed, default false; Polygraphy's EngineFromBytes
        # sets it). Only engines whose sidecar says so get it: the bundle's manifest hash-checks both.
        if not hasattr(runtime, "engine_host_code_allowed"):
            raise VCEError(f"TensorRT {trt.__version__} cannot load version-compatible engines")
        runtime.engine_host_code_allowed = True
    if info is not None and info.dla_core is not None:
        runtime.DLA_core = int(info.dla_core)  # IRuntime::setDLACore, before deserialising
    return runtime


@dataclass
class _BufferSet:
    pin_in: cuda_rt.PinnedBuffer
    dev_in: cuda_rt.DeviceBuffer
    dev_out: dict[str, cuda_rt.DeviceBuffer]
    pin_out: dict[str, cuda_rt.PinnedBuffer]
    uploaded: cuda_rt.Event
    done: cuda_rt.Event
    pending: tuple[int, int] | None = None  # rows [a, b) of the current call waiting in this set

    def close(self) -> None:
        for part in (self.pin_in, self.dev_in, *self.dev_out.values(), *self.pin_out.values()):
            part.close()
        self.uploaded.close()
        self.done.close()


@dataclass
class LoadedEngine:
    """A deserialised engine and its execution context, with what must outlive them (logger, runtime)."""

    path: Path
    info: EngineInfo | None  # the sidecar (None: unchecked and absent)
    trt: Any
    logger: Any
    runtime: Any
    engine: Any
    context: Any


def load_engine(
    path: str | os.PathLike[str],
    sidecar: str | os.PathLike[str] | None = None,
    device: int = 0,
    check: bool = True,
) -> LoadedEngine:
    """Check the engine file and its sidecar against this machine, then deserialise it on ``device``.

    Everything that can refuse the engine (file, sidecar, GPU, TensorRT version, OS, DLA) runs
    before TensorRT reads a byte of it. ``check=False`` (the sidecar was checked already, e.g. by
    the backend choice) still reads a present sidecar for the runtime's settings. The steps are
    Polygraphy's ``EngineFromBytes`` (runtime, host code for version-compatible plans,
    deserialisation) followed by the context its ``TrtRunner`` creates.
    """
    trt = require("tensorrt", "the TensorRT backend")
    path = Path(path)
    if not path.is_file():
        raise VCEError(f"{path}: engine file not found")
    cuda_rt.set_device(device)
    side = Path(sidecar) if sidecar is not None else sidecar_path(path)
    info: EngineInfo | None = None
    if check:
        info = check_engine(path, side, gpu=gpu_info(device), trt_version=str(trt.__version__))
    elif side.is_file():
        info = EngineInfo.load(side)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = _runtime_for(trt, logger, info)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise VCEError(
            f"{path}: TensorRT {trt.__version__} cannot deserialize this engine (see TensorRT's "
            "message above); rebuild it here with `vce-export trt`"
        )
    context = engine.create_execution_context()
    if context is None:
        raise VCEError(f"{path}: TensorRT could not create an execution context (GPU memory?)")
    return LoadedEngine(path, info, trt, logger, runtime, engine, context)


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine whose input has a dynamic batch axis (splits/pads to its profile).

    ``engine`` is an engine file (loaded by :func:`load_engine` with ``sidecar``, ``device`` and
    ``check``) or a :class:`LoadedEngine`. The input's data type and item shape are the engine's
    own (``tensorrt.nptype`` of ``get_tensor_dtype``, ``get_tensor_shape``): a float32 [N,3,H,W]
    graph, an fp16-input graph or a uint8 [N,H,W,3] graph all run through the same code.
    """

    name = "trt"
    model_kind = "engine"

    def __init__(
        self,
        engine: str | os.PathLike[str] | LoadedEngine,
        *,
        sidecar: str | os.PathLike[str] | None = None,
        device: int = 0,
        check: bool = True,
    ) -> None:
        self._sets: list[_BufferSet] = []
        self._streams: list[cuda_rt.Stream] = []
        loaded = engine if isinstance(engine, LoadedEngine) else load_engine(engine, sidecar, device, check)
        self._loaded: LoadedEngine | None = loaded  # keeps the logger and runtime alive with the engine
        self.path, self.info = loaded.path, loaded.info
        self.engine, self.context = loaded.engine, loaded.context
        self._bind_io(loaded.trt)
        try:
            self._allocate()
        except BaseException:
            self.close()
            raise

    # --- set-up ----------------------------------------------------------------------------------

    def _bind_io(self, trt: Any) -> None:
        engine = self.engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(tname)
        if len(inputs) != 1:
            raise VCEError(f"{self.path}: expected one input tensor, the engine has {inputs}")
        self.input_name = inputs[0]
        self.output_names = outputs
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in (*inputs, *outputs)}
        self.input_dtype = self.dtypes[self.input_name]  # uint8 for an engine of a uint8 graph
        shape = tuple(int(d) for d in engine.get_tensor_shape(self.input_name))
        item = shape[1:]
        if any(d < 0 for d in item):
            raise VCEError(f"{self.path}: only the batch axis may be dynamic, the input shape is {shape}")
        self.item_shape = item
        if shape[0] >= 0:
            self.min_batch = self.max_batch = shape[0]
        else:
            lo, _, hi = engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self._set_shape(self.max_batch)
        self.output_items: dict[str, tuple[int, ...]] = {}
        for out in outputs:
            oshape = tuple(int(d) for d in self.context.get_tensor_shape(out))
            if not oshape or oshape[0] != self.max_batch:
                raise VCEError(f"{self.path}: output {out} of shape {oshape} is not batch-major")
            self.output_items[out] = oshape[1:]

    def _set_shape(self, batch: int) -> None:
        if self.context.set_input_shape(self.input_name, (batch, *self.item_shape)) is False:
            raise VCEError(
                f"{self.path}: TensorRT refused the input shape {(batch, *self.item_shape)} "
                f"(profile batch {self.min_batch}-{self.max_batch})"
            )

    def _allocate(self) -> None:
        self._copy = cuda_rt.Stream()
        self._compute = cuda_rt.Stream()
        self._streams = [self._copy, self._compute]
        rows = self.max_batch
        for k in range(BUFFER_SETS):
            pin_in = cuda_rt.PinnedBuffer(
                (rows, *self.item_shape), self.dtypes[self.input_name], f"input set {k}"
            )
            dev_in = cuda_rt.DeviceBuffer(pin_in.nbytes, f"input set {k}")
            dev_out, pin_out = {}, {}
            for out, item in self.output_items.items():
                pin_out[out] = cuda_rt.PinnedBuffer((rows, *item), self.dtypes[out], f"{out} set {k}")
                dev_out[out] = cuda_rt.DeviceBuffer(pin_out[out].nbytes, f"{out} set {k}")
            self._sets.append(_BufferSet(pin_in, dev_in, dev_out, pin_out, cuda_rt.Event(), cuda_rt.Event()))

    # --- inference -------------------------------------------------------------------------------

    def _collect(self, s: _BufferSet, results: dict[str, np.ndarray]) -> None:
        if s.pending is None:
            return
        s.done.synchronize()
        a, b = s.pending
        for out in self.output_names:
            results[out][a:b] = s.pin_out[out].array[: b - a]
        s.pending = None

    def _launch(self, s: _BufferSet, x: np.ndarray, a: int, b: int) -> None:
        m = b - a
        rows = max(m, self.min_batch)
        staging = s.pin_in.view(rows)
        np.copyto(staging[:m], x[a:b], casting="same_kind")
        if rows > m:  # a short tail batch under a static or min>1 profile: repeat its last frame
            staging[m:] = staging[m - 1]
        cuda_rt.copy_to_device(s.dev_in.ptr, s.pin_in.ptr, staging.nbytes, self._copy)  # type: ignore[arg-type]
        s.uploaded.record(self._copy)
        self._compute.wait(s.uploaded)
        self._set_shape(rows)
        ctx = self.context
        ctx.set_tensor_address(self.input_name, s.dev_in.ptr)
        for out in self.output_names:
            ctx.set_tensor_address(out, s.dev_out[out].ptr)
        if not ctx.execute_async_v3(int(self._compute)):
            raise VCEError(f"{self.path}: TensorRT failed to run the engine on a batch of {rows}")
        for out in self.output_names:
            nbytes = rows * int(np.prod(self.output_items[out], dtype=np.int64)) * self.dtypes[out].itemsize
            cuda_rt.copy_to_host(s.pin_out[out].ptr, s.dev_out[out].ptr, nbytes, self._compute)  # type: ignore[arg-type]
        s.done.record(self._compute)
        s.pending = (a, b)

    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a checked batch [N, *item] (cast into the staging buffers); returns float32 outputs the caller owns."""
        n = x.shape[0]
        results = {out: np.empty((n, *self.output_items[out]), np.float32) for out in self.output_names}
        chunks = [(a, min(n, a + self.max_batch)) for a in range(0, n, self.max_batch)]
        try:
            for i, (a, b) in enumerate(chunks):
                s = self._sets[i % BUFFER_SETS]
                self._collect(s, results)  # the batch two steps back has reached the host
                self._launch(s, x, a, b)
            for i in range(max(0, len(chunks) - BUFFER_SETS), len(chunks)):
                self._collect(self._sets[i % BUFFER_SETS], results)
        except BaseException:
            for s in self._sets:
                s.pending = None
            raise
        return results

    def close(self) -> None:
        """Wait for work in flight, then free every buffer, event and stream (idempotent)."""
        for stream in getattr(self, "_streams", []):
            with contextlib.suppress(VCEError):  # a broken context: free what can be freed
                stream.synchronize()
        for s in getattr(self, "_sets", []):
            s.close()
        self._sets = []
        for stream in getattr(self, "_streams", []):
            stream.close()
        self._streams = []
        self.context = None
        self.engine = None
        self._loaded = None
