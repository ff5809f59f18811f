"""The toolkit's one per-frame format: ``video, frame, <17 label columns>``.

``vce-run`` writes probabilities in it (``frames.csv``), ``vce-train`` writes validation
probabilities and labels in it (``val_probs.csv``, ``val_labels.csv``), ``vce-run --from-probs`` and
the calibration read it. Rows are grouped by video, frames in increasing order.

Rules (the same for every writer and reader):

- Written with Python's ``csv`` module (RFC 4180 quoting), UTF-8, ``\\n`` line ends. A video name
  with commas, quotes or line breaks stays one field; a row with more or fewer fields than the
  header is refused on reading, so no name can forge a row.
- Spreadsheet formulas: a video name that starts with ``=``, ``+``, ``-``, ``@``, a tab, a carriage
  return or ``'`` is written with one extra leading ``'`` (so Excel, LibreOffice and Google Sheets
  show it as text and never evaluate it), and the reader removes exactly one leading ``'``. Names
  therefore round-trip exactly: ``-x`` is stored as ``'-x`` and read back as ``-x``; ``'x`` is
  stored as ``''x``. Only the video column is text; every other cell is a number.
- A frame that has no probabilities (it could not be decoded: ``vce-run`` marks corrupt frames, and
  frames a video's header announced but the decoder never produced, this way) is a row whose 17
  label cells are empty (pandas reads NaN). Readers carry such frames in
  :attr:`VideoFrames.missing` and leave them out of ``frames``/``values``: post-processing,
  calibration and frame-level evaluation see only decodable frames, and an event bridges a missing
  frame from the decodable frame before it (an event ends at the next decodable frame minus one).
  A row with some label cells empty and others not is an error.
- Which model made the file travels in a sidecar JSON beside it (``vce.runtime.formats.provenance``); the
  CSV itself stays a plain table.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vce.runtime.atomic import atomic_path
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS, NUM_LABELS

COLUMNS: tuple[str, ...] = ("video", "frame", *LABELS)
#: first characters that make a spreadsheet evaluate a cell (OWASP "CSV injection"), and the escape
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
TEXT_MARK = "'"


def neutralise(name: str) -> str:
    """The cell text for a video name: one leading ``'`` when it could start a formula (or has one)."""
    return TEXT_MARK + name if name.startswith((*FORMULA_START, TEXT_MARK)) else name


def unneutralise(cell: str) -> str:
    """The video name of a cell written by :func:`neutralise` (one leading ``'`` removed)."""
    return cell[1:] if cell.startswith(TEXT_MARK) else cell


@dataclass
class VideoFrames:
    """One video's rows: frame numbers [T] and values [T, 17] (probabilities or 0/1 labels).

    ``missing``: frame numbers that have a row without values (frames that could not be decoded).
    """

    video: str
    frames: np.ndarray
    values: np.ndarray
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64)
        self.missing = np.unique(np.asarray(self.missing, dtype=np.int64))
        if self.values.shape != (self.frames.shape[0], NUM_LABELS):
            raise VCEError(
                f"video {self.video}: values of shape {self.values.shape} do not match "
                f"{self.frames.shape[0]} frames x {NUM_LABELS} labels"
            )
        both = np.intersect1d(self.frames, self.missing)
        if both.size:
            raise VCEError(f"video {self.video}: frame {int(both[0])} is both missing and present")


#: rows converted to Python numbers at a time (100k frames x 17 floats as Python objects are ~75 MB)
_CHUNK = 4096


def _rows(v: VideoFrames, fmt: str) -> Iterator[list[str | int]]:
    """One video's rows; with missing frames, merged in frame order (streamed: one row at a time)."""
    name = neutralise(v.video)
    if not v.missing.size:
        for a in range(0, v.frames.size, _CHUNK):  # Python floats for a chunk at a time, not the video
            for f, row in zip(
                v.frames[a : a + _CHUNK].tolist(), v.values[a : a + _CHUNK].tolist(), strict=True
            ):
                yield [name, f, *[fmt % x for x in row]]
        return
    blank = [""] * NUM_LABELS
    numbers = np.concatenate([v.frames, v.missing])
    for j in np.argsort(numbers, kind="stable").tolist():
        if j >= v.frames.size:
            yield [name, int(numbers[j]), *blank]
        else:
            yield [name, int(numbers[j]), *[fmt % x for x in v.values[j].tolist()]]


