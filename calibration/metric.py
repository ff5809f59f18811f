"""The RARE-VISION temporal mAP, with the official evaluator's exact semantics (RareEval).

- tIoU of inclusive segments: ``inter = max(0, min(end) - max(start) + 1)``,
  ``union = len_a + len_b - inter`` with ``len = end - start + 1``.
- Per (video, label): the label's segments are the events whose ``label`` list contains it, in file
  order, for predictions and ground truth alike. Each prediction, in file order, is a hit when some
  not-yet-matched ground-truth segment reaches the tIoU threshold; it takes the first such one (in
  ground-truth file order). ``AP = sum_i precision_i * (recall_i - recall_{i-1})``.
- No ground truth for a label: AP = 1.0 when nothing is predicted for it, else 0.0. Ground truth but
  no prediction: AP = 0.0.
- A video's mAP is the mean over the 17 labels; the score is the mean over videos.
- Sanity checks: the prediction's video ids equal the ground truth's; every predicted label is one
  of the 17.
- As in RareEval, a ground-truth video none of whose events carries a label is not scored at all
  (it never enters the evaluator's per-video table); labels outside the 17 in the ground truth are
  ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vce.runtime.errors import VCEError
from vce.runtime.formats.eventjson import read_events_json
from vce.runtime.labels import LABEL_INDEX, LABELS, NUM_LABELS
from vce.runtime.postprocess import Event

#: the official tIoU thresholds
TIOUS: tuple[float, ...] = (0.5, 0.95)
_CHUNK = 1 << 22  # elements of one dense tIoU block


def tiou(a_start: Any, a_end: Any, b_start: Any, b_end: Any) -> np.ndarray:
    """tIoU of inclusive segments (broadcasting); 0.0 where the union is empty."""
    a_s, a_e = np.asarray(a_start, dtype=np.int64), np.asarray(a_end, dtype=np.int64)
    b_s, b_e = np.asarray(b_start, dtype=np.int64), np.asarray(b_end, dtype=np.int64)
    inter = np.maximum(0, np.minimum(a_e, b_e) - np.maximum(a_s, b_s) + 1)
    union = (a_e - a_s + 1) + (b_e - b_s + 1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out


def as_segments(segments: Iterable[Any] | np.ndarray) -> np.ndarray:
    """Segments as an int64 array [N, 2] of inclusive (start, end), in the order given."""
    if isinstance(segments, np.ndarray):
        arr = segments.astype(np.int64, copy=False)
    else:
        rows = [(s["start"], s["end"]) if isinstance(s, Mapping) else tuple(s) for s in segments]
        arr = np.array(rows, dtype=np.int64)
    return arr.reshape(-1, 2)


def greedy_hits(pred_idx: np.ndarray, gt_idx: np.ndarray, n_pred: int) -> np.ndarray:
    """Official greedy matching from candidate pairs (every pair's tIoU reaches the threshold).

    Pairs must be ordered by prediction, then ground truth (file orders). Each prediction takes its
    first candidate not matched yet. Returns hits, bool [n_pred].
    """
    hits = np.zeros(n_pred, dtype=bool)
    if pred_idx.size == 0:
        return hits
    steps = np.diff(gt_idx)
    if np.all(steps > 0) or np.unique(gt_idx).size == gt_idx.size:  # no ground truth wanted twice
        hits[pred_idx] = True
        return hits
    matched: set[int] = set()
    for p, g in zip(pred_idx.tolist(), gt_idx.tolist(), strict=True):
        if not hits[p] and g not in matched:
            matched.add(g)
            hits[p] = True
    return hits


def ap_from_hits(hits: np.ndarray, n_gt: int) -> float:
    """``sum_i precision_i * (recall_i - recall_{i-1})`` over predictions in order (n_gt > 0)."""
    if hits.size == 0:
        return 0.0
    cum = np.cumsum(hits)
    precision = cum / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / n_gt)


def candidate_pairs(gt: np.ndarray, pred: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """All (prediction, ground truth) index pairs with tIoU >= thr, ordered by prediction then gt."""
    n_gt = gt.shape[0]
    rows = max(1, _CHUNK // max(n_gt, 1))
    pis, gjs = [], []
    for lo in range(0, pred.shape[0], rows):
        block = pred[lo : lo + rows]
        ok = tiou(block[:, :1], block[:, 1:], gt[None, :, 0], gt[None, :, 1]) >= thr
        pi, gj = np.nonzero(ok)
        pis.append(pi + lo)
        gjs.append(gj)
    if not pis:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pis), np.concatenate(gjs)


def average_precision(gt: Iterable[Any] | np.ndarray, pred: Iterable[Any] | np.ndarray, thr: float) -> float:
    """AP of one (video, label): segments as [N, 2] arrays or event dicts, in file order."""
    g, p = as_segments(gt), as_segments(pred)
    if g.shape[0] == 0:
        return 0.0 if p.shape[0] else 1.0
    if p.shape[0] == 0:
        return 0.0
    pi, gj = candidate_pairs(g, p, thr)
    return ap_from_hits(greedy_hits(pi, gj, p.shape[0]), g.shape[0])


def label_segments(events: Sequence[Event]) -> dict[str, np.ndarray]:
    """{label: segments [N, 2] in file order} for the 17 labels (other labels are ignored)."""
    per: dict[str, list[tuple[int, int]]] = {name: [] for name in LABELS}
    for ev in events:
        for name in ev["label"]:
            if name in per:
                per[name].append((int(ev["start"]), int(ev["end"])))
    return {name: as_segments(np.array(v, dtype=np.int64)) for name, v in per.items()}


def sanity_check(pred: Mapping[str, Sequence[Event]], gt: Mapping[str, Sequence[Event]]) -> None:
    """The official checks, as one clear VCEError: same video ids, only the 17 labels predicted."""
    gt_ids, pr_ids = set(gt), set(pred)
    if gt_ids != pr_ids:
        missing, extra = sorted(gt_ids - pr_ids), sorted(pr_ids - gt_ids)
        msg = "video ids differ from the ground truth's."
        if missing:
            msg += f" Missing in the prediction: {missing[:10]}{' ...' if len(missing) > 10 else ''}."
        if extra:
            msg += f" Not in the ground truth: {extra[:10]}{' ...' if len(extra) > 10 else ''}."
        raise VCEError(msg + " Predict every ground-truth video, and nothing else.")
    allowed = set(LABELS)
    for vid in sorted(pred):
        for j, ev in enumerate(pred[vid]):
            bad = [name for name in ev["label"] if name not in allowed]
            if bad:
                raise VCEError(
                    f"video {vid} event {j}: invalid label(s) {bad}; only the 17 RARE-VISION labels "
                    f"are allowed (lower case, exact spelling: {', '.join(LABELS)})"
                )


def scored_videos(gt: Mapping[str, Sequence[Event]]) -> list[str]:
    """Ground-truth videos the official evaluator scores: those with at least one labelled event."""
    return sorted(vid for vid, events in gt.items() if any(len(ev["label"]) for ev in events))


@dataclass
class TemporalMAP:
    """Per (video, label, tIoU) APs and their means."""

    videos: list[str]
    tious: tuple[float, ...]
    ap: np.ndarray  # [videos, 17, tious]
    unscored: list[str]

    def key(self, thr: float) -> str:
        return f"mAP@{thr:g}"

    @property
    def per_video(self) -> dict[str, dict[str, float]]:
        means = self.ap.mean(axis=1)
        return {
            v: {self.key(t): float(means[i, k]) for k, t in enumerate(self.tious)}
            for i, v in enumerate(self.videos)
        }

    @property
    def per_label(self) -> dict[str, dict[str, float]]:
        if not self.videos:
            return {name: {self.key(t): 0.0 for t in self.tious} for name in LABELS}
        means = self.ap.mean(axis=0)
        return {
            name: {self.key(t): float(means[c, k]) for k, t in enumerate(self.tious)}
            for c, name in enumerate(LABELS)
        }

    @property
    def overall(self) -> dict[str, float]:
        """Mean over videos of each video's mean over the 17 labels (0.0 when nothing is scored)."""
        if not self.videos:
            return {self.key(t): 0.0 for t in self.tious}
        means = self.ap.mean(axis=1).mean(axis=0)
        return {self.key(t): float(means[k]) for k, t in enumerate(self.tious)}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.overall)
        out["per_video"] = self.per_video
        out["per_label"] = self.per_label
        if self.unscored:
            out["unscored_videos"] = self.unscored
        return out


