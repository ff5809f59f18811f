"""Fast search of the post-processing for the best temporal mAP, with leave-videos-out CV.

The runtime's post-processing (``vce.runtime.postprocess``) is the definition; this module computes
the same events in run form, so that hundreds of parameter combinations can be scored on hundreds
of thousands of frames in seconds:

- per video and median size, the thresholded and median-filtered binaries are computed once
  (``median_filter_binary``, vectorised over classes) and kept as runs (``run_bounds``);
- steps 3 and 4 (short runs, gaps) are the runtime's own run-form implementation
  (``postprocess.smooth_runs``);
- ``label`` grouping: a label's segments are its runs. ``tuple`` grouping: a label's segments are
  its runs cut wherever any label changes (``postprocess.split_at_changes``), which is what
  ``group_events`` produces for that label;
- the temporal AP of every label is computed at once from candidate (prediction, ground truth)
  pairs found by binary search (ground-truth segments of a label are ordered and disjoint), then
  the official greedy matching (``vce.calibration.metric``).

The tests check this against ``postprocess`` + ``metric.evaluate`` on random data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from vce.calibration.metric import (
    TIOUS,
    average_precision,
    greedy_hits,
    label_segments,
    scored_videos,
    tiou,
)
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS, NUM_LABELS
from vce.runtime.postprocess import (
    Event,
    Grouping,
    PostprocessConfig,
    Runs,
    binarize,
    median_filter_binary,
    run_bounds,
    segment_ends,
    smooth_runs,
    split_at_changes,
)


class Objective(StrEnum):
    """What calibration maximises: temporal mAP at tIoU 0.5, at 0.95, or the mean of the two."""

    MAP50 = "map50"
    MAP95 = "map95"
    MEAN = "mean"


OBJECTIVES: tuple[str, ...] = tuple(o.value for o in Objective)
_KEY = np.int64(1) << 40  # column offset in combined (column, frame) keys


def objective_weights(objective: str) -> np.ndarray:
    """Weights over TIOUS (0.5, 0.95) for an objective name."""
    weights = {Objective.MAP50: [1.0, 0.0], Objective.MAP95: [0.0, 1.0], Objective.MEAN: [0.5, 0.5]}
    if objective not in weights:
        raise VCEError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return np.array(weights[objective])


# ---------------------------------------------------------------------------------------------------
# prepared validation videos
# ---------------------------------------------------------------------------------------------------


@dataclass
class Segments:
    """Segments of several columns, ordered by column then file order: col, inclusive start/end frames."""

    col: np.ndarray
    start: np.ndarray
    end: np.ndarray
    n_cols: int

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.col, minlength=self.n_cols)

    def ordered_disjoint(self) -> bool:
        same = self.col[1:] == self.col[:-1]
        return bool(np.all(self.start[1:][same] > self.end[:-1][same]))


def gt_segments(events: Sequence[Event]) -> Segments:
    """Ground-truth events -> per-label segments in file order."""
    seg = label_segments(events)
    cols = [np.full(seg[name].shape[0], c, dtype=np.int64) for c, name in enumerate(LABELS)]
    arr = np.concatenate([seg[name] for name in LABELS])
    return Segments(np.concatenate(cols), arr[:, 0].copy(), arr[:, 1].copy(), NUM_LABELS)


@dataclass
class Video:
    """One validation video: predicted frames and probabilities, its labels and ground truth."""

    video: str
    frames: np.ndarray  # [T] frame numbers, increasing
    probs: np.ndarray  # [T, 17]
    labels: np.ndarray  # [T, 17] bool, the labels of the predicted frames
    gt: Segments
    ends: np.ndarray = field(init=False)  # [T] inclusive end frame of a segment whose last row is i
    gt_fast: bool = field(init=False)  # ground truth ordered and disjoint per label

    def __post_init__(self) -> None:
        self.ends = segment_ends(self.frames)
        self.gt_fast = self.gt.ordered_disjoint()


def prepare_videos(
    aligned: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    gt: Mapping[str, Sequence[Event]],
) -> list[Video]:
    """(video, frames, probs, labels) rows (``framescsv.align``) + ground-truth events -> scored Videos.

    Videos the official evaluator would not score (no labelled ground-truth event) are dropped.
    """
    scored = set(scored_videos(gt))
    return [
        Video(vid, frames, probs, labels > 0.5, gt_segments(gt[vid]))
        for vid, frames, probs, labels in aligned
        if vid in scored and frames.size
    ]


# ---------------------------------------------------------------------------------------------------
# run-form post-processing
# ---------------------------------------------------------------------------------------------------


def binary_runs(binary: np.ndarray) -> Runs:
    """Runs (cols, starts, stops) of a [T, C] binary, ordered by column then position (int64)."""
    cols, starts, stops = run_bounds(binary)
    return cols.astype(np.int64), starts.astype(np.int64), stops.astype(np.int64)


def runs_to_segments(
    runs: tuple[np.ndarray, np.ndarray, np.ndarray], frames: np.ndarray, ends: np.ndarray, n_cols: int
) -> Segments:
    cols, starts, stops = runs
    return Segments(cols, frames[starts], ends[stops - 1], n_cols)


# ---------------------------------------------------------------------------------------------------
# temporal AP of many columns at once
# ---------------------------------------------------------------------------------------------------


def segment_aps(
    pred: Segments, gt: Segments, tious: Sequence[float] = TIOUS, fast: bool = True
) -> np.ndarray:
    """AP per column and tIoU [n_cols, len(tious)], official semantics; segments grouped by column.

    ``fast`` needs each column's ground-truth segments ordered and disjoint (always true for ground
    truth built by tuple grouping); otherwise every column is scored by ``metric.average_precision``.
    """
    n = pred.n_cols
    n_gt = gt.counts
    n_pred = pred.counts
    out = np.zeros((n, len(tious)))
    if not fast:
        for c in range(n):
            g = np.stack([gt.start[gt.col == c], gt.end[gt.col == c]], axis=1)
            p = np.stack([pred.start[pred.col == c], pred.end[pred.col == c]], axis=1)
            out[c] = [average_precision(g, p, t) for t in tious]
        return out
    empty = n_gt == 0
    out[empty] = np.where(n_pred[empty] == 0, 1.0, 0.0)[:, None]
    if pred.col.size and gt.col.size:
        g_start_key = gt.col * _KEY + gt.start
        g_end_key = gt.col * _KEY + gt.end
        lo = np.searchsorted(g_end_key, pred.col * _KEY + pred.start, side="left")
        hi = np.searchsorted(g_start_key, pred.col * _KEY + pred.end, side="right")
        cnt = np.maximum(hi - lo, 0)
        pi = np.repeat(np.arange(pred.col.size), cnt)
        gj = lo[pi] + (np.arange(pi.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        iou = tiou(pred.start[pi], pred.end[pi], gt.start[gj], gt.end[gj])
        col_first = np.cumsum(n_pred) - n_pred  # index of each column's first prediction
        rank = np.arange(pred.col.size) - col_first[pred.col] + 1
        for k, thr in enumerate(tious):
            ok = iou >= thr
            hits = greedy_hits(pi[ok], gj[ok], pred.col.size)
            cum = np.cumsum(hits)
            before = np.r_[0, cum][col_first]  # hits before each column starts
            precision = (cum - before[pred.col]) / rank
            sums = np.bincount(pred.col[hits], weights=precision[hits], minlength=n)
            out[~empty, k] = sums[~empty] / n_gt[~empty]
    return out


# ---------------------------------------------------------------------------------------------------
# configurations and the search table
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """Post-processing values to try (every combination); checked on construction."""

    medians: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 15, 21)
    min_runs: tuple[int, ...] = (1, 2, 3, 5, 8, 12)
    max_gaps: tuple[int, ...] = (0, 2, 5, 10, 20)
    groupings: tuple[str, ...] = tuple(g.value for g in Grouping)

    def __post_init__(self) -> None:
        bad = [g for g in self.groupings if g not in tuple(Grouping)]
        if bad:
            raise VCEError(f"--groupings takes tuple and/or label, got {bad}")
        if any(m < 1 for m in self.medians) or any(v < 0 for v in self.min_runs + self.max_gaps):
            raise VCEError("medians must be >= 1, min-runs and max-gaps >= 0")

    def configs(self, first: PostprocessConfig | None = None) -> list[PostprocessConfig]:
        """Every combination; ``first`` (e.g. the current one) leads so that ties keep it."""
        out = [
            PostprocessConfig(m, r, g, grouping)  # type: ignore[arg-type]
            for grouping, m, r, g in itertools.product(
                self.groupings, self.medians, self.min_runs, self.max_gaps
            )
        ]
        if first is not None:
            out = [first] + [c for c in out if c != first]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.__dict__.items()}


def video_config_aps(
    video: Video, thresholds: np.ndarray, configs: Sequence[PostprocessConfig], tious: Sequence[float] = TIOUS
) -> np.ndarray:
    """AP [configs, 17, tious] of one video for each post-processing configuration."""
    binary = binarize(video.probs, thresholds)
    by_median: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    out = np.zeros((len(configs), NUM_LABELS, len(tious)))
    for i, cfg in enumerate(configs):
        if cfg.median not in by_median:
            by_median[cfg.median] = binary_runs(median_filter_binary(binary, cfg.median))
        runs = smooth_runs(by_median[cfg.median], cfg.min_run, cfg.max_gap)
        if cfg.grouping == "tuple":
            runs = split_at_changes(runs)
        pred = runs_to_segments(runs, video.frames, video.ends, NUM_LABELS)
        out[i] = segment_aps(pred, video.gt, tious, fast=video.gt_fast)
    return out


def config_table(
    videos: Sequence[Video],
    thresholds: np.ndarray,
    configs: Sequence[PostprocessConfig],
    tious: Sequence[float] = TIOUS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """AP [configs, videos, 17, tious] for every configuration and video."""
    table = np.zeros((len(configs), len(videos), NUM_LABELS, len(tious)))
    for j, video in enumerate(videos):
        table[:, j] = video_config_aps(video, thresholds, configs, tious)
        if progress is not None:
            progress(1)
    return table


def config_scores(table: np.ndarray, objective: str, videos: np.ndarray | None = None) -> np.ndarray:
    """Objective of every configuration over the chosen videos (mean of per-video mAPs) [configs]."""
    sel = table if videos is None else table[:, videos]
    per_video = sel.mean(axis=2) @ objective_weights(objective)  # [configs, videos]
    return per_video.mean(axis=1)


def best_config(scores: np.ndarray) -> int:
    """Index of the best score; ties (to 1e-12) go to the earliest configuration."""
    return int(np.flatnonzero(scores >= scores.max() - 1e-12)[0])


def video_folds(n_videos: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Leave-videos-out folds: shuffled video indices split into ``min(folds, n_videos)`` parts."""
    k = min(folds, n_videos)
    if k < 2:
        raise VCEError(
            f"cross-validation needs at least 2 validation videos (have {n_videos}); use --folds 0 to skip it"
        )
    order = np.random.default_rng(seed).permutation(n_videos)
    return [np.sort(part) for part in np.array_split(order, k)]
