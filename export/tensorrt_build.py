"""Build strongly typed TensorRT engines from the bundle's graphs (TensorRT 10.x and 11.x).

Precision lives in the graph: an fp16 engine is built from the typed fp16 graph, an fp32 engine
from the fp32 graph, both as strongly typed networks (TensorRT 11 is always strongly typed; on 10.x
the STRONGLY_TYPED creation flag is set when the bindings have it). Only a TensorRT without strong
typing falls back to the old weakly typed FP16 builder flag. Features are detected with ``hasattr``
on the bindings, never by comparing version strings.

After the build the engine is inspected (IEngineInspector, DETAILED verbosity) and the layer
precisions counted; a requested fp16 engine whose layers came out fp32 is refused. A sidecar
(vce.runtime.engine_info.EngineInfo) is written beside the engine: GPU name, compute capability,
TensorRT version, profile shapes, precision, source ONNX sha256.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vce.runtime.atomic import write_bytes
from vce.runtime.backends.trt import sidecar_path
from vce.runtime.bundle import Bundle, sha256_file
from vce.runtime.engine_info import EngineInfo
from vce.runtime.errors import VCEError
from vce.runtime.lazy import require

#: engine file per precision (the fp16 engine is the bundle's main engine)
ENGINE_FILES = {"fp16": "model.engine", "fp32": "model_fp32.engine"}
#: how inspector format strings name the data types
_DTYPE_PATTERNS = (
    ("Half", re.compile(r"\b(FP16|Half|kHALF)\b", re.I)),
    ("BFloat16", re.compile(r"\b(BF16|BFloat16)\b", re.I)),
    ("Float", re.compile(r"\b(FP32|Float|kFLOAT)\b", re.I)),
    ("Int8", re.compile(r"\b(Int8|kINT8)\b", re.I)),
    ("FP8", re.compile(r"\b(FP8|kFP8)\b", re.I)),
)
_OPAQUE_LAYER = re.compile(r"Myelin|ForeignNode", re.I)


@dataclass
class BuildOptions:
    precision: str = "fp16"  # "fp16" (from the fp16 graph) or "fp32" (from the fp32 graph)
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mib: int = 4096
    timing_cache: Path | None = None
    dla_core: int | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    tf32: bool = False  # TF32 for fp32 layers (off: fp32 engines stay comparable to PyTorch fp32)

    def check(self) -> None:
        if self.precision not in ENGINE_FILES:
            raise VCEError(f"precision must be one of {', '.join(ENGINE_FILES)}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise VCEError(
                f"batch sizes must satisfy 1 <= min ({self.min_batch}) <= opt ({self.opt_batch}) <= max ({self.max_batch})"
            )
        if self.workspace_mib < 1:
            raise VCEError("--workspace must be at least 1 MiB")


# --- machine -----------------------------------------------------------------------------------------


def require_tensorrt() -> Any:
    """Import TensorRT or raise MissingDependencyError (exit 2) naming the extra to install."""
    return require("tensorrt", "building TensorRT engines")


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability) exactly as the TensorRT runner reads them when it checks the sidecar."""
    from vce.runtime.backends.trt import gpu_info as runtime_gpu_info

    return runtime_gpu_info(device)


# --- inspection --------------------------------------------------------------------------------------


def _dtype_of(fmt: str) -> str | None:
    for name, pattern in _DTYPE_PATTERNS:
        if pattern.search(fmt):
            return name
    return None


def layer_precisions(engine_json: str | dict[str, Any]) -> tuple[Counter[str], int, int]:
    """Count an inspected engine's layers by the data type of their first float output.

    ``engine_json``: IEngineInspector.get_engine_information(JSON) (DETAILED verbosity). Returns
    (histogram, number of layers TensorRT shows only as opaque Myelin/ForeignNode blocks, number of
    fp16 tensors seen on any layer input/output).
    """
    data = json.loads(engine_json) if isinstance(engine_json, str) else engine_json
    hist: Counter[str] = Counter()
    opaque = half_tensors = 0
    for layer in data.get("Layers", []):
        if not isinstance(layer, dict):  # LAYER_NAMES_ONLY: names only
            hist["unknown"] += 1
            continue
        tag = f"{layer.get('LayerType', '')} {layer.get('Name', '')}"
        if _OPAQUE_LAYER.search(tag):
            opaque += 1
        dtypes = []
        for key in ("Inputs", "Outputs"):
            for t in layer.get(key, []) or []:
                fmt = t.get("Format/Datatype", "") if isinstance(t, dict) else str(t)
                dt = _dtype_of(fmt)
                if dt == "Half":
                    half_tensors += 1
                if key == "Outputs" and dt:
                    dtypes.append(dt)
        float_types = [d for d in dtypes if d != "Int8"] or dtypes
        hist[float_types[0] if float_types else "other"] += 1
    return hist, opaque, half_tensors


def engine_precision(hist: Counter[str], half_tensors: int) -> str:
    """The engine's overall precision from its layer histogram."""
    if hist.get("Int8") or hist.get("FP8"):
        return "int8"
    if hist.get("Half") or half_tensors:
        return "fp16"
    if hist.get("BFloat16"):
        return "bf16"
    return "fp32"


