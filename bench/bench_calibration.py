"""Calibration speed on Galar-size validation data: 500,000 synthetic frames (10 videos x 50,000).

Synthetic labels follow capsule structure (long anatomy regions in order, sparse short pathology
runs); probabilities are the labels blurred by temporally correlated noise. Times the whole
``vce.calibration.calibrate.calibrate`` (thresholds, the post-processing search over the default
space of 480 combinations, 5-fold leave-videos-out cross-validation, the final fit).

    python bench/bench_calibration.py [--videos 10] [--frames 50000] [--thresholds paper|temporal]
    python bench/bench_calibration.py --quick --json out.json   # 5 x 2,000 frames: a smoke run
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from vce.calibration.calibrate import Fitted, calibrate
from vce.calibration.search import SearchSpace
from vce.calibration.thresholds import ThresholdsMethod
from vce.runtime.atomic import write_json
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import run_cli
from vce.runtime.formats.framescsv import VideoFrames
from vce.runtime.postprocess import PAPER, PAPER_THRESHOLDS, thresholds_array

app = VCETyper()


def synthetic_video(rng: np.random.Generator, t: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((t, 17), dtype=bool)
    cuts = np.sort(rng.choice(np.arange(1, t), 4, replace=False))
    for region, (a, b) in zip((0, 1, 2, 3, 4), zip(np.r_[0, cuts], np.r_[cuts, t], strict=True), strict=True):
        labels[a:b, region] = True  # mouth, esophagus, stomach, small intestine, colon in order
    for c, p in zip((5, 6, 7), cuts[:3], strict=True):  # landmarks at the transitions
        labels[p : p + int(rng.integers(3, 30)), c] = True
    for c in range(8, 17):  # pathologies: a few short runs, some videos without
        for _ in range(int(rng.poisson(3))):
            s = int(rng.integers(0, t - 200))
            labels[s : s + int(rng.integers(3, 150)), c] = True
    white = rng.normal(0, 1, (t + 8, 17))
    csum = np.cumsum(white, axis=0)
    noise = (csum[8:] - csum[:-8]) / np.sqrt(8)  # correlated over ~8 frames
    logits = np.where(labels, 2.0, -2.0) + 1.6 * noise
    return labels, 1.0 / (1.0 + np.exp(-logits))


@app.command("calibration")
def calibration_command(
    videos: Annotated[int, typer.Option(min=1, help="synthetic videos")] = 10,
    frames: Annotated[int, typer.Option(min=201, help="frames per video")] = 50_000,
    folds: Annotated[int, typer.Option(min=0, help="leave-videos-out folds (0: none)")] = 5,
    thresholds: Annotated[ThresholdsMethod, typer.Option(help="threshold method")] = ThresholdsMethod.PAPER,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the figures here as JSON")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="5 videos x 2,000 frames (a smoke run)")] = False,
) -> None:
    """Time vce-calibrate's whole fit on synthetic Galar-size validation data (500,000 frames)."""
    if quick:
        videos, frames = 5, 2000
    method = thresholds.value
    rng = np.random.default_rng(0)
    probs, labels = {}, {}
    for v in range(videos):
        y, p = synthetic_video(rng, frames)
        index = np.arange(frames)
        probs[f"v{v:02d}"] = VideoFrames(f"v{v:02d}", index, p)
        labels[f"v{v:02d}"] = VideoFrames(f"v{v:02d}", index, y.astype(float))
    space = SearchSpace()
    current = Fitted(thresholds_array(PAPER_THRESHOLDS), PAPER)
    t0 = time.perf_counter()
    r = calibrate(probs, labels, current, method=method, space=space, folds=folds)
    dt = time.perf_counter() - t0
    n_cfg = len(space.configs(first=PAPER))
    print(
        f"frames {videos * frames}, videos {videos}, configurations {n_cfg}, folds {folds}, thresholds {method}"
    )
    print(f"calibration time {dt:.1f} s")
    print(f"before (paper thresholds + paper post-processing): {r.overall(r.ap_before)}")
    print(f"after, in sample: {r.overall(r.ap_after)}; chosen {r.after.config}")
    print(f"held-out mAP@0.5 (CV): {r.cv_score:.4f} vs before {r.cv_before:.4f}")
    report = {
        "frames": videos * frames,
        "videos": videos,
        "configurations": n_cfg,
        "folds": folds,
        "thresholds": method,
        "calibration_seconds": round(dt, 2),
        "before": r.overall(r.ap_before),
        "after_in_sample": r.overall(r.ap_after),
        "chosen": asdict(r.after.config),
        "heldout_map50_cv": r.cv_score,
        "heldout_map50_cv_before": r.cv_before,
    }
    print(json.dumps(report))
    if json_path:
        write_json(json_path, report)


def main() -> None:
    run_cli(app, "bench_calibration")


if __name__ == "__main__":
    main()
