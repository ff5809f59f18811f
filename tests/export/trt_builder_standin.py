"""A stand-in for the builder side of the ``tensorrt`` module, for machines where TensorRT cannot be installed.

It proves what vce's build code *asks of* TensorRT (flags, profile, timing cache, DLA settings, the
inspector's execution context) and how it reads the answers; it says nothing about what TensorRT
builds. The ``tensorrt``-marked tests build real engines where TensorRT and a GPU exist.

Documented behaviour it stands in for, by TensorRT major (``stand_in(major)``):

- enums as ``include/NvInfer.h`` declares them: 10.x ``NetworkDefinitionCreationFlag``
  EXPLICIT_BATCH = 0 (deprecated), STRONGLY_TYPED = 1, ``BuilderFlag.FP16`` present; 11.x
  STRONGLY_TYPED = 0 (deprecated, ignored), no FP16/INT8 builder flags; 8.x no STRONGLY_TYPED;
- ``IBuilderConfig::setTimingCache`` returns false for a cache made elsewhere (NvInfer.h);
- a version-compatible plan deserialises only with ``engine_host_code_allowed`` (NvInferRuntime.h);
- the inspector (``IEngineInspector``, NvInferRuntime.h): without an execution context whose input
  shapes are set, shape-dependent values print as -1 and formats are left out; with one, each
  tensor has its type: TensorRT 10 as ``"Format/Datatype"``, TensorRT 11 as ``"Format"`` +
  ``"Datatype"`` (migration guide); layers are Myelin kernels named ``<node>_myl0_<i>`` with layer
  types ``gemm``/``kgen`` as TensorRT 10 prints them (sampleEditableTimingCache README);
- types: a strongly typed network keeps the ONNX graph's tensor types; a weakly typed one runs
  fp16 only with ``BuilderFlag.FP16``.

The "network" is the ONNX graph itself (read with ``onnx``), one layer per node.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx
from onnx import TensorProto

HALF, FLOAT = "HALF", "FLOAT"
VERSIONS = {8: "8.6.1", 10: "10.8.0.43", 11: "11.4.0.106"}


class _Tensor(SimpleNamespace):
    pass


class Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []
        self.layers: list[SimpleNamespace] = []

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]

    def get_output(self, i: int) -> _Tensor:
        return self.outputs[i]

    def get_layer(self, i: int) -> SimpleNamespace:
        return self.layers[i]


class Parser:
    def __init__(self, network: Network, logger: Any) -> None:
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        model = onnx.shape_inference.infer_shapes(onnx.load(path))
        g = model.graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.output, *g.input]}
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in g.input[0].type.tensor_type.shape.dim]
        self.network.inputs = [_Tensor(name=g.input[0].name, shape=tuple(dims))]
        self.network.outputs = [_Tensor(name=o.name) for o in g.output]
        for node in g.node:
            outs = [
                _Tensor(name=o, dtype=HALF if types.get(o) == TensorProto.FLOAT16 else FLOAT)
                for o in node.output
            ]
            self.network.layers.append(
                SimpleNamespace(
                    op=node.op_type,
                    inputs=list(node.input),
                    num_outputs=len(outs),
                    get_output=lambda j, outs=outs: outs[j],
                )
            )
        return True


class Config:
    def __init__(self, trt: StandIn) -> None:
        self.trt = trt
        self.flags: set[str] = {"TF32"}  # TF32 is on by default (NvInfer.h, kTF32)
        self.profiles: list[dict[str, Any]] = []
        self.profiling_verbosity = None
        self.default_device_type = "GPU"
        self.DLA_core = -1
        self.hardware_compatibility_level = "NONE"
        self.timing_cache: Any = None

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: str) -> None:
        self.flags.discard(flag)

    def add_optimization_profile(self, profile: dict[str, Any]) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob: bytes) -> SimpleNamespace:
        return SimpleNamespace(
            blob=bytes(blob), serialize=lambda: b"timing-cache:" + self.trt.__version__.encode()
        )

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        ok = not cache.blob or cache.blob == b"timing-cache:" + self.trt.__version__.encode()
        self.timing_cache = cache if ok else None
        return ok or ignore_mismatch

    def get_timing_cache(self) -> Any:
        return self.timing_cache


class Profile(dict):
    def set_shape(self, name: str, lo: list[int], opt: list[int], hi: list[int]) -> None:
        self[name] = (list(lo), list(opt), list(hi))


class Builder:
    def __init__(self, trt: StandIn) -> None:
        self.trt = trt
        self.num_DLA_cores = trt.dla_cores
        self.networks: list[Network] = []

    def create_network(self, flags: int = 0) -> Network:
        self.networks.append(Network(flags))
        return self.networks[-1]

    def create_builder_config(self) -> Config:
        self.trt.configs.append(Config(self.trt))
        return self.trt.configs[-1]

    def create_optimization_profile(self) -> Profile:
        return Profile()

    def build_serialized_network(self, network: Network, config: Config) -> bytes:
        trt = self.trt
        strongly = trt.major >= 11 or (
            trt.major == 10 and network.flags & (1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        )
        half = [
            [o.dtype == HALF for o in (layer.get_output(j) for j in range(layer.num_outputs))]
            for layer in network.layers
        ]
        if not strongly:  # weak typing: fp16 only where the FP16 flag allows
            half = [[("FP16" in config.flags) for _ in row] for row in half]
        plan = {
            "vc": "VERSION_COMPATIBLE" in config.flags,
            "half": half,
            "ops": [x.op for x in network.layers],
        }
        return json.dumps(plan).encode()


class Engine:
    def __init__(self, plan: dict[str, Any], trt: StandIn) -> None:
        self.plan, self.trt = plan, trt
        self.contexts: list[SimpleNamespace] = []

    def create_execution_context(self) -> SimpleNamespace:
        ctx = SimpleNamespace(shapes={})
        ctx.set_input_shape = lambda name, shape: ctx.shapes.__setitem__(name, list(shape)) or True
        self.contexts.append(ctx)
        return ctx

    def create_engine_inspector(self) -> Inspector:
        return Inspector(self)


class Inspector:
    execution_context: Any = None  # a property on the real class (pyCore.cpp)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_engine_information(self, fmt: Any) -> str:
        ctx = self.execution_context
        batch = next(iter(ctx.shapes.values()))[0] if ctx is not None and ctx.shapes else -1
        eleven = self.engine.trt.major >= 11
        layers = []
        for i, (op, halves) in enumerate(zip(self.engine.plan["ops"], self.engine.plan["half"], strict=True)):
            outputs = []
            for j, half in enumerate(halves):
                tensor: dict[str, Any] = {
                    "Name": f"t{i}_{j}",
                    "Dimensions": [batch, 17],
                    "Location": "Device",
                }
                if batch != -1:  # formats only with a context whose shapes are set
                    if eleven:
                        tensor["Format"] = (
                            "Row major linear FP16 format (kLINEAR)"
                            if half
                            else "Row major linear FP32 format (kLINEAR)"
                        )
                        tensor["Datatype"] = "Half" if half else "Float"
                    else:
                        tensor["Format/Datatype"] = "Half" if half else "Float"
                outputs.append(tensor)
            layers.append(
                {
                    "Name": f"{op.lower()}{i}_myl0_{i}",
                    "LayerType": "gemm" if op == "MatMul" else "kgen",
                    "Inputs": [],
                    "Outputs": outputs,
                    "TacticName": "stand-in",
                    "StreamId": 0,
                    "Metadata": "",
                }
            )
        io = {"I/O Tensors": []} if eleven else {"Bindings": []}
        return json.dumps({"Layers": layers, **io})


class StandIn:
    """``import tensorrt`` as TensorRT ``major`` would present it to vce's build code."""

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    def __init__(self, major: int, dla_cores: int = 0) -> None:
        self.major, self.dla_cores = major, dla_cores
        self.__version__ = VERSIONS[major]
        self.configs: list[Config] = []
        self.runtimes: list[Any] = []
        self.builders: list[Builder] = []
        flags = ["TF32", "GPU_FALLBACK", "VERSION_COMPATIBLE", "REFIT"] + (
            [] if major >= 11 else ["FP16", "INT8"]
        )
        self.BuilderFlag = SimpleNamespace(**{f: f for f in flags})
        if major >= 11:
            self.NetworkDefinitionCreationFlag = SimpleNamespace(
                STRONGLY_TYPED=0, PREFER_JIT_PYTHON_PLUGINS=1
            )
        elif major == 10:
            self.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
        else:
            self.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0, EXPLICIT_PRECISION=1)
        self.DataType = SimpleNamespace(HALF=HALF, FLOAT=FLOAT)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.ProfilingVerbosity = SimpleNamespace(DETAILED="DETAILED")
        self.LayerInformationFormat = SimpleNamespace(JSON="JSON")
        self.HardwareCompatibilityLevel = SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")
        self.DeviceType = SimpleNamespace(DLA="DLA", GPU="GPU")
        self.EngineInspector = Inspector
        outer = self

        class Runtime:
            engine_host_code_allowed = False

            def __init__(self, logger: Any) -> None:
                self.DLA_core = -1
                outer.runtimes.append(self)

            def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
                data = json.loads(bytes(plan))
                if data["vc"] and not self.engine_host_code_allowed:
                    return None
                self.engine = Engine(data, outer)
                return self.engine

        self.Runtime = Runtime

    def Builder(self, logger: Any) -> Builder:
        self.builders.append(Builder(self))
        return self.builders[-1]

    def OnnxParser(self, network: Network, logger: Any) -> Parser:
        return Parser(network, logger)


def stand_in(major: int, **kw: Any) -> StandIn:
    return StandIn(major, **kw)


def layers_file(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["Layers"]
