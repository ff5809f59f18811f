"""Per-video timeline plot: each label's probability, its threshold and the final events.

matplotlib is optional (extra ``plots``) and imported lazily; the Agg canvas is used directly (no
pyplot, no global backend switch). Long videos are reduced to at most ``max_points`` columns per
label (the maximum of each bin, so short peaks stay visible).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vce.runtime.atomic import atomic_path
from vce.runtime.labels import LABELS
from vce.runtime.lazy import require
from vce.runtime.postprocess import Event


def _reduce(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= max_points:
        return x, y
    edges = np.linspace(0, len(x), max_points + 1).astype(np.int64)
    return x[edges[:-1]], np.maximum.reduceat(y, edges[:-1], axis=0)


def plot_timeline(
    path: str | os.PathLike[str],
    video: str,
    frames: np.ndarray,
    probs: np.ndarray,
    events: Sequence[Event],
    thresholds: np.ndarray,
    *,
    max_points: int = 4000,
) -> Path:
    """Write ``path`` (PNG, atomically): one row per label over the frame number."""
    require("matplotlib", "timeline plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fr = np.asarray(frames, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float32)
    xs, ys = _reduce(fr, p, max_points)
    n = len(LABELS)
    fig = Figure(figsize=(14, 0.55 * n + 1.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True)
    spans: dict[str, list[tuple[int, int]]] = {name: [] for name in LABELS}
    for ev in events:
        for name in ev["label"]:
            spans[name].append((int(ev["start"]), int(ev["end"])))
    lo, hi = (int(fr[0]), int(fr[-1])) if fr.size else (0, 1)
    for i, (ax, name) in enumerate(zip(axes, LABELS, strict=True)):
        for a, b in spans[name]:
            ax.axvspan(a, b + 1, color="tab:orange", alpha=0.35, linewidth=0)
        ax.plot(xs, ys[:, i], color="tab:blue", linewidth=0.7, drawstyle="steps-post")
        ax.axhline(float(thresholds[i]), color="tab:red", linewidth=0.6, linestyle="--")
        ax.set_ylim(0, 1)
        ax.set_xlim(lo, max(hi + 1, lo + 1))
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    axes[-1].set_xlabel("frame")
    fig.suptitle(f"{video}: probability (blue), threshold (red), events (orange)", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.99, top=0.96, bottom=0.05, hspace=0.15)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
