"""Parity: the PyTorch fp32 reference against every deployable backend of a bundle.

As in Polygraphy, running and comparing are separate: ``TorchReference`` is one more runner (the
backends are vce.runtime's own runners, the code ``vce-run`` uses), ``compare_output`` compares two
arrays. Per output it reports max/mean/median/p99 of the absolute and relative error, NaN/Inf
counts and Polygraphy's elementwise mismatch count (an element fails only when both
``|a - b| > atol`` and ``|a - b| / |ref| > rtol``, NaN always fails). Then what users see: frames
whose thresholded labels differ and whether the events after the full post-processing are
identical. Gates (defaults): fp32 targets max |delta prob| <= 1e-4; fp16 targets <= 1e-2 and
identical events; any NaN/Inf fails.

Inputs are uint8 RGB crops [N,S,S,3]: the reference gets ``normalise(crops)``, each backend what
its graph takes (the crops themselves for a uint8 graph), so uint8 graphs are compared alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vce.runtime.backends import create_runner
from vce.runtime.backends.base import Runner
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError
from vce.runtime.postprocess import PostprocessConfig, binarize, postprocess
from vce.runtime.preprocess import PreprocessSpec, model_input, normalise, resize_crops

OUTPUTS = ("logits", "probs")
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
#: Polygraphy's default elementwise tolerances
POLY_ATOL = 1e-5
POLY_RTOL = 1e-5
#: parity target -> (runner kind, graph role or "engine", precision)
TARGETS: dict[str, tuple[str, str, str]] = {
    "ort-cpu": ("ort-cpu", "fp32", "fp32"),
    "ort-cpu-fp16": ("ort-cpu", "fp16", "fp16"),
    "ort-cuda": ("ort-cuda", "fp32", "fp32"),
    "ort-cuda-fp16": ("ort-cuda", "fp16", "fp16"),
    "ort-trt": ("ort-trt", "fp32", "fp32"),
    "ort-trt-fp16": ("ort-trt", "fp16", "fp16"),
    "trt": ("trt", "engine", "engine"),
}


class TorchReference(Runner):
    """PyTorch fp32 on the CPU (or ``device``): the reference every backend is compared with."""

    name = "torch-fp32"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.model = model.eval().float().to(self.device)

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
            logits = self.model(x).float()
            return {"logits": logits.cpu().numpy(), "probs": torch.sigmoid(logits).cpu().numpy()}


# --- comparison ------------------------------------------------------------------------------------


@dataclass
class OutputStats:
    """Error statistics of one output against the reference (Polygraphy's set)."""

    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    p99_rel: float
    nan: int  # NaN elements in the tested output
    inf: int
    ref_nonfinite: int  # NaN/Inf in the reference itself
    mismatches: int  # elements failing Polygraphy's atol AND rtol test (NaN included)
    elements: int
    atol: float = POLY_ATOL
    rtol: float = POLY_RTOL

    @property
    def finite(self) -> bool:
        return self.nan == 0 and self.inf == 0 and self.ref_nonfinite == 0


def compare_output(
    ref: np.ndarray, out: np.ndarray, *, atol: float = POLY_ATOL, rtol: float = POLY_RTOL
) -> OutputStats:
    """Compare ``out`` with the reference ``ref`` elementwise (float64)."""
    r = np.asarray(ref, dtype=np.float64)
    o = np.asarray(out, dtype=np.float64)
    if r.shape != o.shape:
        raise VCEError(f"output shape {o.shape} differs from the reference's {r.shape}")
    absdiff = np.abs(o - r)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(absdiff == 0, 0.0, absdiff / np.abs(r))
    nan = np.isnan(o) | np.isnan(r)
    bad = nan | ((absdiff > atol) & (rel > rtol))
    fin_abs = absdiff[np.isfinite(absdiff)]
    fin_rel = rel[np.isfinite(rel)]

    def stats(a: np.ndarray) -> tuple[float, float, float, float]:
        if a.size == 0:
            return (float("nan"),) * 4  # type: ignore[return-value]
        return float(a.max()), float(a.mean()), float(np.median(a)), float(np.quantile(a, 0.99))

    amax, amean, amed, ap99 = stats(fin_abs)
    rmax, rmean, rmed, rp99 = stats(fin_rel)
    if fin_abs.size < absdiff.size:  # a non-finite difference is the worst possible
        amax = float("inf")
    if fin_rel.size < rel.size:
        rmax = float("inf")
    return OutputStats(
        max_abs=amax,
        mean_abs=amean,
        median_abs=amed,
        p99_abs=ap99,
        max_rel=rmax,
        mean_rel=rmean,
        median_rel=rmed,
        p99_rel=rp99,
        nan=int(np.isnan(o).sum()),
        inf=int(np.isinf(o).sum()),
        ref_nonfinite=int((~np.isfinite(r)).sum()),
        mismatches=int(bad.sum()),
        elements=int(o.size),
        atol=atol,
        rtol=rtol,
    )


@dataclass
class TargetResult:
    """One backend (or graph/engine) against the reference."""

    target: str
    backend: str
    model_file: str
    precision: str
    tolerance: float
    outputs: dict[str, OutputStats] = field(default_factory=dict)
    frames_label_diff: int = 0
    label_diff_per_class: dict[str, int] = field(default_factory=dict)
    events_identical: bool = True
    events_ref: int = 0
    events_test: int = 0
    require_events: bool = False
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        if self.skipped:
            return True
        probs = self.outputs.get("probs")
        if probs is None or not all(s.finite for s in self.outputs.values()):
            return False
        if not probs.max_abs <= self.tolerance:
            return False
        return self.events_identical or not self.require_events

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


@dataclass
class ParityReport:
    source: str
    frames: int
    reference: str
    thresholds: dict[str, float]
    targets: list[TargetResult]

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frames": self.frames,
            "reference": self.reference,
            "passed": self.passed,
            "polygraphy_tolerances": {"atol": POLY_ATOL, "rtol": POLY_RTOL},
            "thresholds": self.thresholds,
            "targets": [t.to_dict() for t in self.targets],
        }


