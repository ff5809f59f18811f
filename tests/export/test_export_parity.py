"""Parity: Polygraphy-style statistics, label flips and event identity, the run over a bundle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vce.export.parity import (
    TargetResult,
    compare_output,
    compare_target,
    run_parity,
    synthetic_frames,
)
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.runtime.postprocess import PAPER


def test_statistics_match_hand_computation():
    ref = np.array([1.0, 2.0, 4.0, 0.0], np.float32)
    out = np.array([1.0, 2.5, 3.0, 0.0], np.float32)
    s = compare_output(ref, out, atol=0.6, rtol=0.1)
    assert s.max_abs == 1.0 and s.mean_abs == pytest.approx(0.375) and s.median_abs == pytest.approx(0.25)
    assert s.max_rel == pytest.approx(0.25)  # 0.5/2 and 1/4
    assert s.p99_abs == pytest.approx(np.quantile([0, 0.5, 1, 0], 0.99))
    # Polygraphy: an element fails only when both |d| > atol and |d|/|ref| > rtol -> only 4.0 vs 3.0
    assert s.mismatches == 1 and s.elements == 4
    assert s.finite


def test_nan_and_inf_are_counted_and_fail():
    ref = np.zeros((2, 17), np.float32)
    out = ref.copy()
    out[0, 0], out[1, 1] = np.nan, np.inf
    s = compare_output(ref, out)
    assert (s.nan, s.inf) == (1, 1)
    assert s.mismatches >= 1 and not s.finite and math.isinf(s.max_abs)


def _probs(t: int = 60) -> np.ndarray:
    """A clean two-event sequence: stomach on frames 0-29, colon on 30-59."""
    p = np.full((t, 17), 0.1, np.float32)
    p[:30, LABELS.index("stomach")] = 0.9
    p[30:, LABELS.index("colon")] = 0.9
    return p


def _result(precision: str) -> TargetResult:
    return TargetResult("t", "ort-cpu", "m.onnx", precision, 1e-2 if precision == "fp16" else 1e-4,
                        require_events=precision != "fp32")  # fmt: skip


def test_small_differences_keep_labels_and_events():
    ref = {"probs": _probs(), "logits": np.zeros((60, 17), np.float32)}
    out = {"probs": ref["probs"] + 1e-3, "logits": ref["logits"] + 1e-3}
    res = compare_target(_result("fp16"), ref, out, list(range(60)), np.full(17, 0.5), LABELS, PAPER)
    assert res.frames_label_diff == 0 and res.events_identical and res.passed
    assert res.events_ref == 2
    # the same 1e-3 is beyond the fp32 tolerance
    res32 = compare_target(_result("fp32"), ref, out, list(range(60)), np.full(17, 0.5), LABELS, PAPER)
    assert not res32.passed


def test_label_flips_that_change_events_fail_fp16():
    ref = {"probs": _probs(), "logits": np.zeros((60, 17), np.float32)}
    p = ref["probs"].copy()
    p[10:20, LABELS.index("polyp")] = 0.505  # 10 frames cross the 0.5 threshold (|d| 0.405)
    out = {"probs": p, "logits": ref["logits"]}
    res = compare_target(_result("fp16"), ref, out, list(range(60)), np.full(17, 0.5), LABELS, PAPER)
    assert res.frames_label_diff == 10 and res.label_diff_per_class == {"polyp": 10}
    assert not res.events_identical and res.events_test == 4
    assert not res.passed


def test_run_parity_on_a_bundle(tiny_bundle, tiny_model):
    from vce.train.factory import resolve_model

    bundle = Bundle.load(tiny_bundle)
    model, _ = resolve_model("tiny", "paper", seed=0)  # the bundle's weights
    images, frames = synthetic_frames(bundle.manifest.preprocess_spec(), 20)
    assert images.shape == (20, 224, 224, 3) and images.dtype == np.uint8
    report = run_parity(model, bundle, images, frames, batch=8, source="synthetic")
    names = [t.target for t in report.targets]
    assert names[:2] == ["ort-cpu", "ort-cpu-fp16"]
    fp32, fp16 = report.targets[0], report.targets[1]
    assert fp32.outputs["probs"].max_abs <= 1e-4 and fp32.passed
    assert 0 < fp16.outputs["probs"].max_abs <= 1e-2 and fp16.events_identical and fp16.passed
    assert report.passed and report.to_dict()["targets"][1]["precision"] == "fp16"
    # another model (other weights) fails
    other = tiny_model("diff")
    bad = run_parity(other, bundle, images, frames, targets=["ort-cpu"], batch=8)
    assert not bad.passed


def test_unavailable_backend_requested_is_an_error(tiny_bundle):
    bundle = Bundle.load(tiny_bundle)
    images = np.zeros((2, 224, 224, 3), np.uint8)
    with pytest.raises(VCEError, match="unknown parity target"):
        run_parity(None, bundle, images, [0, 1], targets=["onnx-gpu"])


def test_frames_from_a_folder(tmp_path):
    import cv2

    from vce.export.parity import load_source
    from vce.runtime.preprocess import BIOMEDCLIP

    rng = np.random.default_rng(0)
    for n in (10, 2, 33):  # natural order and numbers from the names
        cv2.imwrite(str(tmp_path / f"frame_{n:06d}.png"), rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    (tmp_path / "labels.csv").write_text("frame\n")
    images, frames = load_source(tmp_path, BIOMEDCLIP, limit=2)
    assert frames == [2, 10] and images.shape == (2, 224, 224, 3) and images.dtype == np.uint8


def _report_for_rendering():
    from vce.export.parity import ParityReport

    ref = {"probs": _probs(), "logits": np.zeros((60, 17), np.float32)}
    near = {"probs": ref["probs"] + 1e-3, "logits": ref["logits"] + 1e-3}  # every element "outside" 1e-5
    th, frames = np.full(17, 0.5), list(range(60))
    fp32 = compare_target(_result("fp32"), ref, ref, frames, th, LABELS, PAPER)
    fp32.target, fp32.model_file = "ort-cpu", "model.onnx"
    fp16 = compare_target(_result("fp16"), ref, near, frames, th, LABELS, PAPER)
    fp16.target, fp16.model_file = "ort-cpu-fp16", "model_fp16.onnx"
    p = ref["probs"].copy()
    p[10:20, LABELS.index("polyp")] = 0.505
    bad = compare_target(
        _result("fp16"), ref, {"probs": p, "logits": ref["logits"]}, frames, th, LABELS, PAPER
    )
    bad.target, bad.model_file = "ort-cuda-fp16", "model_fp16.onnx"
    skipped = TargetResult("trt-fp16", "trt", "model.engine", "fp16", 1e-2, skipped="no TensorRT here")
    return ParityReport("a synthetic capsule video", 60, "torch-fp32 (cpu)", {}, [fp32, fp16, bad, skipped])


def test_report_fits_100_columns_verdict_first_with_its_gate():
    from rich.console import Console

    from vce.export.parity import render_table

    console = Console(width=100, record=True, color_system=None)
    console.print(render_table(_report_for_rendering()))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines)
    rows = {line.split()[1]: line for line in lines if line.split()[:1] in (["PASS"], ["FAIL"], ["skipped"])}
    # the verdict comes first, then the target and the gate that decided it, with its tolerance
    assert rows["ort-cpu"].split()[0] == "PASS" and "|Δprob| ≤ 1e-4" in rows["ort-cpu"]
    assert rows["ort-cpu-fp16"].split()[0] == "PASS" and "|Δprob| ≤ 1e-2, same events" in rows["ort-cpu-fp16"]
    assert rows["ort-cuda-fp16"].split()[0] == "FAIL" and "DIFFER (4/2)" in rows["ort-cuda-fp16"]
    assert rows["trt-fp16"].split()[0] == "skipped"
    # why it failed, and what the Polygraphy count next to a PASS means
    assert "ort-cuda-fp16 FAIL: max |Δprob| 4.0e-01 > 1e-2; events differ" in text
    assert "trt-fp16 skipped: no TensorRT here" in text
    fp16_stats = next(line for line in lines if line.split()[:2] == ["ort-cpu-fp16", "logits"])
    assert "1020/1020" in fp16_stats
    words = " ".join(text.split())
    assert "outside: elements with |Δ| > 1e-05 and |Δ|/|ref| > 1e-05 (Polygraphy's default" in words
    assert "for information only" in words and "decides nothing" in words
