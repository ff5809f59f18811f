"""Build TensorRT engines from the bundle's typed graphs (TensorRT 10.x and 11.x).

Four steps, as Polygraphy splits them (``NetworkFromOnnxPath`` / ``CreateConfig`` /
``EngineBytesFromNetwork`` in ``tools/Polygraphy/polygraphy/backend/trt/loader.py``), then an
inspection: :func:`parse_network` -> :func:`create_config` -> :func:`build_serialized` ->
:func:`inspect_engine`. Precision lives in the graph: an fp16 engine is built from the typed fp16
graph, an fp32 engine from the fp32 graph.

Features are detected on the bindings (:func:`detect_features`), never from version strings:

- TensorRT 11 removed every weak-typing builder flag (``BuilderFlag.FP16`` and friends; TensorRT 11
  migration guide, "Strongly Typed Networks Are Now Required"): every network is strongly typed,
  and ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is deprecated, ignored and has the value 0
  (``include/NvInfer.h``, 11.x), so it is not set.
- TensorRT 10 has both: the STRONGLY_TYPED creation flag (value 1) is set.
- Older TensorRT (no STRONGLY_TYPED) builds weakly typed: EXPLICIT_BATCH and, for fp16, the FP16
  builder flag; the inspection is then the only evidence of the precision.

After the build the engine is deserialised, an execution context gets the profile's opt shape and
is handed to the engine inspector (``IEngineInspector::setExecutionContext``: without it dynamic
shapes print as -1 and formats are left out; Polygraphy's ``trt/util.py`` does the same), and
:mod:`vce.export.trt_inspect` turns the layer JSON into a report. A sidecar
(:class:`~vce.runtime.engine_info.EngineInfo`) is written beside the engine.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from vce.export.trt_inspect import inspect_layers, judge_precision
from vce.runtime.atomic import write_bytes, write_text
from vce.runtime.backends.trt import sidecar_path
from vce.runtime.bundle import Bundle, sha256_file
from vce.runtime.engine_info import AMPERE, EngineInfo, this_os, version_tuple
from vce.runtime.errors import VCEError
from vce.runtime.lazy import require


class Precision(StrEnum):
    """Engine precision: fp16 (built from the typed fp16 graph) or fp32 (from the fp32 graph)."""

    FP16 = "fp16"
    FP32 = "fp32"


#: engine file per precision (the fp16 engine is the bundle's main engine)
ENGINE_FILES = {Precision.FP16.value: "model.engine", Precision.FP32.value: "model_fp32.engine"}


@dataclass
class BuildOptions:
    """How to build an engine; checked on construction (one ``VCEError`` line naming the option)."""

    precision: str = Precision.FP16.value
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mib: int = 4096
    timing_cache: Path | None = None
    dla_core: int | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    tf32: bool = False  # TF32 for fp32 layers (off: fp32 engines stay comparable to PyTorch fp32)
    layers_json: Path | None = None  # where to save the inspector's layer JSON

    def __post_init__(self) -> None:
        if self.precision not in ENGINE_FILES:
            raise VCEError(f"precision must be one of {', '.join(ENGINE_FILES)}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise VCEError(
                f"batch sizes must satisfy 1 <= min ({self.min_batch}) <= opt ({self.opt_batch}) <= max ({self.max_batch})"
            )
        if self.workspace_mib < 1:
            raise VCEError("--workspace must be at least 1 MiB")
        if self.dla_core is not None and self.dla_core < 0:
            raise VCEError(f"--dla-core must be 0 or more, got {self.dla_core}")
        if self.hardware_compatible and self.dla_core is not None:
            raise VCEError(
                "--hardware-compatible and --dla-core cannot be combined: hardware compatibility is for "
                "Ampere+ desktop/data-centre GPUs, not DLA, JetPack or DriveOS (TensorRT docs)"
            )

    def profile_batches(self) -> tuple[int, int, int, str | None]:
        """(min, opt, max) batch and a note: DLA runs static shapes only, so --dla-core forces min = opt = max."""
        if self.dla_core is None or self.min_batch == self.opt_batch == self.max_batch:
            return self.min_batch, self.opt_batch, self.max_batch, None
        b = self.opt_batch
        note = (
            f"DLA needs static shapes (with dynamic ones layers fall back to the GPU silently): profile forced to "
            f"batch {b} (min = opt = max, was {self.min_batch}/{self.opt_batch}/{self.max_batch}); smaller "
            "batches are padded to it at run time"
        )
        return b, b, b, note


@dataclass(frozen=True)
class TrtFeatures:
    """What this TensorRT offers, read from its bindings (pyCore.cpp)."""

    typing: str  # "always" (11.x), "flag" (10.x), "weak" (older)
    strongly_typed_bit: int | None
    explicit_batch_bit: int | None
    tf32_flag: bool
    version_compatible: bool
    hardware_compatible: bool
    profiling_verbosity: bool
    inspector_context: bool
    host_code_allowed: bool

    @property
    def strongly_typed(self) -> bool:
        return self.typing != "weak"


def detect_features(trt: Any) -> TrtFeatures:
    creation = trt.NetworkDefinitionCreationFlag
    flags = trt.BuilderFlag
    if not hasattr(flags, "FP16"):
        typing = "always"  # weak typing removed: STRONGLY_TYPED exists only as a deprecated no-op
    elif hasattr(creation, "STRONGLY_TYPED"):
        typing = "flag"
    else:
        typing = "weak"
    inspector = getattr(trt, "EngineInspector", None)
    return TrtFeatures(
        typing=typing,
        strongly_typed_bit=int(creation.STRONGLY_TYPED) if typing == "flag" else None,
        explicit_batch_bit=int(creation.EXPLICIT_BATCH)
        if typing == "weak" and hasattr(creation, "EXPLICIT_BATCH")
        else None,
        tf32_flag=hasattr(flags, "TF32"),
        version_compatible=hasattr(flags, "VERSION_COMPATIBLE"),
        hardware_compatible=hasattr(trt, "HardwareCompatibilityLevel"),
        profiling_verbosity=hasattr(trt, "ProfilingVerbosity"),
        inspector_context=inspector is None or hasattr(inspector, "execution_context"),
        host_code_allowed=hasattr(trt.Runtime, "engine_host_code_allowed"),
    )


# --- machine -----------------------------------------------------------------------------------------


def require_tensorrt() -> Any:
    """Import TensorRT or raise MissingDependencyError (exit 2) naming the extra to install."""
    return require("tensorrt", "building TensorRT engines")


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability) exactly as the TensorRT runner reads them when it checks the sidecar."""
    from vce.runtime.backends.cuda_rt import gpu_info as runtime_gpu_info

    return runtime_gpu_info(device)


