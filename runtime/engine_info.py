"""The TensorRT engine sidecar (``<engine>.json``): what the engine was built for, and where it may run.

Engines are specific to the GPU model, the TensorRT version and the OS unless built hardware or
version compatible. ``vce-export trt`` writes this beside every engine; ``vce-run`` compares it
with the machine (:class:`Machine`) and the bundle before deserialising, and refuses a mismatch
with one clear line. The rules, from NVIDIA's documentation:

- Platform: serialized engines are not portable across platforms (TensorRT Support Matrix,
  "Engine Portability").
- Version compatibility (``--version-compatible``): an engine runs on the TensorRT version that
  built it or a *later* one, within the same major; across majors only 8 -> 10 and 10 -> 11
  (TensorRT 11.4.1 Support Matrix, "Engine Portability"; Engine Compatibility page: "engines
  built with newer versions do not work with older runtimes"). Without it, the exact version.
- Hardware compatibility (``--hardware-compatible``, level AMPERE_PLUS): any GPU of compute
  capability 8.0 or higher (``HardwareCompatibilityLevel::kAMPERE_PLUS``, NvInfer.h: "compatible
  with Ampere and newer GPUs"). Without it, the same GPU model.
- DLA: the engine names a DLA core; the device must have that many DLA cores
  (``IRuntime::setDLACore``, NvInferRuntime.h).
- The source ONNX: its sha256 must be the one the bundle lists for that graph, or the engine was
  built from another model.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.formats.jsonfile import read_json

REBUILD = "rebuild it here with `vce-export trt`"
#: cross-major pairs a version-compatible engine may take (built major, runtime major)
CROSS_MAJOR_OK = {(8, 10), (10, 11)}
#: AMPERE_PLUS hardware compatibility: compute capability 8.0 or higher
AMPERE = (8, 0)


def this_os() -> str:
    """The platform string recorded in sidecars ("Linux x86_64", "Linux aarch64", "Windows AMD64")."""
    return f"{platform.system()} {platform.machine()}"


def version_tuple(version: str) -> tuple[int, ...]:
    """ "10.3.0.30" -> (10, 3, 0, 30); trailing text such as ".post1" is ignored."""
    parts = []
    for piece in str(version).split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def _cc(value: str) -> tuple[int, int]:
    t = version_tuple(value)
    return (t[0], t[1] if len(t) > 1 else 0) if t else (0, 0)


@dataclass(frozen=True)
class Machine:
    """What the runner sees: GPU, TensorRT, OS, DLA cores (None: not asked, the engine needs none)."""

    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    os: str = field(default_factory=this_os)
    dla_cores: int | None = None


@dataclass
class EngineInfo:
    gpu_name: str
    compute_capability: str  # "8.7", "9.0"...
    tensorrt_version: str
    precision: str  # "fp16", "fp32", "int8": the precision of the typed graph the engine was built from
    profile: dict[str, list[int]]  # {"min": [N,3,H,W], "opt": [...], "max": [...]}
    source_onnx: str
    source_onnx_sha256: str
    input_name: str = "images"
    output_names: list[str] = field(default_factory=lambda: ["logits", "probs"])
    version_compatible: bool = False
    hardware_compatible: bool = False
    dla_core: int | None = None
    strongly_typed: bool = True
    layer_precisions: dict[str, int] = field(default_factory=dict)  # inspector histogram, e.g. {"Half": 310}
    precision_check: str = ""  # what the post-build inspection found (a report, see vce.export.trt_inspect)
    os: str = ""
    build_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineInfo:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EngineInfo:
        p = Path(path)
        if not p.is_file():
            raise VCEError(f"{p}: engine sidecar missing; rebuild the engine with `vce-export trt`")
        data = read_json(p, "rebuild the engine with `vce-export trt`")
        try:
            return cls.from_dict(data)
        except TypeError as exc:
            raise VCEError(f"{p}: unreadable engine sidecar ({exc}); rebuild with `vce-export trt`") from exc

    # --- where it may run ------------------------------------------------------------------------

    def check_machine(self, machine: Machine, engine: str) -> None:
        """Raise one VCEError line if this engine cannot run on ``machine``."""
        if self.os and machine.os and self.os != machine.os:
            raise VCEError(f"{engine}: built on {self.os}, this machine is {machine.os}; {REBUILD}")
        if self.hardware_compatible:
            if _cc(machine.compute_capability) < AMPERE:
                raise VCEError(
                    f"{engine}: a hardware-compatible (Ampere+) engine needs compute capability 8.0 or "
                    f"higher, this GPU is {machine.gpu_name} (sm {machine.compute_capability}); {REBUILD}"
                )
        elif (machine.gpu_name, machine.compute_capability) != (self.gpu_name, self.compute_capability):
            raise VCEError(
                f"{engine}: built for {self.gpu_name} (sm {self.compute_capability}), this GPU is "
                f"{machine.gpu_name} (sm {machine.compute_capability}); {REBUILD}"
            )
        self._check_version(machine.tensorrt_version, engine)
        if self.dla_core is not None:
            cores = machine.dla_cores or 0
            if cores <= self.dla_core:
                raise VCEError(
                    f"{engine}: built for DLA core {self.dla_core}, this device has {cores} DLA cores; "
                    f"{REBUILD} (without --dla-core on a GPU-only device)"
                )

    def _check_version(self, running: str, engine: str) -> None:
        built, here = version_tuple(self.tensorrt_version), version_tuple(running)
        if not self.version_compatible:
            if here != built:
                raise VCEError(
                    f"{engine}: built with TensorRT {self.tensorrt_version}, this machine has {running}; "
                    f"{REBUILD} (or build with --version-compatible)"
                )
            return
        if here < built:
            raise VCEError(
                f"{engine}: a version-compatible engine built with TensorRT {self.tensorrt_version} needs that "
                f"version or later, this machine has {running}; {REBUILD} or upgrade TensorRT"
            )
        if here[:1] != built[:1] and (built[0], here[0]) not in CROSS_MAJOR_OK:
            raise VCEError(
                f"{engine}: TensorRT {running} cannot run version-compatible engines built with "
                f"{self.tensorrt_version} (across majors only 8 -> 10 and 10 -> 11 are supported); {REBUILD}"
            )

    def check_source(self, graphs: dict[str, Any], engine: str) -> None:
        """Refuse an engine built from another ONNX than the bundle's: ``graphs`` is the manifest's file table."""
        listed = graphs.get(self.source_onnx, {})
        expected = listed.get("sha256") if isinstance(listed, dict) else None
        if not expected:
            raise VCEError(
                f"{engine}: built from {self.source_onnx}, which the bundle does not list; {REBUILD}"
            )
        if expected != self.source_onnx_sha256:
            raise VCEError(
                f"{engine}: built from a different {self.source_onnx} (sha256 {self.source_onnx_sha256[:12]}..., "
                f"the bundle's is {str(expected)[:12]}...); {REBUILD}"
            )
