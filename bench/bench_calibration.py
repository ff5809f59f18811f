"""Calibration speed on Galar-size validation data: 500,000 synthetic frames (10 videos x 50,000).

Synthetic labels follow capsule structure (long anatomy regions in order, sparse short pathology
runs); probabilities are the labels blurred by temporally correlated noise. Times the whole
``vce.calibration.calibrate.calibrate`` (thresholds, the post-processing search over the default
space of 480 combinations, 5-fold leave-videos-out cross-validation, the final fit).

    python bench/bench_calibration.py [--videos 10] [--frames 50000] [--thresholds paper|temporal]
    python bench/bench_calibration.py --quick --json out.json   # 5 x 2,000 frames: a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vce.calibration.calibrate import Fitted, calibrate
from vce.calibration.search import SearchSpace
from vce.runtime.atomic import write_json
from vce.runtime.formats.framescsv import VideoFrames
from vce.runtime.postprocess import PAPER, PAPER_THRESHOLDS, thresholds_array


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--thresholds", default="paper", choices=["paper", "temporal", "keep"])
    ap.add_argument("--json", type=Path, help="also write the figures here as JSON")
    ap.add_argument("--quick", action="store_true", help="5 videos x 2,000 frames (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.videos, args.frames = 5, 2000
    rng = np.random.default_rng(0)
    probs, labels = {}, {}
    for v in range(args.videos):
        y, p = synthetic_video(rng, args.frames)
        frames = np.arange(args.frames)
        probs[f"v{v:02d}"] = VideoFrames(f"v{v:02d}", frames, p)
        labels[f"v{v:02d}"] = VideoFrames(f"v{v:02d}", frames, y.astype(float))
    space = SearchSpace()
    current = Fitted(thresholds_array(PAPER_THRESHOLDS), PAPER)
    t0 = time.perf_counter()
    r = calibrate(probs, labels, current, method=args.thresholds, space=space, folds=args.folds)
    dt = time.perf_counter() - t0
    n_cfg = len(space.configs(first=PAPER))
    print(
        f"frames {args.videos * args.frames}, videos {args.videos}, configurations {n_cfg}, folds {args.folds}, thresholds {args.thresholds}"
    )
    print(f"calibration time {dt:.1f} s")
    print(f"before (paper thresholds + paper post-processing): {r.overall(r.ap_before)}")
    print(f"after, in sample: {r.overall(r.ap_after)}; chosen {r.after.config}")
    print(f"held-out mAP@0.5 (CV): {r.cv_score:.4f} vs before {r.cv_before:.4f}")
    report = {
        "frames": args.videos * args.frames,
        "videos": args.videos,
        "configurations": n_cfg,
        "folds": args.folds,
        "thresholds": args.thresholds,
        "calibration_seconds": round(dt, 2),
        "before": r.overall(r.ap_before),
        "after_in_sample": r.overall(r.ap_after),
        "chosen": asdict(r.after.config),
        "heldout_map50_cv": r.cv_score,
        "heldout_map50_cv_before": r.cv_before,
    }
    print(json.dumps(report))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
