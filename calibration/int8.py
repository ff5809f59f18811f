"""INT8 graphs for a bundle: explicit QDQ (static, for TensorRT and ONNX Runtime) and dynamic (CPU).

Static: ONNX Runtime's ``quantize_static`` in QDQ form, calibrated (MinMax) on real frames read from
a frame folder or a video and preprocessed with the toolkit's one preprocessing. Only the weighted
layers are quantized (``MatMul`` with a constant weight, ``Gemm``, ``Conv``): int8 weights per
output channel, symmetric int8 activations (zero points 0, as TensorRT's explicit quantization
wants). LayerNormalization, Softmax, GELU, residual Adds and, by default, the two activation x
activation matmuls of attention stay in float: they carry most of the quantization error of a ViT
and little of its compute on CPU.

Dynamic: ``quantize_dynamic`` of the weighted matmuls (DynamicQuantizeLinear + MatMulInteger).

Every graph passes the one graph audit (vce.runtime.graph_audit, as the fp32 graph did at export):
default-domain ops only (``com.microsoft`` contrib ops are refused), a valid graph, the bundle's
input and ``logits``/``probs`` [N,17] outputs; then it is compared with the fp32 graph on held-out frames: max |delta prob| and events
changed after the bundle's post-processing. Beyond the tolerance the graph is reported and not
added, unless forced (then the manifest records the drift).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vce.calibration.metric import evaluate, scored_videos
from vce.runtime.atomic import atomic_path
from vce.runtime.backends import create_runner
from vce.runtime.bundle import GRAPH_FILES, Bundle, sha256_file
from vce.runtime.errors import VCEError
from vce.runtime.graph_audit import AuditReport, audit_file
from vce.runtime.lazy import require
from vce.runtime.onnxscan import check_graph
from vce.runtime.postprocess import PostprocessConfig, postprocess
from vce.runtime.preprocess import BIOMEDCLIP, PreprocessSpec, model_input, resize_crop
from vce.runtime.sources import FolderSource, VideoSource, read_image

MODES: tuple[str, ...] = ("static", "dynamic")
ROLE = {"static": "int8", "dynamic": "int8-dynamic"}
WEIGHTED_OPS: tuple[str, ...] = ("MatMul", "Gemm", "Conv")


# ---------------------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------------------


@dataclass
class Frames:
    """Model inputs and their frame numbers [N] (increasing): preprocessed float32 [N, 3, S, S], or
    for a uint8 graph (``vce-export onnx --input uint8``) the uint8 RGB crops [N, S, S, 3]."""

    images: np.ndarray
    numbers: np.ndarray
    source: str


def _spread(n_total: int, count: int) -> np.ndarray:
    """``count`` evenly spread indices of ``n_total`` (all of them when fewer)."""
    if n_total <= count:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, count).round().astype(np.int64))


def read_frames(
    frames_dir: str | os.PathLike[str] | None = None,
    video: str | os.PathLike[str] | None = None,
    count: int = 128,
    spec: PreprocessSpec = BIOMEDCLIP,
    *,
    input_dtype: Any = np.float32,
) -> Frames:
    """Up to ``count`` frames spread over a frame folder or a video, preprocessed as the model expects
    (``input_dtype`` uint8: a uint8 graph's RGB crops).

    Read with the runtime's sources (the same decoding as ``vce-run``); a video's undecodable frames
    are skipped, an unreadable image in a folder is an error naming it.
    """
    if (frames_dir is None) == (video is None):
        raise VCEError("give exactly one source of calibration frames: --frames DIR or --video FILE")
    images: list[np.ndarray] = []
    numbers: list[int] = []
    if frames_dir is not None:
        files = FolderSource(Path(frames_dir)).files
        for i in _spread(len(files), count):
            image = read_image(files[i].path)
            if image is None:
                raise VCEError(f"{files[i].path}: cannot read this image (corrupt or not an image)")
            images.append(resize_crop(image, spec, bgr=True))
            numbers.append(files[i].frame)
        source = str(frames_dir)
    else:
        src = VideoSource(Path(video))  # type: ignore[arg-type]
        step = max(1, src.length_hint() // count)
        for slot in src.slots(want=lambda pos: pos % step == 0):
            if slot.image is not None and slot.position % step == 0:
                images.append(resize_crop(slot.image, spec, bgr=True))
                numbers.append(slot.frame)
                if len(images) == count:
                    break
        if not images:
            raise VCEError(f"{src.path}: no frame could be decoded")
        source = str(src.path)
    return Frames(model_input(np.stack(images), spec, input_dtype), np.array(numbers, dtype=np.int64), source)


def split_frames(frames: Frames) -> tuple[Frames, Frames]:
    """Calibration frames (even positions) and held-out check frames (odd positions, a sequence)."""
    if frames.images.shape[0] < 4:
        raise VCEError(
            f"{frames.source}: only {frames.images.shape[0]} frames; INT8 needs at least 4 (use more frames)"
        )
    cal = Frames(frames.images[0::2], frames.numbers[0::2], frames.source)
    check = Frames(frames.images[1::2], frames.numbers[1::2], frames.source)
    return cal, check


# ---------------------------------------------------------------------------------------------------
# quantization
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice through the root logger; keep the console to our lines."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _input_name(model_path: Path) -> str:
    ort = require("onnxruntime", "INT8 calibration")
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return str(sess.get_inputs()[0].name)


def _reader(input_name: str, images: np.ndarray, batch: int) -> Any:
    quant = require("onnxruntime.quantization", "INT8 calibration")

    class Reader(quant.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = (
                {input_name: np.ascontiguousarray(images[i : i + batch])}  # float32, or a uint8 graph's crops
                for i in range(0, images.shape[0], batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return Reader()


def quantize_static_qdq(
    fp32: str | os.PathLike[str],
    output: str | os.PathLike[str],
    images: np.ndarray,
    *,
    attention: bool = False,
    batch: int = 8,
) -> Path:
    """Explicit QDQ INT8 graph calibrated on ``images`` (float32 [N, 3, S, S], or a uint8 graph's
    crops [N, S, S, 3]; per-channel weights, symmetric)."""
    require("onnx", "INT8 quantization")
    quant = require("onnxruntime.quantization", "INT8 quantization")
    src = Path(fp32)
    check_graph(src)  # the quantizer loads external data into the INT8 graph: refuse it first
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "MatMulConstBOnly": not attention,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        "UseQDQContribOps": False,
    }
    with atomic_path(output) as tmp, _quiet_root_logger():
        quant.quantize_static(
            str(src),
            str(tmp),
            _reader(_input_name(src), images, batch),
            quant_format=quant.QuantFormat.QDQ,
            op_types_to_quantize=list(WEIGHTED_OPS),
            per_channel=True,
            activation_type=quant.QuantType.QInt8,
            weight_type=quant.QuantType.QInt8,
            calibrate_method=quant.CalibrationMethod.MinMax,
            extra_options=extra,
        )
    return Path(output)


def quantize_dynamic_int8(fp32: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Dynamic INT8 (weights int8, activations quantized at run time) of the weighted matmuls."""
    require("onnx", "INT8 quantization")
    quant = require("onnxruntime.quantization", "INT8 quantization")
    check_graph(fp32)  # the quantizer loads external data into the INT8 graph: refuse it first
    with atomic_path(output) as tmp, _quiet_root_logger():
        quant.quantize_dynamic(
            str(fp32),
            str(tmp),
            op_types_to_quantize=["MatMul"],
            per_channel=False,
            weight_type=quant.QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    return Path(output)


# ---------------------------------------------------------------------------------------------------
# drift
# ---------------------------------------------------------------------------------------------------


def _event_key(ev: dict[str, Any]) -> tuple[int, int, tuple[str, ...]]:
    return int(ev["start"]), int(ev["end"]), tuple(sorted(ev["label"]))


def run_probs(model: str | os.PathLike[str], images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, float]:
    """Probabilities [N, 17] of a graph on ONNX Runtime CPU, and images/s."""
    with create_runner("ort-cpu", model) as runner:
        runner.infer(images[: min(batch, images.shape[0])])  # warm-up
        t0 = time.perf_counter()
        out = [runner.infer(images[i : i + batch])["probs"] for i in range(0, images.shape[0], batch)]
        dt = time.perf_counter() - t0
    return np.concatenate(out), images.shape[0] / max(dt, 1e-9)


@dataclass
class Drift:
    """INT8 against fp32 on the same frames."""

    frames: int
    max_abs_prob: float
    mean_abs_prob: float
    decisions_flipped: int  # frame x label decisions (prob >= threshold) that differ
    events_fp32: int
    events_int8: int
    events_changed: int  # events in one list and not (identically) in the other
    agreement_map50: float  # temporal mAP@0.5 of the INT8 events scored against the fp32 events
    fp32_images_per_s: float = 0.0
    int8_images_per_s: float = 0.0

    @property
    def events_changed_fraction(self) -> float:
        return self.events_changed / max(1, self.events_fp32 + self.events_int8)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_changed_fraction": self.events_changed_fraction}


def drift(
    fp32_probs: np.ndarray,
    int8_probs: np.ndarray,
    numbers: np.ndarray,
    thresholds: np.ndarray,
    config: PostprocessConfig,
) -> Drift:
    """Compare probabilities and the events the bundle's post-processing makes of them."""
    delta = np.abs(fp32_probs.astype(np.float64) - int8_probs.astype(np.float64))
    flips = int(np.count_nonzero((fp32_probs >= thresholds) != (int8_probs >= thresholds)))
    ev32 = postprocess(fp32_probs, numbers, thresholds, config)
    ev8 = postprocess(int8_probs, numbers, thresholds, config)
    k32, k8 = {_event_key(e) for e in ev32}, {_event_key(e) for e in ev8}
    if scored_videos({"check": ev32}):
        agreement = evaluate({"check": ev8}, {"check": ev32}, (0.5,)).overall["mAP@0.5"]
    else:  # fp32 finds nothing: the official metric would not score it; agree iff INT8 finds nothing
        agreement = 0.0 if scored_videos({"check": ev8}) else 1.0
    return Drift(
        frames=int(fp32_probs.shape[0]),
        max_abs_prob=float(delta.max()),
        mean_abs_prob=float(delta.mean()),
        decisions_flipped=flips,
        events_fp32=len(ev32),
        events_int8=len(ev8),
        events_changed=len(k32 ^ k8),
        agreement_map50=float(agreement),
    )


@dataclass
class Tolerance:
    max_prob: float = 0.05
    max_event_fraction: float = 0.05

    def exceeded(self, d: Drift) -> list[str]:
        why = []
        if d.max_abs_prob > self.max_prob:
            why.append(f"max |delta prob| {d.max_abs_prob:.4f} > {self.max_prob}")
        if d.events_changed_fraction > self.max_event_fraction:
            why.append(
                f"{d.events_changed} of {d.events_fp32 + d.events_int8} events changed "
                f"({d.events_changed_fraction:.1%} > {self.max_event_fraction:.1%})"
            )
        return why


@dataclass
class Int8Report:
    mode: str
    file: str
    drift: Drift
    ops: dict[str, int]
    seconds: float
    exceeded: list[str] = field(default_factory=list)
    added: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "file": self.file,
            "drift": self.drift.to_dict(),
            "within_tolerance": not self.exceeded,
            "exceeded": self.exceeded,
            "added": self.added,
            "quantize_seconds": round(self.seconds, 2),
        }


def quantize_bundle(
    bundle_dir: str | os.PathLike[str],
    *,
    frames_dir: str | os.PathLike[str] | None = None,
    video: str | os.PathLike[str] | None = None,
    modes: Sequence[str] = MODES,
    count: int = 128,
    tolerance: Tolerance | None = None,
    force: bool = False,
    attention: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[Int8Report]:
    """Quantize the bundle's fp32 graph, audit it, measure drift, add it to the bundle if acceptable.

    A graph beyond tolerance is kept beside the bundle files as ``<name>.rejected.onnx``, not listed
    in the manifest (a graph the bundle already lists stays as it is), unless ``force`` (then it is
    listed with its drift). The reports say which graphs exceeded the tolerance; the manifest is
    consistent with the files at every step (a crash never leaves a listed file with another hash).
    """
    say = log or (lambda _msg: None)
    tol = tolerance or Tolerance()
    bad_modes = [m for m in modes if m not in MODES]
    if bad_modes:
        raise VCEError(f"unknown INT8 mode(s) {bad_modes}; choose from {', '.join(MODES)}")
    job = _Job.open(bundle_dir, tol)
    cal, check = _calibration_frames(job, frames_dir, video, count, say)
    ref = _fp32_reference(job.fp32, check)
    reports = [
        _quantize_mode(job, mode, cal, check, ref, force=force, attention=attention, say=say)
        for mode in modes
    ]
    _record(job.bundle, reports, str(frames_dir or video), tol, force=force, attention=attention)
    return reports


@dataclass
class _Job:
    """The bundle being quantized and what every mode needs of it."""

    bundle: Bundle
    fp32: Path
    spec: PreprocessSpec
    thresholds: np.ndarray
    config: PostprocessConfig
    input_dtype: np.dtype[Any]
    tolerance: Tolerance

    @classmethod
    def open(cls, bundle_dir: str | os.PathLike[str], tolerance: Tolerance) -> _Job:
        bundle = Bundle.load(bundle_dir)
        fp32 = bundle.graph("fp32")
        return cls(
            bundle=bundle,
            fp32=fp32,
            spec=bundle.manifest.preprocess_spec(),
            thresholds=bundle.manifest.thresholds_array(),
            config=bundle.manifest.postprocess_config(),
            input_dtype=np.dtype(bundle.graph_input(fp32.name).get("dtype", "float32")),
            tolerance=tolerance,
        )


@dataclass
class _Reference:
    """The fp32 graph's probabilities on the held-out frames, and its speed."""

    probs: np.ndarray
    images_per_s: float


def _calibration_frames(
    job: _Job,
    frames_dir: str | os.PathLike[str] | None,
    video: str | os.PathLike[str] | None,
    count: int,
    say: Callable[[str], None],
) -> tuple[Frames, Frames]:
    """Read the frames (as the graph takes them) and split them into calibration and held-out frames."""
    frames = read_frames(frames_dir, video, count, job.spec, input_dtype=job.input_dtype)
    say(f"read {frames.images.shape[0]} frames from {frames.source}")
    cal, check = split_frames(frames)
    say(f"{cal.images.shape[0]} calibration frames, {check.images.shape[0]} held-out check frames")
    return cal, check


def _fp32_reference(fp32: Path, check: Frames) -> _Reference:
    """Run the fp32 graph on the held-out frames; a graph that gives NaN/Inf is refused."""
    probs, speed = run_probs(fp32, check.images)
    broken = int(np.count_nonzero(~np.isfinite(probs).all(axis=1)))
    if broken:
        raise VCEError(
            f"{fp32}: the fp32 graph gives NaN/Inf probabilities on {broken} of {probs.shape[0]} "
            "frames; fix or re-export the model before quantizing it"
        )
    return _Reference(probs, speed)


def _audit_int8(job: _Job, candidate: Path, name: str) -> AuditReport:
    """The one graph audit, with the bundle's input contract; a failing graph is refused."""
    report = audit_file(candidate, image_size=job.spec.image_size, input_kind=job.input_dtype.name)
    report.path = name
    report.raise_if_failed("INT8", "The quantizer's graph was refused")
    return report


def _quantize_mode(
    job: _Job,
    mode: str,
    cal: Frames,
    check: Frames,
    ref: _Reference,
    *,
    force: bool,
    attention: bool,
    say: Callable[[str], None],
) -> Int8Report:
    """Quantize, audit and measure one mode's graph, then add it to the bundle or set it aside."""
    name = GRAPH_FILES[ROLE[mode]]
    out = job.bundle.root / name
    candidate = out.with_name(f".{out.stem}.candidate.onnx")
    try:
        t0 = time.perf_counter()
        say(f"{mode}: quantizing {job.fp32.name} -> {name}")
        if mode == "static":
            quantize_static_qdq(job.fp32, candidate, cal.images, attention=attention)
        else:
            quantize_dynamic_int8(job.fp32, candidate)
        seconds = time.perf_counter() - t0
        audit = _audit_int8(job, candidate, name)
        probs, speed = run_probs(candidate, check.images)
        d = drift(ref.probs, probs, check.numbers, job.thresholds, job.config)
        d.fp32_images_per_s, d.int8_images_per_s = ref.images_per_s, speed
        ops = dict(sorted(audit.op_histogram.items()))
        report = Int8Report(mode, name, d, ops, seconds, job.tolerance.exceeded(d))
        if not report.exceeded or force:
            _add_graph(job, mode, candidate, report)
        else:
            rejected = out.with_name(f"{out.stem}.rejected.onnx")
            os.replace(candidate, rejected)
            report.file = rejected.name
    finally:
        candidate.unlink(missing_ok=True)
    return report


def _add_graph(job: _Job, mode: str, candidate: Path, report: Int8Report) -> None:
    """Replace the bundle's graph of this mode by ``candidate``; the manifest never lists a stale hash."""
    bundle, name = job.bundle, report.file
    bundle.remove_file(name)  # unlist the old graph before its file is replaced
    bundle.save()
    os.replace(candidate, bundle.root / name)
    bundle.add_file(
        name,
        ROLE[mode],
        source_sha256=sha256_file(job.fp32),
        quantization=mode,
        drift=report.drift.to_dict(),
        within_tolerance=not report.exceeded,
    )
    bundle.save()
    report.added = True


def _record(
    bundle: Bundle, reports: list[Int8Report], source: str, tol: Tolerance, *, force: bool, attention: bool
) -> None:
    """Write the run's reports into the manifest's ``calibration.int8``."""
    bundle.manifest.calibration = {
        **bundle.manifest.calibration,
        "int8": {
            "source": source,
            "tolerance": asdict(tol),
            "forced": force,
            "attention_quantized": attention,
            "reports": [r.to_dict() for r in reports],
        },
    }
    bundle.save()
