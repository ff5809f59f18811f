"""The ONNX exporters and opsets ``vce-export onnx`` offers, as choices (importable without torch)."""

from __future__ import annotations

from enum import StrEnum

from vce.runtime.errors import VCEError


class Exporter(StrEnum):
    """``torch.onnx``'s two exporters: TorchScript tracing and dynamo (``torch.export``)."""

    TORCHSCRIPT = "torchscript"
    DYNAMO = "dynamo"


EXPORTERS = tuple(e.value for e in Exporter)
#: chosen by measurement (bench/bench_export.py, full ViT-B/16, random weights, 2 shared CPU cores):
#: torchscript+optimizer 641 nodes (paper) / 869 (diff), dynamo 499 / 583; ORT CPU fp32 batch 8,
#: measured round-robin, torchscript 0.98 vs dynamo 0.92 img/s (paper), 0.94 vs 0.86 (diff) at a
#: machine load of ~8; export 38-63 s vs 22-135 s (load-dependent); dynamo cannot reach opset 17
#: without a repaired down-conversion. Both are exact (max |delta prob| ~1.5e-7).
DEFAULT_EXPORTER = Exporter.TORCHSCRIPT.value
OPSETS = (17, 18, 19, 20)
DEFAULT_OPSET = 17


def check_exporter(exporter: str) -> Exporter:
    """``exporter`` as an :class:`Exporter`; one clear line if vce has no such exporter."""
    if exporter not in EXPORTERS:
        raise VCEError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    return Exporter(exporter)


def check_opset(opset: int) -> int:
    """``opset`` if vce exports to it; one clear line otherwise."""
    if opset not in OPSETS:
        raise VCEError(f"opset {opset} is not supported; choose one of {', '.join(map(str, OPSETS))}")
    return opset