# --- the four steps ----------------------------------------------------------------------------------


@dataclass
class Parsed:
    builder: Any
    network: Any
    parser: Any
    input_name: str
    item_shape: list[int]
    network_half: int


def _network_half_count(trt: Any, network: Any) -> int:
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == trt.DataType.HALF:
                count += 1
    return count


def parse_network(trt: Any, logger: Any, onnx_path: Path, features: TrtFeatures) -> Parsed:
    """ONNX -> network (strongly typed wherever this TensorRT can)."""
    builder = trt.Builder(logger)
    flags = 0
    if features.strongly_typed_bit is not None:
        flags |= 1 << features.strongly_typed_bit
    if features.explicit_batch_bit is not None:
        flags |= 1 << features.explicit_batch_bit
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise VCEError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    if network.num_inputs != 1:
        raise VCEError(f"{onnx_path}: expected one input, the graph has {network.num_inputs}")
    shape = [int(d) for d in network.get_input(0).shape]
    if any(d < 0 for d in shape[1:]):
        raise VCEError(f"{onnx_path}: only the batch axis may be dynamic, the input shape is {shape}")
    return Parsed(
        builder, network, parser, network.get_input(0).name, shape[1:], _network_half_count(trt, network)
    )


def create_config(
    trt: Any, parsed: Parsed, options: BuildOptions, features: TrtFeatures, cc: str
) -> tuple[Any, dict[str, list[int]], Any]:
    """Builder config: workspace, verbosity, typing/TF32 flags, compatibility, DLA, profile, timing cache."""
    builder = parsed.builder
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if features.profiling_verbosity:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if features.typing == "weak" and options.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)  # only where strong typing does not exist
    if features.tf32_flag and not options.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.version_compatible:
        if not features.version_compatible:
            raise VCEError(f"TensorRT {trt.__version__} cannot build version-compatible engines")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        if not features.hardware_compatible:
            raise VCEError(f"TensorRT {trt.__version__} cannot build hardware-compatible engines")
        if version_tuple(cc)[:2] < AMPERE:
            raise VCEError(
                f"hardware-compatible (Ampere+) engines must be built on an sm 8.0+ GPU, this one is sm {cc}"
            )
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.dla_core is not None:
        if builder.num_DLA_cores <= options.dla_core:
            raise VCEError(
                f"DLA core {options.dla_core} requested, this device has {builder.num_DLA_cores} DLA cores "
                "(TensorRT 11.0-11.4.0 has no DLA on Jetson; see the README)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    lo, opt, hi, _ = options.profile_batches()
    dims = {k: [b, *parsed.item_shape] for k, b in (("min", lo), ("opt", opt), ("max", hi))}
    profile = builder.create_optimization_profile()
    profile.set_shape(parsed.input_name, dims["min"], dims["opt"], dims["max"])
    config.add_optimization_profile(profile)
    cache = None
    if options.timing_cache is not None:
        blob = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        # IBuilderConfig::setTimingCache returns false when the cache was made on another device or
        # TensorRT version (ignoreMismatch = false, NvInfer.h)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise VCEError(
                f"{options.timing_cache}: TensorRT refused this timing cache (made on another GPU or TensorRT "
                "version, or damaged); delete it or pass another --timing-cache"
            )
    return config, dims, cache


