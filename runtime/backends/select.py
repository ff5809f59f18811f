"""Which backend and which graph/engine of a bundle to run (``--backend``, ``--graph``).

Defaults: ``ort-cpu`` runs the dynamic INT8 graph when the bundle lists one that passed its drift
check (``vce-calibrate int8``; 1.4-1.6x the fp32 graph's speed on an AVX2 CPU), else the fp32
graph; the GPU ONNX Runtime backends the fp16 graph when the bundle has one (else fp32), ``trt`` the
bundle's engine. ``--graph`` overrides the default. ``auto`` takes the first of
:data:`BACKENDS` that is installed *and* has what it needs in the bundle (for ``trt``: an engine
whose sidecar matches this machine, see :mod:`vce.runtime.engine_info`, and whose source ONNX is
the bundle's graph), and says why it skipped the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from vce.runtime.backends.base import BACKENDS, available_backends
from vce.runtime.bundle import GRAPH_FILES, Bundle
from vce.runtime.engine_info import EngineInfo
from vce.runtime.errors import VCEError

GRAPHS: tuple[str, ...] = tuple(GRAPH_FILES)
AUTO = "auto"
ENGINE = "engine"


def _member(value: str) -> tuple[str, str]:
    return value.upper().replace("-", "_"), value


#: ``--backend``: ``auto`` or one of :data:`BACKENDS`
Backend = StrEnum("Backend", [_member(AUTO), *map(_member, BACKENDS)])  # type: ignore[misc]
#: ``--graph``: one of the bundle's graph roles, or the TensorRT ``engine``
Graph = StrEnum("Graph", [*map(_member, GRAPHS), _member(ENGINE)])  # type: ignore[misc]


@dataclass(frozen=True)
class Choice:
    backend: str
    model: Path  # the ONNX graph or the engine
    graph: str  # "fp32", "fp16", "int8", "int8-dynamic" or "engine"
    model_hash: str  # its sha256 from the manifest
    note: str = ""  # why this one (auto: what was skipped)

    def describe(self) -> str:
        return f"{self.backend} ({self.graph}: {self.model.name})"

    @property
    def batch_dependent(self) -> bool:
        """A frame's probabilities depend on the other frames of its batch: dynamic INT8 quantizes the
        activations with scales computed over the whole batch (ONNX Runtime's DynamicQuantizeLinear),
        so ``--batch`` changes the results (by up to ~0.04 in probability, measured on the small model)."""
        return self.graph == "int8-dynamic"


def cpu_int8_ok(bundle: Bundle) -> bool:
    """The bundle lists a dynamic INT8 graph whose drift against fp32 was within tolerance."""
    name = bundle.manifest.graphs.get("int8-dynamic")
    return name is not None and bundle.manifest.files.get(name, {}).get("within_tolerance") is True


def _default_graph(bundle: Bundle, backend: str) -> str:
    if backend == "ort-cpu":
        return "int8-dynamic" if cpu_int8_ok(bundle) else "fp32"
    return "fp16" if bundle.has_graph("fp16") else "fp32"


def _hash(bundle: Bundle, name: str) -> str:
    return str(bundle.manifest.files.get(name, {}).get("sha256", ""))


def _ort_choice(bundle: Bundle, backend: str, graph: str | None) -> Choice:
    role = graph or _default_graph(bundle, backend)
    if role == ENGINE:
        raise VCEError(f"--graph engine needs --backend trt, not {backend}")
    if role not in GRAPHS:
        raise VCEError(f"unknown --graph {role!r}; choose one of {', '.join(GRAPHS)}")
    path = bundle.graph(role)  # clear error if the bundle lacks it
    return Choice(backend, path, role, _hash(bundle, path.name))


def _trt_choice(bundle: Bundle, graph: str | None, check: Callable[[Path, Path], object]) -> Choice:
    if graph not in (None, ENGINE):
        raise VCEError(f"the trt backend runs the bundle's engine, not a {graph} graph; drop --graph")
    engines = bundle.manifest.engines
    if not engines:
        raise VCEError(f"{bundle.root}: the bundle has no TensorRT engine; build one with `vce-export trt`")
    errors = []
    for entry in engines:
        path = bundle.root / str(entry["file"])
        sidecar = bundle.root / str(entry.get("sidecar") or f"{entry['file']}.json")
        try:
            check(path, sidecar)
            EngineInfo.load(sidecar).check_source(bundle.manifest.files, str(path))
        except VCEError as exc:
            errors.append(str(exc))
            continue
        return Choice("trt", path, ENGINE, _hash(bundle, path.name))
    raise VCEError(errors[0] if len(errors) == 1 else "no engine fits this machine: " + "; ".join(errors))


def _ort_conflict() -> str | None:
    from vce.runtime.backends.ort import conflict_message

    return conflict_message()


def _ort_gpu_hint() -> str:
    return _ort_conflict() or (
        "install onnxruntime-gpu on a CUDA machine: pip install 'vce[gpu-cu13]' (CUDA 13) or 'vce[gpu-cu12]' (CUDA 12)"
    )


def _check_engine(path: Path, sidecar: Path) -> None:
    from vce.runtime.backends.trt import check_engine

    check_engine(path, sidecar)


def choose_backend(
    bundle: Bundle,
    backend: str = AUTO,
    graph: str | None = None,
    *,
    available: Sequence[str] | None = None,
    check_engine: Callable[[Path, Path], object] = _check_engine,
) -> Choice:
    """Pick the backend and model file; ``available`` and ``check_engine`` are for tests."""
    have = list(available) if available is not None else available_backends()
    if backend != AUTO:
        if backend not in BACKENDS:
            raise VCEError(f"unknown --backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
        if backend not in have:
            hint = (
                "install TensorRT and cuda-python: pip install 'vce[trt-cu13]' (CUDA 13) or 'vce[trt-cu12]' (CUDA 12)"
                if backend == "trt"
                else _ort_gpu_hint()
            )
            raise VCEError(
                f"backend {backend} is not available here (available: {', '.join(have) or 'none'}); {hint}"
            )
        if backend == "trt":
            return _trt_choice(bundle, graph, check_engine)
        return _ort_choice(bundle, backend, graph)
    skipped = []
    conflict = _ort_conflict() if available is None else None
    for kind in BACKENDS:
        if kind not in have:
            gpu_ort = kind in ("ort-trt", "ort-cuda")
            skipped.append(f"{kind} ({conflict if conflict and gpu_ort else 'not installed'})")
            continue
        try:
            if kind == "trt":
                choice = _trt_choice(bundle, graph, check_engine)
            else:
                choice = _ort_choice(bundle, kind, graph)
        except VCEError as exc:
            skipped.append(f"{kind} ({exc})")
            continue
        note = "auto chose " + choice.describe()
        if skipped:
            note += "; skipped " + ", ".join(skipped)
        return Choice(choice.backend, choice.model, choice.graph, choice.model_hash, note)
    raise VCEError("no backend can run this bundle here: " + "; ".join(skipped))
