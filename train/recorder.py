"""A stand-in for a capsule recorder, for tests and demos of ``vce-run --follow`` (torch-free).

:func:`record_folder` writes a frame folder's files into another folder at ``fps`` frames/s the
way a recorder does: each file in two halves with a short wait between them (a reader that looks
at the wrong moment sees a half-written file), optionally a pause in the middle, then the end
marker (``vce.runtime.live.sources.END_MARKER``). :func:`record_stream` writes the same frames as the vce
frame stream (``vce.runtime.live.sources.write_frame``) to a binary stream, e.g. stdout piped into
``vce-run --follow -``. ``vce-train synth OUT --live DIR --fps F`` records the first synthetic
video this way (``--live -``: to stdout).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from vce.runtime.errors import VCEError
from vce.runtime.formats.framefolder import list_frames
from vce.runtime.live.sources import END_MARKER, write_end, write_frame


class _Clock:
    """Frame i is due ``i / fps`` seconds after the start, plus any pause already taken."""

    def __init__(self, fps: float, sleep: Callable[[float], None]) -> None:
        if not fps > 0:
            raise VCEError(f"--fps must be positive, got {fps}")
        self.fps = fps
        self.sleep = sleep
        self.start = time.monotonic()
        self.shift = 0.0

    def wait_for(self, index: int) -> None:
        delay = self.start + self.shift + index / self.fps - time.monotonic()
        if delay > 0:
            self.sleep(delay)

    def pause(self, seconds: float) -> None:
        self.shift += seconds


def record_folder(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    fps: float,
    *,
    pause_at: int | None = None,
    pause: float = 0.0,
    half_written: bool = True,
    end_marker: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Copy ``source``'s frames into ``dest`` at ``fps`` frames/s, like a recorder; returns the count.

    ``pause_at``: the frame index (0-based) before which the recorder stops for ``pause`` seconds.
    """
    frames = list_frames(source)
    out = Path(dest)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VCEError(f"cannot create {out}: {exc.strerror or exc}") from exc
    if (out / END_MARKER).exists():
        raise VCEError(f"{out} already holds a finished recording ({END_MARKER}); choose an empty folder")
    clock = _Clock(fps, sleep)
    half_wait = min(0.25 / fps, 0.05)
    for i, f in enumerate(frames):
        if pause_at is not None and i == pause_at and pause > 0:
            clock.pause(pause)
        clock.wait_for(i)
        data = f.path.read_bytes()
        with open(out / f.path.name, "wb") as fh:
            if half_written and len(data) > 1:
                fh.write(data[: len(data) // 2])
                fh.flush()
                sleep(half_wait)
            fh.write(data[len(data) // 2 if half_written and len(data) > 1 else 0 :])
    if end_marker:
        (out / END_MARKER).write_bytes(b"")
    return len(frames)


def record_stream(
    source: str | os.PathLike[str],
    out: BinaryIO,
    fps: float,
    *,
    pause_at: int | None = None,
    pause: float = 0.0,
    end_marker: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Write ``source``'s frames to ``out`` as the vce frame stream at ``fps`` frames/s."""
    frames = list_frames(source)
    clock = _Clock(fps, sleep)
    for i, f in enumerate(frames):
        if pause_at is not None and i == pause_at and pause > 0:
            clock.pause(pause)
        clock.wait_for(i)
        write_frame(out, f.path.read_bytes())
        out.flush()
    if end_marker:
        write_end(out)
        out.flush()
    return len(frames)
