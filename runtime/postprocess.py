"""The toolkit's one post-processing: thresholds, temporal smoothing, events.

The paper's order, on the frames of one video in index order (positions, not frame numbers):

1. ``binary = prob >= threshold`` per class;
2. per-class median filter of the binary series (``scipy.ndimage.median_filter`` semantics, mode
   'reflect': the edge sample is repeated), then ``> 0.5``;
3. runs of 1s shorter than ``min_run`` are dropped (a run touching either end too);
4. gaps of at most ``max_gap`` zeros between two runs of 1s are filled (gaps before the first run
   and after the last are never filled);
5. events: ``tuple`` grouping (the challenge's ``make_json.py``: a new event whenever the sorted
   tuple of active labels changes, the empty tuple included) or ``label`` grouping (one event per
   run of each label). An event ends at the next event's first frame minus one; the last at the
   last frame.

The steps below are the building blocks; :func:`postprocess` runs them through the online
processor (``vce.runtime.online``), fed the whole video at once, so live and offline runs share one
code path. The calibration search uses the run-form steps directly, for speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS, NUM_LABELS


class Grouping(StrEnum):
    """How runs become events (step 5 above): ``tuple`` as the challenge, ``label`` one per label."""

    TUPLE = "tuple"
    LABEL = "label"


Event = dict[str, Any]  # {"start": int, "end": int, "label": list[str]}


#: largest median / min_run / max_gap (frames; about 28 minutes at 6 frames/s): beyond it a window
#: smooths away every event, and memory and the live delay grow with it
MAX_WINDOW = 10_000


@dataclass(frozen=True)
class PostprocessConfig:
    """Smoothing and grouping parameters (the paper's values are the defaults)."""

    median: int = 7
    min_run: int = 3
    max_gap: int = 5
    grouping: Grouping = "tuple"

    def __post_init__(self) -> None:
        for name, low in (("median", 1), ("min_run", 0), ("max_gap", 0)):
            value = getattr(self, name)
            what = f"post-processing {name} (--{name.replace('_', '-')})"
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise VCEError(f"{what} must be a whole number of frames, got {value!r}")
            if not low <= value <= MAX_WINDOW:
                raise VCEError(
                    f"{what} must be between {low} and {MAX_WINDOW} frames, got {value}; "
                    f"it is a window in frames (the paper's is {getattr(PostprocessConfig, name)})"
                )
            object.__setattr__(self, name, int(value))
        if self.grouping not in tuple(Grouping):
            raise VCEError(f"grouping must be 'tuple' or 'label', got {self.grouping!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostprocessConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


PAPER = PostprocessConfig()

#: The paper's submitted thresholds, in LABELS order.
PAPER_THRESHOLDS: dict[str, float] = {
    "mouth": 0.27, "esophagus": 0.55, "stomach": 0.69, "small intestine": 0.77, "colon": 0.43,
    "z-line": 0.20, "pylorus": 0.49, "ileocecal valve": 0.51, "active bleeding": 0.13,
    "angiectasia": 0.83, "blood": 0.83, "erosion": 0.57, "erythema": 0.19, "hematin": 0.07,
    "lymphangioectasis": 0.25, "polyp": 0.15, "ulcer": 0.50,
}  # fmt: skip


def thresholds_array(thresholds: float | Sequence[float] | dict[str, float] | np.ndarray) -> np.ndarray:
    """A scalar, a sequence in LABELS order, or {label: value} -> float array [17]."""
    if isinstance(thresholds, dict):
        unknown = sorted(set(thresholds) - set(LABELS))
        if unknown:
            raise VCEError(f"unknown labels in thresholds: {unknown}; use the 17 RARE-VISION labels")
        missing = [name for name in LABELS if name not in thresholds]
        if missing:
            raise VCEError(f"thresholds are missing labels: {missing}")
        arr = np.array([float(thresholds[name]) for name in LABELS])
    else:
        arr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (NUM_LABELS,)).copy()
    if not np.all(np.isfinite(arr)):
        raise VCEError("thresholds must be finite numbers")
    return arr


def binarize(probs: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """``probs >= thresholds`` per class: [T, C] float -> [T, C] bool."""
    return np.asarray(probs) >= np.asarray(thresholds)


def run_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run of True in each column of ``mask`` [T, C] as (cols, starts, stops), stop exclusive.

    Runs are ordered by column, then by position.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 1:
        mask = mask[:, None]
    t, c = mask.shape
    padded = np.zeros((c, t + 2), dtype=np.int8)
    padded[:, 1:-1] = mask.T
    diff = np.diff(padded, axis=1)  # [C, T+1]
    cols, starts = np.nonzero(diff == 1)
    _, stops = np.nonzero(diff == -1)
    return cols, starts, stops


def window_majority(padded: np.ndarray, size: int) -> np.ndarray:
    """Per column, whether each run of ``size`` consecutive rows of a 0/1 array holds at least
    ``size - size//2`` ones (the sorted window's element ``size//2`` is 1): [L, C] -> [L - size + 1, C]."""
    x = np.asarray(padded, dtype=bool)
    flat = x.reshape(x.shape[0], -1).T  # columns as contiguous rows: the cumulative sum runs along them
    csum = np.zeros((flat.shape[0], flat.shape[1] + 1), dtype=np.int32)
    np.cumsum(flat, axis=1, dtype=np.int32, out=csum[:, 1:])
    out = csum[:, size:] - csum[:, :-size] >= size - size // 2
    return out.T.reshape(out.shape[1], *x.shape[1:])


def median_filter_binary(binary: np.ndarray, size: int) -> np.ndarray:
    """Per-column median filter of a 0/1 series, as ``scipy.ndimage.median_filter(x, size)`` > 0.5.

    scipy's window for position i is ``[i - size//2, i - size//2 + size - 1]`` with mode 'reflect'
    (``d c b a | a b c d | d c b a``), and the result is the sorted window's element ``size//2``.
    For 0/1 input that element is 1 exactly when the window holds at least ``size - size//2`` ones.
    """
    x = np.asarray(binary, dtype=bool)
    if size <= 1 or x.shape[0] == 0:
        return x.copy()
    left = size // 2
    right = size - 1 - left
    # np.pad's 'symmetric' is scipy's 'reflect' (the edge sample repeated), repeated as needed
    return window_majority(np.pad(x, [(left, right)] + [(0, 0)] * (x.ndim - 1), mode="symmetric"), size)


Runs = tuple[
    np.ndarray, np.ndarray, np.ndarray
]  # (cols, starts, stops): stop exclusive, by column then start


def smooth_runs(runs: Runs, min_run: int, max_gap: int) -> Runs:
    """Steps 3-4 on runs: drop runs shorter than ``min_run``, then merge runs of a column separated
    by at most ``max_gap`` zeros (a gap between two runs is always interior, so leading and trailing
    zeros are never filled). This run form is the implementation; the frame-level functions below
    and the calibration search both use it.
    """
    cols, starts, stops = (np.asarray(a, dtype=np.int64) for a in runs)
    if min_run > 1:
        keep = stops - starts >= min_run
        cols, starts, stops = cols[keep], starts[keep], stops[keep]
    if max_gap > 0 and cols.size > 1:
        new = np.ones(cols.size, dtype=bool)
        new[1:] = (cols[1:] != cols[:-1]) | (starts[1:] - stops[:-1] > max_gap)
        first = np.flatnonzero(new)
        last = np.r_[first[1:] - 1, cols.size - 1]
        cols, starts, stops = cols[first], starts[first], stops[last]
    return cols, starts, stops


def runs_to_binary(runs: Runs, length: int, n_cols: int) -> np.ndarray:
    """Runs -> a [length, n_cols] bool matrix (runs of a column disjoint, as ``run_bounds`` and
    ``smooth_runs`` give them)."""
    cols, starts, stops = runs
    # per column (contiguous rows of the transposed matrix): +1 where a run starts, -1 where it stops
    up = np.zeros((n_cols, length + 1), dtype=np.int8)
    up[cols, starts] = 1
    down = np.zeros((n_cols, length + 1), dtype=np.int8)
    down[cols, stops] = 1
    up -= down
    return np.cumsum(up[:, :-1], axis=1, dtype=np.int8).T > 0


def split_at_changes(runs: Runs) -> Runs:
    """Each column's segments under ``tuple`` grouping: every run cut wherever any column's run starts
    or stops (the tuple of active labels changes there). ``group_events(..., "tuple")`` gives exactly
    these segments for each label; the calibration search scores them without building events.
    """
    cols, starts, stops = runs
    if cols.size == 0:
        return runs
    mark = np.zeros(int(stops.max()) + 1, dtype=bool)
    mark[starts] = True
    mark[stops] = True
    cuts = np.flatnonzero(mark)
    lo = np.searchsorted(cuts, starts, side="right")
    hi = np.searchsorted(cuts, stops, side="left")
    pieces = hi - lo + 1
    if np.all(pieces == 1):
        return runs
    run = np.repeat(np.arange(cols.size), pieces)
    k = np.arange(run.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    idx = lo[run] + k
    last = len(cuts) - 1
    new_starts = np.where(k == 0, starts[run], cuts[np.clip(idx - 1, 0, last)])
    new_stops = np.where(k == pieces[run] - 1, stops[run], cuts[np.clip(idx, 0, last)])
    return cols[run], new_starts, new_stops


def _via_runs(binary: np.ndarray, min_run: int, max_gap: int) -> np.ndarray:
    x = np.asarray(binary, dtype=bool)
    flat = x if x.ndim == 2 else x[:, None]
    out = runs_to_binary(smooth_runs(run_bounds(flat), min_run, max_gap), flat.shape[0], flat.shape[1])
    return out if x.ndim == 2 else out[:, 0]


def remove_short_runs(binary: np.ndarray, min_run: int) -> np.ndarray:
    """Set runs of 1s shorter than ``min_run`` to 0 (runs touching the ends included)."""
    return _via_runs(binary, min_run, 0)


def fill_gaps(binary: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill runs of at most ``max_gap`` 0s that have 1s on both sides (never the leading/trailing 0s)."""
    return _via_runs(binary, 0, max_gap)


def smooth(binary: np.ndarray, config: PostprocessConfig = PAPER) -> np.ndarray:
    """Steps 2-4: median filter, short-run removal, gap filling. [T, C] bool -> [T, C] bool."""
    return _via_runs(median_filter_binary(binary, config.median), config.min_run, config.max_gap)


def segment_ends(frames: np.ndarray) -> np.ndarray:
    """Inclusive end frame of a segment whose last position is i: the next frame minus one, or the
    last frame (as ``make_json.py`` closes events)."""
    fr = np.asarray(frames, dtype=np.int64)
    ends = np.empty_like(fr)
    if fr.size:
        ends[:-1] = fr[1:] - 1
        ends[-1] = fr[-1]
    return ends


def group_events(
    binary: np.ndarray,
    frames: Sequence[int] | np.ndarray,
    grouping: Grouping = "tuple",
    labels: Sequence[str] = LABELS,
) -> list[Event]:
    """Turn a smoothed [T, C] 0/1 matrix into RARE-VISION events over frame numbers ``frames``.

    ``tuple``: one event per change of the sorted tuple of active labels, the empty tuple included
    (as the challenge's ``make_json.py`` builds ground truth). ``label``: one event per run of each
    label, ordered by start frame then label. Ends are inclusive frame numbers.
    """
    x = np.asarray(binary, dtype=bool)
    fr = np.asarray(frames, dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != fr.shape[0] or x.shape[1] != len(labels):
        raise VCEError(f"binary matrix {x.shape} does not match {fr.shape[0]} frames x {len(labels)} labels")
    t = x.shape[0]
    if t == 0:
        return []
    if t > 1 and np.any(np.diff(fr) <= 0):
        raise VCEError("frame numbers must be strictly increasing within a video")
    order = np.argsort(np.asarray(labels))  # columns in sorted-label order
    sorted_names = [labels[i] for i in order]
    ends = segment_ends(fr)
    events: list[Event] = []
    if grouping == "tuple":
        xs = x[:, order]
        change = np.ones(t, dtype=bool)
        change[1:] = np.any(xs[1:] != xs[:-1], axis=1)
        starts = np.flatnonzero(change)
        stops = np.append(starts[1:], t)
        for a, b in zip(starts, stops, strict=True):
            active = [sorted_names[j] for j in np.flatnonzero(xs[a])]
            events.append({"start": int(fr[a]), "end": int(ends[b - 1]), "label": active})
        return events
    if grouping == "label":
        cols, starts, stops = run_bounds(x)
        rows = sorted(zip(starts, [labels[c] for c in cols], stops, strict=True))
        return [{"start": int(fr[a]), "end": int(ends[b - 1]), "label": [name]} for a, name, b in rows]
    raise VCEError(f"grouping must be 'tuple' or 'label', got {grouping!r}")


def postprocess(
    probs: np.ndarray,
    frames: Sequence[int] | np.ndarray,
    thresholds: float | Sequence[float] | dict[str, float] | np.ndarray,
    config: PostprocessConfig = PAPER,
) -> list[Event]:
    """Probabilities [T, 17] of one video (frames in index order) -> its events.

    This is the online post-processor (``vce.runtime.online``) fed the whole video at once, so live
    and offline runs share one code path.
    """
    from vce.runtime.online import postprocess_all  # online.py builds on the steps above

    return postprocess_all(probs, frames, thresholds, config)
