"""The TensorRT engine sidecar (``<engine>.json``): what the engine was built for.

Engines are specific to the GPU model, the TensorRT version and the OS. ``vce-export trt`` writes
this beside every engine; ``vce-run`` compares it with the machine it runs on and refuses a
mismatch with one clear line.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.jsonfile import read_json


@dataclass
class EngineInfo:
    gpu_name: str
    compute_capability: str  # "8.7", "9.0"...
    tensorrt_version: str
    precision: str  # "fp16", "fp32", "int8" (what the layers really are, inspected after the build)
    profile: dict[str, list[int]]  # {"min": [N,3,H,W], "opt": [...], "max": [...]}
    source_onnx: str
    source_onnx_sha256: str
    input_name: str = "images"
    output_names: list[str] = field(default_factory=lambda: ["logits", "probs"])
    version_compatible: bool = False
    hardware_compatible: bool = False
    dla_core: int | None = None
    strongly_typed: bool = True
    layer_precisions: dict[str, int] = field(default_factory=dict)  # histogram, e.g. {"Half": 310}
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

    def check_runs_on(
        self, gpu_name: str, compute_capability: str, tensorrt_version: str, engine: str
    ) -> None:
        """Raise VCEError if this engine cannot run here (unless built hardware/version compatible)."""
        if not self.hardware_compatible and (gpu_name, compute_capability) != (
            self.gpu_name,
            self.compute_capability,
        ):
            raise VCEError(
                f"{engine}: built for {self.gpu_name} (sm {self.compute_capability}), this GPU is {gpu_name} "
                f"(sm {compute_capability}); rebuild it here with `vce-export trt`"
            )
        if not self.version_compatible and tensorrt_version != self.tensorrt_version:
            raise VCEError(
                f"{engine}: built with TensorRT {self.tensorrt_version}, this machine has {tensorrt_version}; "
                "rebuild it here with `vce-export trt` (or build with --version-compatible)"
            )