def write_frames_csv(
    path: str | os.PathLike[str], videos: Iterable[VideoFrames], *, binary: bool = False
) -> Path:
    """Write videos atomically, in the order given (callers sort by video id).

    Frames are written in the order given; with missing frames, a video's rows are in frame order.
    """
    fmt = "%d" if binary else "%.6g"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        # with "\n" line ends the csv module leaves a bare "\r" unquoted, and readers split rows
        # there: rows of a name holding one are written with every field quoted
        quoted = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(COLUMNS)
        for v in videos:
            (quoted if "\r" in v.video else writer).writerows(_rows(v, fmt))
    return Path(path)


def read_frames_csv(path: str | os.PathLike[str]) -> dict[str, VideoFrames]:
    """Read a per-frame CSV into {video: VideoFrames}, frames sorted; one clear error if malformed."""
    p = Path(path)
    if not p.is_file():
        raise VCEError(f"{p}: no such file; pass a per-frame CSV (video, frame, 17 label columns)")
    by_video: dict[str, list[list[str]]] = {}
    missing: dict[str, list[str]] = {}
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise VCEError(f"{p}: the file is empty; expected columns {', '.join(COLUMNS[:3])}, ...")
            header = [h.strip() for h in header]
            absent = [c for c in COLUMNS if c not in header]
            if absent:
                raise VCEError(
                    f"{p}: missing column(s) {absent}; a per-frame CSV has columns video, frame and the 17 labels"
                )
            pos = [header.index(c) for c in COLUMNS]
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise VCEError(
                        f"{p}:{reader.line_num}: expected {len(header)} fields, found {len(row)}; "
                        "re-create the file with vce (a field with a comma or a line break must be quoted)"
                    )
                video = unneutralise(row[pos[0]])
                cells = [row[i].strip() for i in pos[2:]]
                if not any(cells):
                    missing.setdefault(video, []).append(row[pos[1]])
                    by_video.setdefault(video, [])
                    continue
                if not all(cells):
                    raise VCEError(
                        f"{p}:{reader.line_num}: video {video} frame {row[pos[1]]} has empty label cells; "
                        "a row has all 17 values, or none (a frame that could not be decoded)"
                    )
                by_video.setdefault(video, []).append([row[pos[1]], *cells])
    except UnicodeDecodeError as exc:
        raise VCEError(f"{p}: not a text CSV file ({exc.reason})") from exc
    except csv.Error as exc:
        raise VCEError(f"{p}: not a valid CSV file ({exc})") from exc
    out: dict[str, VideoFrames] = {}
    for video, rows in by_video.items():
        try:
            arr = np.array(rows, dtype=np.float64).reshape(len(rows), 1 + NUM_LABELS)
            gone = np.array(missing.get(video, []), dtype=np.float64)
        except ValueError as exc:
            raise VCEError(f"{p}: video {video} has a non-numeric value ({exc})") from exc
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            row = arr[np.flatnonzero(~finite)[0]]
            raise VCEError(
                f"{p}: video {video} has NaN or infinite values (first at frame {row[0]:g}); "
                "re-create the file from a model that produces finite probabilities"
            )
        numbers = np.concatenate([arr[:, 0], gone])
        if (
            not np.all(np.isfinite(numbers))
            or np.any(numbers != np.round(numbers))
            or np.any(numbers < 0)
            or np.any(numbers > 2**53)
        ):
            raise VCEError(f"{p}: video {video} has a frame number that is not a whole number >= 0")
        frames = arr[:, 0].astype(np.int64)
        everything = np.sort(numbers.astype(np.int64))
        if np.any(np.diff(everything) == 0):
            dup = int(everything[np.flatnonzero(np.diff(everything) == 0)[0]])
            raise VCEError(f"{p}: video {video} lists frame {dup} twice")
        order = np.argsort(frames, kind="stable")
        out[video] = VideoFrames(video, frames[order], arr[order, 1:], gone.astype(np.int64))
    return out


def align(
    probs: Mapping[str, VideoFrames], labels: Mapping[str, VideoFrames]
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Pair probabilities with labels frame by frame: [(video, frames, probs, labels)], sorted by video.

    Missing frames (no probabilities) take no part: only decodable frames are paired.
    """
    absent = sorted(set(probs) - set(labels))
    if absent:
        raise VCEError(
            f"no labels for video(s) {absent[:5]}; check that the label files match the predictions"
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