def evaluate(
    pred: Mapping[str, Sequence[Event]],
    gt: Mapping[str, Sequence[Event]],
    tious: Sequence[float] = TIOUS,
    *,
    check: bool = True,
) -> TemporalMAP:
    """Temporal mAP of predicted events against ground-truth events ({video: events}, file order)."""
    if check:
        sanity_check(pred, gt)
    videos = scored_videos(gt)
    ap = np.zeros((len(videos), NUM_LABELS, len(tious)))
    for i, vid in enumerate(videos):
        g_seg = label_segments(gt[vid])
        p_seg = label_segments(pred.get(vid, []))
        for name in LABELS:
            for k, thr in enumerate(tious):
                ap[i, LABEL_INDEX[name], k] = average_precision(g_seg[name], p_seg[name], thr)
    unscored = sorted(set(gt) - set(videos))
    return TemporalMAP(videos, tuple(float(t) for t in tious), ap, unscored)


def score_files(
    pred_path: str | os.PathLike[str], gt_path: str | os.PathLike[str], tious: Sequence[float] = TIOUS
) -> TemporalMAP:
    """Read a prediction and a ground-truth JSON and score them (official checks first)."""
    gt = read_events_json(gt_path, check_labels=False)
    pred = read_events_json(pred_path, check_labels=False)
    try:
        sanity_check(pred, gt)
    except VCEError as exc:
        raise VCEError(f"{pred_path}: {exc}") from exc
    return evaluate(pred, gt, tious, check=False)
