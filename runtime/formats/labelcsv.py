"""Galar label CSVs: one per video, a ``frame`` (or ``index``/``frame_file``) column and 0/1 label columns.

Galar CSVs carry all 29 Galar labels and a free-text ``section`` column; RARE-VISION uses the 17
(``vce.runtime.labels``). This is the one reader, used by training, ground-truth construction and
frame-level evaluation.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from vce.runtime.atomic import atomic_path
from vce.runtime.errors import VCEError
from vce.runtime.formats.eventjson import MAX_FRAME
from vce.runtime.formats.framefolder import frame_number, natural_key
from vce.runtime.formats.framescsv import VideoFrames
from vce.runtime.labels import LABELS, NUM_LABELS, is_known_label, map_galar_columns, normalise_label

FRAME_COLUMNS = ("frame", "index", "frame_file")
TEXT_COLUMNS = frozenset({"section", "video", "video_id", "comment", "notes"})


def read_label_csv(path: str | os.PathLike[str], video: str | None = None) -> VideoFrames:
    """One Galar label CSV -> VideoFrames (frames sorted, values 0/1 in LABELS order).

    Labels not among the 17 are dropped; columns that are neither a frame column, a known text
    column nor one of Galar's 29 labels are an error (a typo would otherwise silently be ignored).
    """
    p = Path(path)
    vid = video or p.stem
    if not p.is_file():
        raise VCEError(f"{p}: label CSV not found")
    try:
        with open(p, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise VCEError(f"{p}: not a text CSV file") from exc
    except csv.Error as exc:  # a field over csv's size limit, a stray quote at the end
        raise VCEError(f"{p}: not a valid CSV file ({exc})") from exc
    except OSError as exc:
        raise VCEError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    if not rows:
        raise VCEError(f"{p}: empty label file")
    header = [h.strip() for h in rows[0]]
    lowered = [normalise_label(h) for h in header]
    frame_col = next(
        (lowered.index(c.replace("_", " ")) for c in FRAME_COLUMNS if c.replace("_", " ") in lowered), None
    )
    if frame_col is None:
        raise VCEError(f"{p}: no frame column; expected one of {', '.join(FRAME_COLUMNS)}")
    mapping = map_galar_columns(header)
    unknown = [
        h
        for i, h in enumerate(header)
        if i != frame_col
        and h not in mapping
        and not is_known_label(h)
        and normalise_label(h) not in TEXT_COLUMNS
        and h != ""
    ]
    if unknown:
        raise VCEError(
            f"{p}: unknown label column(s) {unknown}; expected the RARE-VISION/Galar labels "
            f"(e.g. {', '.join(LABELS[:3])}, ...)"
        )
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if not body:
        raise VCEError(f"{p}: no frames listed (video {vid} is empty)")
    frames = np.empty(len(body), dtype=np.int64)
    values = np.zeros((len(body), NUM_LABELS), dtype=np.float64)
    cols = [(header.index(name), idx) for name, idx in mapping.items()]
    for r, row in enumerate(body, start=2):
        if len(row) < len(header):
            raise VCEError(f"{p}:{r}: expected {len(header)} fields, found {len(row)}")
        cell = row[frame_col].strip()
        number = int(cell) if cell.isascii() and cell.isdigit() else frame_number(cell)
        if number is None:
            raise VCEError(f"{p}:{r}: cannot read a frame number from {cell[:40]!r}")
        if not 0 <= number <= MAX_FRAME:
            raise VCEError(
                f"{p}:{r}: the frame number must be between 0 and {MAX_FRAME}, found {cell[:40]!r}"
            )
        frames[r - 2] = number
        for ci, li in cols:
            v = row[ci].strip()
            if v == "":
                raise VCEError(
                    f"{p}:{r}: label {header[ci]!r} is blank; write 0 or 1 (a blank is not read as 0)"
                )
            if v not in ("0", "1", "0.0", "1.0"):
                raise VCEError(f"{p}:{r}: label {header[ci]!r} must be 0 or 1, found {v[:40]!r}")
            values[r - 2, li] = float(v)
    order = np.argsort(frames, kind="stable")
    frames = frames[order]
    if np.any(np.diff(frames) == 0):
        dup = int(frames[np.flatnonzero(np.diff(frames) == 0)[0]])
        raise VCEError(f"{p}: frame {dup} is listed twice")
    return VideoFrames(vid, frames, values[order])


def read_labels_dir(folder: str | os.PathLike[str]) -> dict[str, VideoFrames]:
    """Every ``<video>.csv`` in a folder -> {video: VideoFrames}, sorted by video id."""
    root = Path(folder)
    if not root.is_dir():
        raise VCEError(f"{root}: no such label folder")
    files = sorted(
        (f for f in root.glob("*.csv") if f.name != "metadata.csv"), key=lambda f: natural_key(f.name)
    )
    if not files:
        raise VCEError(f"{root}: no label CSVs (<video>.csv) in this folder")
    return {f.stem: read_label_csv(f) for f in files}


def write_label_csv(path: str | os.PathLike[str], frames: np.ndarray, values: np.ndarray) -> Path:
    """Write a label CSV in the Galar layout (``frame`` + the 17 labels, 0/1), atomically."""
    y = np.asarray(values)
    if y.shape != (len(frames), NUM_LABELS):
        raise VCEError(f"labels of shape {y.shape} do not match {len(frames)} frames x {NUM_LABELS}")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frame", *LABELS])
        for f, row in zip(frames, y.astype(np.int64), strict=True):
            writer.writerow([int(f), *row.tolist()])
    return Path(path)
