"""Per-video timeline plot: each label's probability, its threshold, the final events, missing frames.

matplotlib is optional (extra ``plots``) and imported lazily; the Agg canvas is used directly (no
pyplot, no global backend switch). Long videos are reduced to at most ``max_points`` columns per
label (the maximum of each bin, so short peaks stay visible). The x-axis is the frame number and,
when the frame rate is known, also the examination time (h:mm:ss, on top). Each row has a 0-1
probability scale. Frames that could not be decoded are shaded grey across every row.

File names: :func:`timeline_names` gives every video of a run its own file, whatever the names
(``a,b``, ``a_b`` and ``a b`` never share one, nor ``A`` and ``a`` on a case-insensitive disk).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vce.runtime.atomic import atomic_path
from vce.runtime.labels import LABELS
from vce.runtime.lazy import require
from vce.runtime.postprocess import Event

SUFFIX = "_timeline.png"
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def timeline_names(videos: Iterable[str]) -> dict[str, str]:
    """{video: file name}: ``<video>_timeline.png`` for a plain name (letters, digits, ``._-``),
    else ``<slug>-<sha256 of the name, 8 hex>_timeline.png``; a name that would still collide with
    another (ignoring case) gets a longer hash."""
    ids = sorted(set(videos))

    def digest(v: str, n: int) -> str:
        return hashlib.sha256(v.encode("utf-8", "surrogatepass")).hexdigest()[:n]

    def slug(v: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", v).strip("._")[:80] or "video"

    names = {v: (v if _PLAIN.fullmatch(v) else f"{slug(v)}-{digest(v, 8)}") for v in ids}
    taken: dict[str, list[str]] = {}
    for v, n in names.items():
        taken.setdefault(n.casefold(), []).append(v)
    for group in taken.values():
        if len(group) > 1:
            for v in group:
                names[v] = f"{slug(v)}-{digest(v, 32)}"
    seen: set[str] = set()
    for v in ids:  # names crafted to meet the hashed ones: a counter settles it
        name, k = names[v], 1
        while name.casefold() in seen:
            name, k = f"{names[v]}-{k}", k + 1
        seen.add(name.casefold())
        names[v] = name
    return {v: n + SUFFIX for v, n in names.items()}


def _reduce(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= max_points:
        return x, y
    edges = np.linspace(0, len(x), max_points + 1).astype(np.int64)
    return x[edges[:-1]], np.maximum.reduceat(y, edges[:-1], axis=0)


def _spans(frames: np.ndarray) -> list[tuple[int, int]]:
    """Sorted frame numbers -> runs of consecutive numbers as (first, last)."""
    if frames.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1)
    starts = np.r_[frames[0], frames[breaks + 1]]
    ends = np.r_[frames[breaks], frames[-1]]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


#: tick steps of the time axis, in seconds
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def clock(seconds: float, *, with_seconds: bool = True) -> str:
    """Examination time as h:mm:ss (or h:mm)."""
    s = max(round(float(seconds)), 0)
    hm = f"{s // 3600}:{s // 60 % 60:02d}"
    return f"{hm}:{s % 60:02d}" if with_seconds else hm


def time_ticks(duration: float, most: int = 10) -> tuple[np.ndarray, bool]:
    """Round tick positions (seconds) for a time axis of ``duration`` seconds, and whether the
    labels need seconds (steps under a minute)."""
    step = next((t for t in TIME_STEPS if duration / t <= most), TIME_STEPS[-1])
    return np.arange(0.0, duration + 1e-9, step), step < 60


def preload() -> threading.Thread | None:
    """Import matplotlib in a background thread (about 0.7 s), so that a run's first plot does not
    wait for it; None if matplotlib is not installed (the plot step then says so)."""
    if importlib.util.find_spec("matplotlib") is None:
        return None

    def _import() -> None:
        with contextlib.suppress(Exception):  # a broken install is reported by the plot step itself
            importlib.import_module("matplotlib.backends.backend_agg")
            importlib.import_module("matplotlib.figure")
            importlib.import_module("matplotlib.ticker")

    thread = threading.Thread(target=_import, name="vce-matplotlib-import", daemon=True)
    thread.start()
    return thread


def timeline_figure(
    video: str,
    frames: np.ndarray,
    probs: np.ndarray,
    events: Sequence[Event],
    thresholds: np.ndarray,
    *,
    missing: np.ndarray | None = None,
    fps: float | None = None,
    max_points: int = 4000,
) -> Any:
    """The timeline as a matplotlib Figure: one row per label over the frame number.

    ``missing``: frame numbers without probabilities (shaded grey); ``fps``: frames per second,
    for the time axis.
    """
    require("matplotlib", "timeline plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fr = np.asarray(frames, dtype=np.int64)
    gone = np.unique(np.asarray(missing if missing is not None else [], dtype=np.int64))
    p = np.asarray(probs, dtype=np.float32)
    xs, ys = _reduce(fr, p, max_points)
    n = len(LABELS)
    fig = Figure(figsize=(14, 0.55 * n + 1.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True)
    spans: dict[str, list[tuple[int, int]]] = {name: [] for name in LABELS}
    for ev in events:
        for name in ev["label"]:
            spans[name].append((int(ev["start"]), int(ev["end"])))
    every = np.concatenate([fr, gone])
    lo, hi = (int(every.min()), int(every.max())) if every.size else (0, 1)
    holes = _spans(gone)
    for i, (ax, name) in enumerate(zip(axes, LABELS, strict=True)):
        for a, b in holes:
            ax.axvspan(a, b + 1, color="0.55", alpha=0.5, linewidth=0)
        for a, b in spans[name]:
            ax.axvspan(a, b + 1, color="tab:orange", alpha=0.35, linewidth=0)
        ax.plot(xs, ys[:, i], color="tab:blue", linewidth=0.7, drawstyle="steps-post")
        ax.axhline(float(thresholds[i]), color="tab:red", linewidth=0.6, linestyle="--")
        ax.set_ylim(0, 1)
        ax.set_xlim(lo, max(hi + 1, lo + 1))
        ax.set_yticks([0, 0.5, 1])
        ax.yaxis.tick_right()
        ax.tick_params(axis="y", labelsize=6, length=2, pad=1)
        ax.set_yticklabels(["0", "", "1"])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    axes[-1].set_xlabel("frame")
    if fps:
        top = axes[0].secondary_xaxis("top", functions=(lambda f: f / fps, lambda t: t * fps))
        ticks, seconds = time_ticks(max(hi + 1, lo + 1) / fps)
        top.set_xticks(ticks[ticks >= lo / fps])
        top.xaxis.set_major_formatter(FuncFormatter(lambda t, _pos: clock(t, with_seconds=seconds)))
        top.tick_params(labelsize=7)
        unit = "h:mm:ss" if seconds else "h:mm"
        top.set_xlabel(f"examination time ({unit} at {fps:g} frames/s)", fontsize=8)
    what = "probability 0-1 (blue), threshold (red), events (orange)"
    if gone.size:
        what += f", {gone.size} frame(s) that could not be decoded (grey)"
    fig.suptitle(f"{video}: {what}", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.975, top=0.92 if fps else 0.95, bottom=0.05, hspace=0.15)
    return fig


def plot_timeline(
    path: str | os.PathLike[str],
    video: str,
    frames: np.ndarray,
    probs: np.ndarray,
    events: Sequence[Event],
    thresholds: np.ndarray,
    **options: Any,
) -> Path:
    """Write :func:`timeline_figure` to ``path`` (PNG, atomically)."""
    fig = timeline_figure(video, frames, probs, events, thresholds, **options)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
