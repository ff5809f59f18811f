"""The resume state of ``vce-run --follow``: an append-only log of what became of each frame.

One file per followed video in the output folder's ``.partial/`` (``<video>-<hash>.live``, the
name of the offline partial file with another suffix): a header line (:data:`MAGIC`), a line with
the JSON key a run must match to continue from it (model, input, preprocessing, stride, fill),
then one fixed-size record per frame in arrival order: the frame number (int64), what became of it
(:data:`INFERRED`, :data:`SKIPPED` to keep up, :data:`CORRUPT`) and its 17 probabilities (float32;
zeros unless inferred). Appending costs one record per frame, whatever the length of the
examination (the offline partial file is rewritten whole at each checkpoint).

The live run syncs the log (flush + fsync) before it writes an event to ``events.jsonl``, so the
log never lags behind an event a viewer has seen: re-fed after a kill, it gives every such event
again. A record cut by a kill is dropped when the log is reopened; a log that does not read back
as vce wrote it (another key, a broken header, frame numbers out of order) is started over.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vce.runtime.errors import VCEError
from vce.runtime.labels import NUM_LABELS

MAGIC = b"vce-live-log 1\n"
INFERRED, SKIPPED, CORRUPT = 0, 1, 2
#: one record: 8 + 1 + 68 = 77 bytes, packed
RECORD = np.dtype([("frame", "<i8"), ("kind", "u1"), ("probs", "<f4", (NUM_LABELS,))])


def _header(key: dict[str, Any]) -> bytes:
    return MAGIC + json.dumps(key, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _valid(records: np.ndarray) -> bool:
    frames, kinds, probs = records["frame"], records["kind"], records["probs"]
    if np.any(np.diff(frames) <= 0) or np.any(frames < 0) or np.any(kinds > CORRUPT):
        return False
    inferred = probs[kinds == INFERRED]
    return bool(np.all(np.isfinite(inferred)) and np.all((inferred >= 0) & (inferred <= 1)))


class FrameLog:
    """The log of one followed video (see the module docstring); :meth:`open` reads what is there."""

    def __init__(self, path: Path, fh: BinaryIO, count: int) -> None:
        self.path = path
        self._fh = fh
        self.count = count  # records in the file

    @classmethod
    def open(cls, path: str | os.PathLike[str], key: dict[str, Any]) -> tuple[FrameLog, np.ndarray]:
        """The log at ``path`` and its records if it was written under ``key``; else a new, empty one."""
        p = Path(path)
        header = _header(key)
        records = np.zeros(0, RECORD)
        try:
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
        except OSError:
            data = b""
        keep = 0
        if data.startswith(header):
            n = (len(data) - len(header)) // RECORD.itemsize
            found = np.frombuffer(data, RECORD, count=n, offset=len(header))
            if _valid(found):
                records, keep = found.copy(), len(header) + n * RECORD.itemsize
        try:
            if keep:
                fh = open(p, "r+b")  # noqa: SIM115 (closed in close())
                fh.truncate(keep)  # a record cut by a kill
                fh.seek(keep)
            else:
                if p.is_symlink():
                    p.unlink()
                fh = open(p, "wb")  # noqa: SIM115
                fh.write(header)
                fh.flush()
        except OSError as exc:
            raise VCEError(f"cannot write {p}: {exc.strerror or exc}; choose a writable -o folder") from exc
        return cls(p, fh, len(records)), records

    def append(self, frames: np.ndarray, kinds: np.ndarray, probs: np.ndarray) -> None:
        """Records for ``frames`` [k] (increasing), ``kinds`` [k] and ``probs`` [k, 17]."""
        rec = np.zeros(len(frames), RECORD)
        rec["frame"], rec["kind"], rec["probs"] = frames, kinds, probs
        try:
            self._fh.write(rec.tobytes())
        except OSError as exc:
            raise VCEError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        self.count += len(frames)

    def sync(self) -> None:
        """Flush and fsync: what was appended survives a kill or a power cut."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise VCEError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def read(self) -> np.ndarray:
        """Every record so far (the file read back: memory is used only while reading)."""
        self.sync()
        with open(self.path, "rb") as fh:
            first = fh.readline()
            second = fh.readline()
            data = fh.read()
        assert first == MAGIC and second.endswith(b"\n")
        return np.frombuffer(data, RECORD, count=len(data) // RECORD.itemsize).copy()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