def build_serialized(parsed: Parsed, config: Any, onnx_path: Path) -> tuple[bytes, float]:
    start = time.perf_counter()
    serialized = parsed.builder.build_serialized_network(parsed.network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise VCEError(f"{onnx_path}: TensorRT failed to build the engine (see the messages above)")
    return bytes(serialized), seconds


def inspect_engine(
    trt: Any,
    logger: Any,
    plan: bytes,
    input_name: str,
    opt_shape: list[int],
    options: BuildOptions,
    features: TrtFeatures,
) -> str:
    """The engine's layer JSON, inspected through an execution context set to the profile's opt shape."""
    runtime = trt.Runtime(logger)
    if options.version_compatible and features.host_code_allowed:
        runtime.engine_host_code_allowed = True
    if options.dla_core is not None:
        runtime.DLA_core = options.dla_core
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise VCEError("TensorRT built an engine it cannot deserialize")
    context = engine.create_execution_context()
    if context is None or context.set_input_shape(input_name, opt_shape) is False:
        raise VCEError(f"TensorRT cannot run the engine it built at its opt shape {opt_shape}")
    inspector = engine.create_engine_inspector()
    if features.inspector_context:
        inspector.execution_context = context
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def build_engine(
    onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], options: BuildOptions
) -> EngineInfo:
    """Build, inspect and write one engine and its sidecar (``<engine>.json``); returns the sidecar."""
    trt = require_tensorrt()
    features = detect_features(trt)
    gpu_name, cc = gpu_info(0)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    parsed = parse_network(trt, logger, onnx_path, features)
    if options.precision == "fp16" and features.strongly_typed and parsed.network_half == 0:
        raise VCEError(f"{onnx_path}: the graph has no fp16 tensors; build fp16 engines from the fp16 graph")
    config, dims, cache = create_config(trt, parsed, options, features, cc)
    plan, seconds = build_serialized(parsed, config, onnx_path)
    if cache is not None and options.timing_cache is not None:
        write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    layers = inspect_engine(trt, logger, plan, parsed.input_name, dims["opt"], options, features)
    if options.layers_json is not None:
        write_text(options.layers_json, json.dumps(json.loads(layers), indent=1) + "\n")
    report = inspect_layers(layers)
    precision, line = judge_precision(options.precision, report, parsed.network_half, features.strongly_typed)
    write_bytes(engine_path, plan)
    info = EngineInfo(
        gpu_name=gpu_name,
        compute_capability=cc,
        tensorrt_version=str(trt.__version__),
        precision=precision,
        profile=dims,
        source_onnx=onnx_path.name,
        source_onnx_sha256=sha256_file(onnx_path),
        input_name=parsed.input_name,
        output_names=[parsed.network.get_output(i).name for i in range(parsed.network.num_outputs)],
        version_compatible=options.version_compatible,
        hardware_compatible=options.hardware_compatible,
        dla_core=options.dla_core,
        strongly_typed=features.strongly_typed,
        layer_precisions=dict(report.histogram),
        precision_check=line,
        os=this_os(),
        build_seconds=round(seconds, 2),
    )
    info.save(sidecar_path(engine_path))
    return info


def add_engine(root: str | os.PathLike[str], options: BuildOptions) -> tuple[Bundle, EngineInfo]:
    """Build the bundle's engine for ``options.precision`` and record it (and its sidecar) in the manifest."""
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