def check_precision(
    requested: str, hist: Counter[str], opaque: int, half_tensors: int, network_half: int
) -> str:
    """The precision to record; VCEError if a requested fp16 engine came out fp32.

    ``network_half``: fp16 tensors in the parsed (strongly typed) network. When TensorRT hides the
    whole graph in opaque Myelin blocks, the strongly typed network's types are what runs.
    """
    found = engine_precision(hist, half_tensors)
    if requested != "fp16" or found == "fp16":
        return found
    if opaque and network_half:
        return "fp16"
    raise VCEError(
        f"the engine was requested fp16 but its layers are {dict(hist)} (no fp16 layer): TensorRT built an "
        "fp32 engine. Build from the typed fp16 graph (`vce-export fp16` first); on TensorRT 11 the FP16 "
        "builder flag no longer exists"
    )


# --- build -------------------------------------------------------------------------------------------


def _network_half_count(trt: Any, network: Any) -> int:
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == trt.DataType.HALF:
                count += 1
    return count


def build_engine(
    onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], options: BuildOptions
) -> EngineInfo:
    """Build, inspect and write one engine and its sidecar (``<engine>.json``); returns the sidecar."""
    options.check()
    trt = require_tensorrt()
    gpu_name, cc = gpu_info(0)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    strongly_typed = hasattr(creation, "STRONGLY_TYPED")
    if strongly_typed:  # required on 10.x, accepted (and ignored) on 11.x
        flags |= 1 << int(creation.STRONGLY_TYPED)
    if hasattr(creation, "EXPLICIT_BATCH"):  # deprecated no-op on 10.x, needed on older
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise VCEError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    network_half = _network_half_count(trt, network)
    if options.precision == "fp16" and strongly_typed and network_half == 0:
        raise VCEError(f"{onnx_path}: the graph has no fp16 tensors; build fp16 engines from the fp16 graph")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not strongly_typed and options.precision == "fp16":  # pre-strong-typing TensorRT only
        config.set_flag(trt.BuilderFlag.FP16)
    if not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.version_compatible:
        if not hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"):
            raise VCEError("this TensorRT cannot build version-compatible engines")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        if not hasattr(trt, "HardwareCompatibilityLevel"):
            raise VCEError("this TensorRT cannot build hardware-compatible engines")
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.dla_core is not None:
        if builder.num_DLA_cores <= options.dla_core:
            raise VCEError(
                f"DLA core {options.dla_core} requested, this device has {builder.num_DLA_cores} DLA cores"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    input_name = network.get_input(0).name
    shape = list(network.get_input(0).shape)[1:]
    profile = builder.create_optimization_profile()
    dims = {
        k: [b, *shape]
        for k, b in (("min", options.min_batch), ("opt", options.opt_batch), ("max", options.max_batch))
    }
    profile.set_shape(input_name, dims["min"], dims["opt"], dims["max"])
    config.add_optimization_profile(profile)

    cache = None
    if options.timing_cache is not None:
        blob = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise VCEError(f"{onnx_path}: TensorRT failed to build the engine (see the messages above)")
    if cache is not None and options.timing_cache is not None:
        write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()))

    runtime = trt.Runtime(logger)
    if options.version_compatible and hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise VCEError("TensorRT built an engine it cannot deserialize")
    inspector = engine.create_engine_inspector()
    hist, opaque, half_tensors = layer_precisions(
        inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    )
    precision = check_precision(options.precision, hist, opaque, half_tensors, network_half)

    write_bytes(engine_path, bytes(serialized))
    info = EngineInfo(
        gpu_name=gpu_name,
        compute_capability=cc,
        tensorrt_version=str(trt.__version__),
        precision=precision,
        profile=dims,
        source_onnx=onnx_path.name,
        source_onnx_sha256=sha256_file(onnx_path),
        input_name=input_name,
        output_names=[network.get_output(i).name for i in range(network.num_outputs)],
        version_compatible=options.version_compatible,
        hardware_compatible=options.hardware_compatible,
        dla_core=options.dla_core,
        strongly_typed=strongly_typed,
        layer_precisions=dict(hist),
        os=f"{platform.system()} {platform.machine()}",
        build_seconds=round(seconds, 2),
    )
    info.save(sidecar_path(engine_path))
    return info


def add_engine(root: str | os.PathLike[str], options: BuildOptions) -> tuple[Bundle, EngineInfo]:
    """Build the bundle's engine for ``options.precision`` and record it (and its sidecar) in the manifest."""
    options.check()
    require_tensorrt()
    bundle = Bundle.load(root)
    role = options.precision
    if not bundle.has_graph(role):
        hint = "run `vce-export fp16 BUNDLE` first" if role == "fp16" else "re-export the bundle"
        raise VCEError(f"{bundle.root}: no {role} graph to build a {role} engine from; {hint}")
    source = bundle.graph(role)
    name = ENGINE_FILES[role]
    info = build_engine(source, bundle.root / name, options)
    sidecar = sidecar_path(bundle.root / name)
    bundle.remove_file(name)
    bundle.add_file(name, "engine", precision=info.precision, source=source.name)
    bundle.add_file(sidecar.name, "engine-sidecar", engine=name)
    bundle.manifest.engines.append(
        {
            "file": name,
            "sidecar": sidecar.name,
            "precision": info.precision,
            "source": source.name,
            "gpu_name": info.gpu_name,
            "compute_capability": info.compute_capability,
            "tensorrt_version": info.tensorrt_version,
            "profile": info.profile,
        }
    )
    bundle.manifest.engines.sort(key=lambda e: e.get("precision") != "fp16")
    bundle.save()
    return bundle, info
