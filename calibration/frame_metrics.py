"""Frame-level metrics per label: average precision, ROC AUC, F1/precision/recall at thresholds.

AP is the step-wise area ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds (ties form one
step, as scikit-learn's ``average_precision_score``); AUC is the Mann-Whitney statistic with tied
scores counted as one half. Both are undefined (NaN) for a label without positives or without
negatives; macro means are taken over the labels where the metric is defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vce.runtime.labels import LABELS, NUM_LABELS


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Step-wise average precision of one label (NaN without positives)."""
    y = np.asarray(truth, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs) != 0) + 1]
    stops = np.r_[starts[1:], xs.size]
    avg = (starts + stops + 1) / 2.0  # mean of 1-based ranks start+1 .. stop
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, stops - starts)
    return ranks


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC of one label (NaN without positives or without negatives)."""
    y = np.asarray(truth, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def f1_counts(probs: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """tp/fp/fn and precision, recall, F1 per column at ``prob >= threshold`` ([T, C] inputs)."""
    pred = np.asarray(probs) >= np.asarray(thresholds)
    y = np.asarray(truth) > 0.5
    tp = np.sum(pred & y, axis=0)
    fp = np.sum(pred & ~y, axis=0)
    fn = np.sum(~pred & y, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


@dataclass
class FrameMetrics:
    """Per-label frame metrics ([17] arrays) and the thresholds they were taken at."""

    thresholds: np.ndarray
    support: np.ndarray
    frames: int
    ap: np.ndarray
    auc: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def macro(self) -> dict[str, float]:
        """Macro means: AP/AUC over labels where defined, F1/precision/recall over labels with support."""
        has = self.support > 0

        def mean(x: np.ndarray, mask: np.ndarray) -> float:
            x = x[mask & np.isfinite(x)]
            return float(x.mean()) if x.size else float("nan")

        return {
            "ap": mean(self.ap, has),
            "auc": mean(self.auc, has),
            "f1": mean(self.f1, has),
            "precision": mean(self.precision, has),
            "recall": mean(self.recall, has),
        }

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        return {
            "frames": self.frames,
            "macro": {k: num(v) for k, v in self.macro().items()},
            "per_label": {
                name: {
                    "support": int(self.support[c]),
                    "threshold": float(self.thresholds[c]),
                    "ap": num(self.ap[c]),
                    "auc": num(self.auc[c]),
                    "f1": num(self.f1[c]),
                    "precision": num(self.precision[c]),
                    "recall": num(self.recall[c]),
                }
                for c, name in enumerate(LABELS)
            },
        }


def frame_metrics(
    probs: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] | np.ndarray
) -> FrameMetrics:
    """All frame metrics of probabilities [T, 17] against 0/1 labels [T, 17]."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(truth) > 0.5
    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (NUM_LABELS,)).copy()
    counts = f1_counts(p, y, th)
    return FrameMetrics(
        thresholds=th,
        support=y.sum(axis=0),
        frames=int(p.shape[0]),
        ap=np.array([average_precision(p[:, c], y[:, c]) for c in range(NUM_LABELS)]),
        auc=np.array([roc_auc(p[:, c], y[:, c]) for c in range(NUM_LABELS)]),
        f1=counts["f1"],
        precision=counts["precision"],
        recall=counts["recall"],
    )
