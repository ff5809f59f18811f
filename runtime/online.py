"""Online post-processing: the toolkit's one post-processing, fed frame by frame or in chunks.

:class:`OnlinePostprocessor` takes a video's probabilities as they arrive (``push``) and returns
each event as soon as it is final; ``finish`` closes the stream. After ``finish`` the events are
exactly those of :func:`vce.runtime.postprocess.postprocess` on the whole video, which is this
class fed everything at once. Each step of ``postprocess`` becomes a stage that emits the prefix of
its output that no later input can change, and keeps only what it still needs:

1. thresholds: a frame's binary row is final when it arrives;
2. median filter of size ``m`` (window ``[i - m//2, i - m//2 + m - 1]``, scipy's 'reflect' edges):
   position ``i`` is final once position ``i + R`` has arrived, ``R = m - 1 - m//2 = (m - 1)//2``
   (the window's right half; the left edge is reflected from frames already seen; the right edge
   is reflected only when the stream ends). Kept: the last ``m - 1`` rows.
3. short runs (``min_run`` = ``r``): a 0 is final at once; a 1 once its run has reached ``r`` frames
   (kept) or ended shorter (removed): at most ``r - 1`` positions after it. Kept: the open run's
   rows (under ``r``) and, per label, the length of the run before them (capped at ``r``).
4. gaps (``max_gap`` = ``g``): a 1 is final at once; a 0 when its gap has closed (filled if at most
   ``g`` long and a 1 came before it) or grown past ``g`` (never filled): at most ``g`` positions
   after it. Kept: the open gap's rows (at most ``g``) and, per label, the zeros before them
   (capped at ``g + 1``, which also stands for "no 1 yet": leading zeros are never filled).
5. events: an event whose last position is ``b`` is final once position ``b + 1`` is final in
   step 4 (its label tuple, or that label, differs there), and its end is frame(``b + 1``) - 1.
   The last event ends at the last frame, when the stream ends.

These are each step's exact dependencies on later frames. Composed, they emit an event at the
first frame after which no later frame can change it in the usual cases (a label switching on or
off: the median needs its right half, a new run its ``min_run`` frames, a closing gap its
``max_gap`` frames), and never later than the bound below; they may wait longer than strictly
necessary only when an earlier step could have been decided from part of its window.

Delay bound. Each stage's output lags its input by at most its own lag, and the lags add up:
after ``n`` frames have arrived, step 4 is final up to position ``n - D`` (exclusive), with

    D = (median - 1)//2 + max(min_run - 1, 0) + max_gap          (positions)

so an event whose last position is ``b`` is emitted by the push that brings frame position
``b + 1 + D``. Its **delay** is counted in frames (positions in the stream, not frame numbers): the
number of frames that arrived after the event's last frame, up to and including the push that
emitted it. It is at most ``D + 1`` (:func:`delay_bound_frames`), or ``(D + 1) / fps`` seconds at
``fps`` frames/s (:func:`delay_bound_seconds`); the last event is emitted when the stream ends. The
grouping adds nothing: under ``tuple`` and ``label`` alike an event closes at the first position
after it whose step-4 row differs, and that row is final ``D`` positions after it arrives. The
bound is reached: a label that switches off and back on after exactly ``g`` frames, for a run that
turns out ``r - 1`` frames short, keeps the event open for ``D + 1`` frames (a test builds it).
Default post-processing (median 7, min_run 3, max_gap 5): ``D + 1 = 3 + 2 + 5 + 1 = 11`` frames.

Invariants: frame numbers strictly increase across all pushes; probabilities are finite [k, 17];
nothing is pushed after ``finish``. Emitted events are never changed or retracted. Memory holds
``O(m + r + g + chunk)`` rows, never the history. Each push is vectorised over its chunk (numpy run
bounds and cumulative sums); Python loops run per emitted event, not per frame or label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vce.runtime.errors import VCEError
from vce.runtime.labels import ANATOMY, LABELS, NUM_LABELS, PATHOLOGY
from vce.runtime.postprocess import (
    PAPER,
    Event,
    Grouping,
    PostprocessConfig,
    binarize,
    group_events,
    median_filter_binary,
    run_bounds,
    runs_to_binary,
    smooth_runs,
    thresholds_array,
    window_majority,
)

__all__ = [
    "OnlinePostprocessor",
    "delay_bound_frames",
    "delay_bound_seconds",
    "order_events",
    "settle_lag",
]


def settle_lag(config: PostprocessConfig = PAPER) -> int:
    """``D``: after ``n`` frames, the smoothed labels of positions below ``n - D`` are final."""
    return (config.median - 1) // 2 + max(config.min_run - 1, 0) + config.max_gap


def delay_bound_frames(config: PostprocessConfig = PAPER) -> int:
    """Most frames that arrive after an event's last frame before the event is emitted (``D + 1``)."""
    return settle_lag(config) + 1