def compare_target(
    target: TargetResult,
    ref: dict[str, np.ndarray],
    out: dict[str, np.ndarray],
    frames: Sequence[int],
    thresholds: np.ndarray,
    labels: Sequence[str],
    config: PostprocessConfig,
) -> TargetResult:
    """Fill ``target`` with the comparison of ``out`` against ``ref`` (all frames of one sequence)."""
    for name in OUTPUTS:
        target.outputs[name] = compare_output(ref[name], out[name])
    if not np.all(np.isfinite(out["probs"])):
        target.events_identical = False
        return target
    b_ref = binarize(ref["probs"], thresholds)
    b_out = binarize(out["probs"], thresholds)
    diff = b_ref != b_out
    target.frames_label_diff = int(diff.any(axis=1).sum())
    target.label_diff_per_class = {labels[i]: int(n) for i, n in enumerate(diff.sum(axis=0)) if n}
    ev_ref = postprocess(ref["probs"], frames, thresholds, config)
    ev_out = postprocess(out["probs"], frames, thresholds, config)
    target.events_ref, target.events_test = len(ev_ref), len(ev_out)
    target.events_identical = ev_ref == ev_out
    return target


# --- inputs -----------------------------------------------------------------------------------------


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def run_batched(
    runner: Runner, crops: np.ndarray, batch: int, spec: PreprocessSpec | None = None
) -> dict[str, np.ndarray]:
    """``runner`` on uint8 crops [N,S,S,3] (made into what its graph takes with ``spec``), or, with
    no ``spec``, on ready model inputs."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUTS}
    for sl in _batches(len(crops), batch):
        x = crops[sl] if spec is None else model_input(crops[sl], spec, runner.input_dtype)
        out = runner.infer(x)
        for name in OUTPUTS:
            parts[name].append(np.asarray(out[name], dtype=np.float32))
    return {name: np.concatenate(parts[name]) for name in OUTPUTS}


def load_source(
    path: str | os.PathLike[str], spec: PreprocessSpec, limit: int
) -> tuple[np.ndarray, list[int]]:
    """The first ``limit`` decodable frames of a frame folder or video (vce-run's sources), as uint8
    RGB crops [N,S,S,3]."""
    from vce.runtime.sources import FolderSource, VideoSource

    p = Path(path)
    source = FolderSource(p) if p.is_dir() else VideoSource(p)
    images, numbers = [], []
    for slot in source.slots():
        if len(images) >= limit:
            break
        if slot.image is not None:  # corrupt frames are left out of the comparison
            images.append(slot.image)
            numbers.append(slot.frame)
    if not images:
        raise VCEError(f"{p}: no decodable frames")
    return resize_crops(images, spec, bgr=True), numbers


def synthetic_frames(spec: PreprocessSpec, n: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """A synthetic capsule video (vce.train.synth) as uint8 RGB crops: inputs when no data is given."""
    from vce.train.synth import iter_video

    _, it = iter_video(np.random.default_rng(seed), max(n, 8), size=spec.image_size)  # >= 1 frame per segment
    return resize_crops(list(it)[:n], spec), list(range(n))


# --- the run ----------------------------------------------------------------------------------------


def targets_for(bundle: Bundle, requested: Sequence[str] | None) -> list[tuple[str, str, Path, str]]:
    """(target, runner kind, model file, precision) for what the bundle holds and this machine runs.

    ``requested`` None: every available one; otherwise exactly those (an unavailable one is an error).
    """
    from vce.runtime.backends import available_backends

    have = set(available_backends())
    names = list(TARGETS) if requested is None else list(requested)
    out: list[tuple[str, str, Path, str]] = []
    for name in names:
        if name not in TARGETS:
            raise VCEError(f"unknown parity target {name!r}; choose from {', '.join(TARGETS)}")
        kind, role, precision = TARGETS[name]
        explicit = requested is not None
        if kind not in have:
            if explicit:
                raise VCEError(
                    f"backend {kind} is not available on this machine (available: {', '.join(sorted(have)) or 'none'})"
                )
            continue
        if role == "engine":
            engines = bundle.manifest.engines
            if not engines and explicit:
                raise VCEError(
                    f"{bundle.root}: the bundle has no TensorRT engine; build one with `vce-export trt`"
                )
            for e in engines:
                out.append(
                    (
                        f"trt-{e.get('precision', '?')}",
                        kind,
                        bundle.root / e["file"],
                        e.get("precision", "fp32"),
                    )
                )
            continue
        if not bundle.has_graph(role):
            if explicit:
                bundle.graph(role)  # raises the manifest's clear error
            continue
        out.append((name, kind, bundle.graph(role), precision))
    return out


def run_parity(
    model: Any,
    bundle: Bundle,
    crops: np.ndarray,
    frames: Sequence[int],
    *,
    targets: Sequence[str] | None = None,
    batch: int = 8,
    source: str = "",
    tolerance: dict[str, float] | None = None,
    progress: Any = None,
) -> ParityReport:
    """Reference PyTorch fp32 vs each target on uint8 RGB ``crops`` [N,S,S,3] (one sequence, in
    frame order)."""
    tol = {**TOLERANCE, **(tolerance or {})}
    manifest = bundle.manifest
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise VCEError(f"parity runs on uint8 RGB crops [N,S,S,3], got {crops.dtype} {list(crops.shape)}")
    spec = manifest.preprocess_spec()
    thresholds = manifest.thresholds_array()
    config = manifest.postprocess_config()
    plan = targets_for(bundle, targets)
    ref = run_batched(TorchReference(model), normalise(crops, spec), batch)
    if progress is not None:
        progress("torch-fp32")
    results = []
    for name, kind, path, precision in plan:
        res = TargetResult(
            target=name,
            backend=kind,
            model_file=path.name,
            precision=precision,
            tolerance=tol.get(precision, tol["fp32"]),
            require_events=precision != "fp32",
        )
        try:
            with create_runner(kind, path) as runner:
                out = run_batched(runner, crops, batch, spec)
        except VCEError as exc:
            if targets is not None:
                raise
            res.skipped = str(exc)
            results.append(res)
            continue
        results.append(compare_target(res, ref, out, frames, thresholds, manifest.labels, config))
        if progress is not None:
            progress(name)
    return ParityReport(
        source=source,
        frames=len(crops),
        reference="torch-fp32 (cpu)",
        thresholds=dict(manifest.thresholds),
        targets=results,
    )


def _tol(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-") if 0 < x < 0.1 else f"{x:g}"


def gate_text(t: TargetResult) -> str:
    """The test that decides ``t``'s result, with its tolerance: ``|Δprob| ≤ 1e-4`` (``+ same events``)."""
    return f"|Δprob| ≤ {_tol(t.tolerance)}" + (", same events" if t.require_events else "")


def failure_reasons(t: TargetResult) -> list[str]:
    """Why ``t`` failed its gate (empty when it passed or was skipped)."""
    if t.skipped:
        return []
    probs = t.outputs.get("probs")
    reasons = []
    if probs is None:
        reasons.append("no probabilities")
    if not all(s.finite for s in t.outputs.values()):
        reasons.append("NaN/Inf")
    if probs is not None and not probs.max_abs <= t.tolerance:
        reasons.append(f"max |Δprob| {probs.max_abs:.1e} > {_tol(t.tolerance)}")
    if t.require_events and not t.events_identical:
        reasons.append("events differ")
    return reasons


def render_table(report: ParityReport) -> Any:
    """The report for a terminal of 100 columns: the verdicts first (each with the gate it used),
    then Polygraphy's error statistics per output, then what the columns count."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    verdicts = Table(
        title=f"parity vs {report.reference}: {report.frames} frames of {report.source}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("result", "target", "gate", "max |Δprob|", "flipped frames", "events"):
        numeric = col in ("max |Δprob|", "flipped frames")  # their headers wrap, the cells never
        verdicts.add_column(col, justify="right" if numeric else "left", no_wrap=not numeric, overflow="fold")
    failures = []
    for t in report.targets:
        if t.skipped:
            verdicts.add_row("skipped", t.target, "-", "-", "-", "-")
            failures.append(f"{t.target} skipped: {t.skipped}")
            continue
        probs = t.outputs.get("probs")
        if not t.passed:
            failures.append(f"{t.target} FAIL: " + "; ".join(failure_reasons(t)))
        verdicts.add_row(
            "[green]PASS[/]" if t.passed else "[red]FAIL[/]",
            t.target,
            gate_text(t),
            "-" if probs is None else f"{probs.max_abs:.1e}",
            str(t.frames_label_diff),
            f"identical ({t.events_ref})"
            if t.events_identical
            else f"DIFFER ({t.events_test}/{t.events_ref})",
        )
    stats = Table(
        title="error statistics against the reference",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in (
        "target / graph",
        "output",
        "max abs",
        "mean abs",
        "p99 abs",
        "max rel",
        "p99 rel",
        "outside",
        "NaN/Inf",
    ):
        stats.add_column(
            col, justify="left" if col in ("target / graph", "output") else "right", overflow="fold"
        )
    atol = rtol = None
    for t in report.targets:
        for i, (name, s) in enumerate(t.outputs.items()):
            atol, rtol = s.atol, s.rtol
            stats.add_row(
                t.target if i == 0 else (t.model_file if i == 1 else ""),
                name,
                f"{s.max_abs:.1e}",
                f"{s.mean_abs:.1e}",
                f"{s.p99_abs:.1e}",
                f"{s.max_rel:.1e}",
                f"{s.p99_rel:.1e}",
                f"{s.mismatches}/{s.elements}",
                f"{s.nan}/{s.inf}",
            )
    notes = [
        *failures,
        "gate: what decides the result. fp32 graphs pass on the max |Δprob| alone; reduced precision "
        "(fp16, engines) must also give identical events after post-processing; NaN/Inf always fails.",
        "flipped frames: frames whose thresholded labels differ from the reference's; events: "
        "identical (how many) or DIFFER (this target's/the reference's count).",
    ]
    if atol is not None:
        notes.append(
            f"outside: elements with |Δ| > {atol:g} and |Δ|/|ref| > {rtol:g} (Polygraphy's default "
            "elementwise test), for information only: fp16 rounding alone puts most elements outside "
            "it, so it decides nothing."
        )
    parts: list[Any] = [verdicts]
    if stats.row_count:
        parts.append(stats)
    parts += [Text(n, style="dim") for n in notes]
    return Group(*parts)
