"""The toolkit's one per-frame format: ``video, frame, <17 label columns>``.

``vce-run`` writes probabilities in it (``frames.csv``), ``vce-train`` writes validation
probabilities and labels in it (``val_probs.csv``, ``val_labels.csv``), ``vce-run --from-probs`` and
the calibration read it. Rows are grouped by video, frames in increasing order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vce.runtime.atomic import atomic_path
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS, NUM_LABELS

COLUMNS: tuple[str, ...] = ("video", "frame", *LABELS)


@dataclass
class VideoFrames:
    """One video's rows: frame numbers [T] and values [T, 17] (probabilities or 0/1 labels)."""

    video: str
    frames: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.shape != (self.frames.shape[0], NUM_LABELS):
            raise VCEError(
                f"video {self.video}: values of shape {self.values.shape} do not match "
                f"{self.frames.shape[0]} frames x {NUM_LABELS} labels"
            )


def _rows(videos: Iterable[VideoFrames], fmt: str) -> Iterable[str]:
    yield ",".join(_quote(c) for c in COLUMNS) + "\n"
    for v in videos:
        vid = _quote(v.video)
        for f, row in zip(v.frames, v.values, strict=True):
            yield f"{vid},{int(f)}," + ",".join(fmt % x for x in row) + "\n"


def _quote(s: str) -> str:
    return f'"{s}"' if ("," in s or '"' in s) else s


def write_frames_csv(
    path: str | os.PathLike[str], videos: Iterable[VideoFrames], *, binary: bool = False
) -> Path:
    """Write videos atomically, in the order given (callers sort by video id)."""
    fmt = "%d" if binary else "%.6g"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.writelines(_rows(videos, fmt))
    return Path(path)


def read_frames_csv(path: str | os.PathLike[str]) -> dict[str, VideoFrames]:
    """Read a per-frame CSV into {video: VideoFrames}, frames sorted; one clear error if malformed."""
    p = Path(path)
    if not p.is_file():
        raise VCEError(f"{p}: no such file; pass a per-frame CSV (video, frame, 17 label columns)")
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise VCEError(f"{p}: the file is empty; expected columns {', '.join(COLUMNS[:3])}, ...")
            header = [h.strip() for h in header]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise VCEError(
                    f"{p}: missing column(s) {missing}; a per-frame CSV has columns video, frame and the 17 labels"
                )
            pos = [header.index(c) for c in COLUMNS]
            by_video: dict[str, list[list[str]]] = {}
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < len(header):
                    raise VCEError(f"{p}:{line_no}: expected {len(header)} fields, found {len(row)}")
                by_video.setdefault(row[pos[0]], []).append([row[i] for i in pos[1:]])
    except UnicodeDecodeError as exc:
        raise VCEError(f"{p}: not a text CSV file ({exc.reason})") from exc
    out: dict[str, VideoFrames] = {}
    for video, rows in by_video.items():
        try:
            arr = np.array(rows, dtype=np.float64)
        except ValueError as exc:
            raise VCEError(f"{p}: video {video} has a non-numeric value ({exc})") from exc
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            row = arr[np.flatnonzero(~finite)[0]]
            raise VCEError(
                f"{p}: video {video} has NaN or infinite values (first at frame {row[0]:g}); "
                "re-create the file from a model that produces finite probabilities"
            )
        frames = arr[:, 0].astype(np.int64)
        order = np.argsort(frames, kind="stable")
        frames = frames[order]
        if np.any(np.diff(frames) == 0):
            dup = int(frames[np.flatnonzero(np.diff(frames) == 0)[0]])
            raise VCEError(f"{p}: video {video} lists frame {dup} twice")
        out[video] = VideoFrames(video, frames, arr[order, 1:])
    return out


def align(
    probs: Mapping[str, VideoFrames], labels: Mapping[str, VideoFrames]
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Pair probabilities with labels frame by frame: [(video, frames, probs, labels)], sorted by video."""
    missing = sorted(set(probs) - set(labels))
    if missing:
        raise VCEError(
            f"no labels for video(s) {missing[:5]}; check that the label files match the predictions"
        )
    result = []
    for video in sorted(probs):
        p, y = probs[video], labels[video]
        common, ip, iy = np.intersect1d(p.frames, y.frames, return_indices=True)
        if common.size < p.frames.size:
            raise VCEError(
                f"video {video}: {p.frames.size - common.size} predicted frame(s) have no label row"
            )
        result.append((video, common, p.values[ip], y.values[iy]))
    return result