def delay_bound_seconds(config: PostprocessConfig, fps: float) -> float:
    """:func:`delay_bound_frames` in seconds at ``fps`` frames per second."""
    if not fps > 0:
        raise VCEError(f"the frame rate must be positive, got {fps}")
    return delay_bound_frames(config) / fps


def order_events(events: Sequence[Event], grouping: Grouping) -> list[Event]:
    """Events in ``postprocess``'s order: as emitted for ``tuple``; by start, label, end for ``label``."""
    if grouping == "tuple":
        return list(events)
    return sorted(events, key=lambda e: (e["start"], e["label"][0], e["end"]))


_EMPTY = np.zeros((0, NUM_LABELS), dtype=bool)


class _Median:
    """Step 2: emits y[i] once x[i + R] has arrived; reflects the edges as ``median_filter_binary``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.left = size // 2
        self.right = size - 1 - self.left
        self.buf = _EMPTY  # x rows from position self.base
        self.base = 0
        self.n = 0  # x rows received
        self.done = 0  # y rows emitted

    def push(self, rows: np.ndarray, final: bool) -> np.ndarray:
        if self.size <= 1:
            return rows
        self.buf = np.concatenate([self.buf, rows]) if self.buf.size else rows
        self.n += rows.shape[0]
        if final:
            if self.n == self.done:
                y = _EMPTY
            elif self.base == 0:  # the whole video is still here: the offline filter itself
                y = median_filter_binary(self.buf, self.size)[self.done :]
            else:  # base == done - left: reflect the right edge (right <= rows held)
                y = window_majority(np.concatenate([self.buf, self.buf[::-1][: self.right]]), self.size)
            self.done, self.buf = self.n, _EMPTY
            return y
        stop = self.n - self.right
        if stop <= self.done:
            return _EMPTY
        if self.done < self.left:  # base == 0: reflect the left edge (n > right >= left - 1 rows held)
            padded, offset = np.concatenate([self.buf[: self.left][::-1], self.buf]), -self.left
        else:
            padded, offset = self.buf, self.base
        lo = self.done - self.left - offset
        y = window_majority(padded[lo : lo + stop - self.done + self.size - 1], self.size)
        self.done = stop
        keep_from = max(stop - self.left, 0)
        self.buf, self.base = self.buf[keep_from - self.base :], keep_from
        return y


class _Smooth:
    """Steps 3 and 4 in run form: one ``run_bounds`` and one ``runs_to_binary`` per push.

    Step 3 decides a 1 once its run has reached ``min_run`` or ended, step 4 a 0 once its gap has
    closed or grown past ``max_gap``; the rows from the first position step 4 has not decided stay
    pending, with two per-label carries: the 1s of the step-2 output just before them (capped at
    ``min_run``) and the 0s of the step-3 output just before them (capped at ``max_gap + 1``, which
    also stands for "no 1 yet").
    """

    def __init__(self, min_run: int, max_gap: int) -> None:
        self.r = min_run if min_run > 1 else 0
        self.g = max_gap
        self.pend = _EMPTY
        self.ones = np.zeros(NUM_LABELS, dtype=np.int64)
        self.gap = np.full(NUM_LABELS, max_gap + 1, dtype=np.int64)

    def push(self, rows: np.ndarray, final: bool) -> np.ndarray:
        if self.r == 0 and self.g == 0:
            return rows
        e = np.concatenate([self.pend, rows]) if self.pend.size else rows
        length = e.shape[0]
        if length == 0:
            return _EMPTY
        cols, starts, stops = (a.astype(np.int64) for a in run_bounds(e))
        # step 3: runs shorter than r are dropped; an open run under r is undecided
        zend = length
        if self.r:
            starts_eff = starts - np.where(starts == 0, self.ones[cols], 0)
            keep = stops - starts_eff >= self.r
            if not final:
                undecided = (stops == length) & ~keep
                if undecided.any():
                    zend = int(starts[undecided].min())
            keep &= starts < zend
            zc, zs, zt = cols[keep], starts[keep], np.minimum(stops[keep], zend)
        else:
            zc, zs, zt = cols, starts, stops
        # step 4: a virtual 1 ``gap`` zeros before the first row, for the labels whose carried gap
        # may still be filled, merges exactly when the whole gap (carried + new) is short enough
        ne = zend
        wc, ws, wt = zc, zs, zt
        if self.g:
            near = np.flatnonzero(self.gap <= self.g)
            if near.size:  # virtual runs first, so a stable sort by label puts them first there
                order = np.argsort(np.concatenate([near, zc]), kind="stable")
                wc = np.concatenate([near, zc])[order]
                ws = np.concatenate([-self.gap[near] - 1, zs])[order]
                wt = np.concatenate([-self.gap[near], zt])[order]
            wc, ws, wt = smooth_runs((wc, ws, wt), 0, self.g)
            if not final:
                last_stop = _last_per_label(wc, wt, -self.gap)
                tail = zend - last_stop
                open_gap = (tail > 0) & (tail <= self.g)
                if open_gap.any():
                    ne = int(np.maximum(last_stop[open_gap], 0).min())
        if ne == 0:
            self.pend = e
            return _EMPTY
        real = (wt > 0) & (ws < ne)
        w = runs_to_binary((wc[real], np.maximum(ws[real], 0), np.minimum(wt[real], ne)), ne, NUM_LABELS)
        if not final:
            if self.r:
                across = (starts < ne) & (stops >= ne)  # the step-2 run holding position ne - 1
                self.ones = np.zeros(NUM_LABELS, dtype=np.int64)
                self.ones[cols[across]] = np.minimum(ne - starts_eff[across], self.r)
            if self.g:
                before = zs < ne
                last_one = _last_per_label(zc[before], zt[before], np.full(NUM_LABELS, -1))
                gap = np.where(last_one < 0, self.gap + ne, ne - np.minimum(last_one, ne))
                self.gap = np.minimum(gap, self.g + 1)
            self.pend = e[ne:]
        return w


def _last_per_label(cols: np.ndarray, values: np.ndarray, default: np.ndarray) -> np.ndarray:
    """``values`` of each label's last run (runs ordered by label), ``default`` for labels without."""
    out = np.array(default, dtype=np.int64)
    if cols.size:
        is_last = np.ones(cols.size, dtype=bool)
        np.not_equal(cols[1:], cols[:-1], out=is_last[:-1])
        out[cols[is_last]] = values[is_last]
    return out


