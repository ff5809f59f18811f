"""Per-class decision thresholds fitted on validation probabilities.

- ``paper``: the paper's frame-level F1 grid: per class the best F1 over
  ``arange(lo, 0.85, 0.02)``, ``lo = 0.05`` for classes under 1 % support else 0.15; 0.2 for a
  class without support. Ties go to the lowest threshold.
- ``temporal``: per class, the threshold on a 0.02 grid from 0.05 to 0.95 that maximises the label's
  mean temporal AP over the validation videos (the challenge's own metric, under the chosen
  smoothing, one label at a time as in ``label`` grouping). Frame-level F1 is only a proxy: it
  rewards isolated correct frames and ignores that a label absent from a video scores 1.0 only if
  nothing is predicted for it. Ties go to the threshold nearest the F1-grid one.
- ``keep``: the bundle's current thresholds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

import numpy as np

from vce.calibration.search import (
    Segments,
    Video,
    binary_runs,
    objective_weights,
    runs_to_segments,
    segment_aps,
)
from vce.runtime.errors import VCEError
from vce.runtime.labels import NUM_LABELS
from vce.runtime.postprocess import PostprocessConfig, median_filter_binary, smooth_runs


class ThresholdsMethod(StrEnum):
    """How calibration sets the per-label thresholds: the paper's F1 grid, per-label temporal AP,
    or keep the bundle's."""

    PAPER = "paper"
    TEMPORAL = "temporal"
    KEEP = "keep"


METHODS: tuple[str, ...] = tuple(m.value for m in ThresholdsMethod)
NO_SUPPORT = 0.2
TEMPORAL_GRID = np.round(np.arange(0.05, 0.951, 0.02), 2)


def f1_at(probs: np.ndarray, truth: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Frame F1 of one class at every threshold of ``grid`` (``prob >= t``), by sorting once."""
    p = np.sort(np.asarray(probs, dtype=np.float64))
    y = np.asarray(truth, dtype=bool)
    y_sorted = y[np.argsort(probs, kind="stable")]
    pos_below = np.r_[0, np.cumsum(y_sorted)]  # positives among the i lowest probabilities
    n_pos = int(y.sum())
    below = np.searchsorted(p, grid, side="left")  # frames with prob < t
    tp = n_pos - pos_below[below]
    n_pred = p.size - below
    denom = n_pred + n_pos
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def paper_grid_thresholds(probs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The paper's per-class F1-grid thresholds from frame probabilities [T, 17] and labels [T, 17]."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(truth) > 0.5
    if p.ndim != 2 or p.shape[1] != NUM_LABELS or y.shape != p.shape:
        raise VCEError(
            f"expected probabilities and labels of shape [frames, {NUM_LABELS}], got {p.shape}, {y.shape}"
        )
    out = np.full(NUM_LABELS, NO_SUPPORT)
    for c in range(NUM_LABELS):
        n_pos = int(y[:, c].sum())
        if n_pos == 0:
            continue
        lo = 0.05 if n_pos / p.shape[0] < 0.01 else 0.15
        grid = np.arange(lo, 0.85, 0.02)
        f1 = f1_at(p[:, c], y[:, c], grid)
        out[c] = round(float(grid[int(np.argmax(f1))]), 2)
    return out


def temporal_thresholds(
    videos: Sequence[Video],
    config: PostprocessConfig,
    objective: str = "map50",
    fallback: np.ndarray | None = None,
    grid: np.ndarray = TEMPORAL_GRID,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Per class, the grid threshold with the best mean temporal AP (label by label) over ``videos``."""
    weights = objective_weights(objective)
    k = grid.size
    score = np.zeros((NUM_LABELS, k))
    for video in videos:
        gt_counts = video.gt.counts
        for c in range(NUM_LABELS):
            binary = video.probs[:, c, None] >= grid[None, :]  # [T, K]: one column per candidate
            runs = binary_runs(median_filter_binary(binary, config.median))
            runs = smooth_runs(runs, config.min_run, config.max_gap)
            pred = runs_to_segments(runs, video.frames, video.ends, k)
            sel = video.gt.col == c
            g = int(gt_counts[c])
            gt = Segments(
                np.repeat(np.arange(k, dtype=np.int64), g),
                np.tile(video.gt.start[sel], k),
                np.tile(video.gt.end[sel], k),
                k,
            )
            score[c] += segment_aps(pred, gt, fast=video.gt_fast) @ weights
        if progress is not None:
            progress(1)
    ref = np.full(NUM_LABELS, 0.5) if fallback is None else np.asarray(fallback, dtype=np.float64)
    out = np.empty(NUM_LABELS)
    for c in range(NUM_LABELS):
        best = np.flatnonzero(score[c] >= score[c].max() - 1e-9)
        out[c] = grid[best[np.argmin(np.abs(grid[best] - ref[c]))]]
    return out