class _Grouping:
    """Step 5 with ``group_events`` on each final chunk, the row before it carried as context."""

    def __init__(self, grouping: Grouping, labels: Sequence[str]) -> None:
        self.grouping = grouping
        self.labels = tuple(labels)
        self.prev_row: np.ndarray | None = None
        self.prev_frame = 0
        self.open_start = 0  # tuple: start frame of the open event
        self.open_label_start: dict[str, int] = {}  # label: start frame of each open run

    def push(self, rows: np.ndarray, frames: np.ndarray, final: bool) -> list[Event]:
        if rows.shape[0] == 0 and not final:
            return []
        if self.prev_row is not None:
            rows = np.concatenate([self.prev_row[None], rows])
            frames = np.concatenate([[self.prev_frame], frames])
        if rows.shape[0] == 0:
            return []
        events = group_events(rows, frames, self.grouping, self.labels)
        continued = self.prev_row is not None
        self.prev_row, self.prev_frame = rows[-1], int(frames[-1])
        last_frame = int(frames[-1])
        if self.grouping == "tuple":
            if continued:
                events[0]["start"] = self.open_start
            if final:
                return events
            self.open_start = events[-1]["start"]
            return events[:-1]
        out: list[Event] = []
        for ev in events:
            name = ev["label"][0]
            if continued and ev["start"] == int(frames[0]):
                ev["start"] = self.open_label_start.pop(name)
            if final or ev["end"] != last_frame:
                out.append(ev)
            else:
                self.open_label_start[name] = ev["start"]
        return order_events(out, "label") if continued else out


class OnlinePostprocessor:
    """Post-processing of one video fed in order; each event is returned once it is final.

    ``push(frames, probs)`` with frame numbers [k] (strictly increasing, also across pushes) and
    probabilities [k, 17] returns the events that became final; ``finish()`` returns the rest.
    The concatenation of all returned events, put in order by :func:`order_events`, equals
    ``postprocess`` on the whole video. See the module docstring for the delay bound.
    """

    def __init__(
        self,
        thresholds: float | Sequence[float] | dict[str, float] | np.ndarray,
        config: PostprocessConfig = PAPER,
    ) -> None:
        self.config = config
        self.thresholds = thresholds_array(thresholds)
        self._median = _Median(config.median)
        self._smooth = _Smooth(config.min_run, config.max_gap)
        self._group = _Grouping(config.grouping, LABELS)
        self._frames = np.zeros(0, dtype=np.int64)  # frame numbers of positions settled .. seen-1
        self._last_row: np.ndarray | None = None
        self._last_settled_frame: int | None = None
        self.frames_seen = 0
        self.frames_settled = 0
        self.last_frame: int | None = None  # the newest frame number pushed
        self.finished = False

    @property
    def delay_bound(self) -> int:
        """:func:`delay_bound_frames` of this configuration."""
        return delay_bound_frames(self.config)

    @property
    def last_settled_frame(self) -> int | None:
        """Frame number of the newest position whose smoothed labels are final."""
        return self._last_settled_frame

    def settled_labels(self) -> list[str]:
        """Labels active (after smoothing) at the newest settled position; [] before any."""
        if self._last_row is None:
            return []
        return [LABELS[j] for j in np.flatnonzero(self._last_row)]

    def current_region(self) -> list[str]:
        """Anatomy labels (regions and landmarks) at the newest settled position."""
        return [name for name in self.settled_labels() if name in ANATOMY]

    def current_pathologies(self) -> list[str]:
        """Pathology labels at the newest settled position."""
        return [name for name in self.settled_labels() if name in PATHOLOGY]

    def push(
        self, frames: Sequence[int] | np.ndarray, probs: np.ndarray, *, final: bool = False
    ) -> list[Event]:
        """Feed the next frames; returns the events that are now final (all of them if ``final``)."""
        if self.finished:
            raise VCEError("this video's post-processing has finished; start a new one for more frames")
        fr = np.asarray(frames, dtype=np.int64).reshape(-1)
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != NUM_LABELS:
            raise VCEError(f"expected probabilities of shape [frames, {NUM_LABELS}], got {p.shape}")
        if p.shape[0] != fr.shape[0]:
            raise VCEError(f"{p.shape[0]} probability rows do not match {fr.shape[0]} frame numbers")
        if not np.all(np.isfinite(p)):
            bad = int(np.count_nonzero(~np.isfinite(p).all(axis=1)))
            raise VCEError(f"{bad} frame(s) have NaN or infinite probabilities; the model output is broken")
        if fr.size and (
            np.any(np.diff(fr) <= 0) or (self.last_frame is not None and fr[0] <= self.last_frame)
        ):
            raise VCEError("frame numbers must be strictly increasing within a video")
        if fr.size:
            self.last_frame = int(fr[-1])
            self._frames = np.concatenate([self._frames, fr])
        self.frames_seen += fr.size
        y = self._median.push(binarize(p, self.thresholds), final)
        w = self._smooth.push(y, final)
        k = w.shape[0]
        settled_frames, self._frames = self._frames[:k], self._frames[k:]
        if k:
            self._last_row = w[-1]
            self._last_settled_frame = int(settled_frames[-1])
            self.frames_settled += k
        events = self._group.push(w, settled_frames, final)
        if final:
            self.finished = True
        return events

    def finish(self) -> list[Event]:
        """The stream has ended: the remaining events (the last one ends at the last frame)."""
        return self.push(np.zeros(0, np.int64), np.zeros((0, NUM_LABELS)), final=True)


#: frames per push when a whole video is post-processed at once
OFFLINE_CHUNK = 8192


def postprocess_all(
    probs: np.ndarray,
    frames: Sequence[int] | np.ndarray,
    thresholds: float | Sequence[float] | dict[str, float] | np.ndarray,
    config: PostprocessConfig = PAPER,
) -> list[Event]:
    """A whole video (what ``postprocess.postprocess`` calls), pushed ``OFFLINE_CHUNK`` frames at a
    time: the same events as one push (the online property), with working memory bounded by the
    chunk rather than the video (one push of 100,000 frames held ~30 MB of intermediates)."""
    post = OnlinePostprocessor(thresholds, config)
    frames = np.asarray(frames)
    n = len(probs)
    events: list[Event] = []
    for a in range(0, n, OFFLINE_CHUNK):
        b = min(n, a + OFFLINE_CHUNK)
        events += post.push(frames[a:b], probs[a:b], final=b == n)
    if n == 0:
        events += post.push(frames, probs, final=True)
    return order_events(events, config.grouping)
