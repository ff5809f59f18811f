"""What a live run shows while it runs: ``status.json`` snapshots and ``events.jsonl`` lines.

Another program (a viewer) may read either file at any moment:

- ``status.json`` is replaced atomically (:func:`write_status`), so a reader sees the previous or
  the next snapshot, never a mix. Its fields: see :func:`status_snapshot`.
- ``events.jsonl`` gets one JSON object per line, ``{"video_id", "start", "end", "label", ...}``, as
  each event becomes final (:class:`EventLog`; ``vce-run --follow`` adds how long the event waited:
  ``delay_frames``, ``post_frames``, ``delay_s``, and the time it was written, ``time``); each line
  is flushed and fsync'ed before the next, so a reader sees whole lines (a line without its newline
  is still being written: skip it).
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.labels import ANATOMY, PATHOLOGY
from vce.runtime.postprocess import Event

STATUS_VERSION = 1


def status_snapshot(
    *,
    video: str,
    state: str,
    seen: int,
    inferred: int,
    skipped: int,
    corrupt: int,
    settled: int,
    newest_frame: int | None,
    settled_frame: int | None,
    labels: Sequence[str],
    fps: float,
    events: int,
    delay_bound_frames: int,
    now: float,
    inference_fps: float | None = None,
    ended_by: str | None = None,
    nominal_fps: float | None = None,
) -> dict[str, Any]:
    """One ``status.json`` snapshot (a pure function of the run's counters).

    ``seen``: frames that arrived (corrupt ones included); ``inferred``/``skipped``/``corrupt``: what
    became of them; ``settled``: frames whose smoothed labels are final (the post-processor's
    ``frames_settled``); ``labels``: the smoothed labels of the newest settled frame, split into the
    current ``region`` (anatomy: regions and landmarks) and ``pathologies``; ``fps``: the arrival
    rate (frames/s); ``behind``: frames (and seconds at ``fps``) between the newest arrived frame
    and the newest settled one; ``now``: the update time (seconds since the epoch);
    ``inference_fps``: frames inferred per second (the model's pace); ``ended_by``: why the source
    ended (``marker``, ``eof``, ``idle``, ``stopped``, ...), once it has; ``nominal_fps``: the
    source's frame rate (``--fps`` or the stream's), for the delay bound in seconds (default ``fps``).
    """
    if state not in ("running", "finished", "failed", "interrupted"):
        raise VCEError(f"status state must be running, finished, failed or interrupted, got {state!r}")
    behind = max(seen - corrupt - settled, 0)
    per_second = fps if fps > 0 else None
    bound_rate = nominal_fps if nominal_fps and nominal_fps > 0 else per_second
    return {
        "version": STATUS_VERSION,
        "video": video,
        "state": state,
        "frames": {
            "seen": seen,
            "inferred": inferred,
            "skipped": skipped,
            "corrupt": corrupt,
            "settled": settled,
        },
        "newest_frame": newest_frame,
        "settled_frame": settled_frame,
        "region": [name for name in labels if name in ANATOMY],
        "pathologies": [name for name in labels if name in PATHOLOGY],
        "fps": None if per_second is None else round(per_second, 3),
        "inference_fps": None if inference_fps is None else round(inference_fps, 3),
        "behind": {
            "frames": behind,
            "seconds": None if per_second is None else round(behind / per_second, 3),
        },
        "delay_bound": {
            "frames": delay_bound_frames,
            "seconds": None if not bound_rate else round(delay_bound_frames / bound_rate, 3),
        },
        "events": events,
        "ended_by": ended_by,
        "updated": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="seconds"),
        "updated_unix": round(now, 3),
    }


def write_status(path: str | os.PathLike[str], snapshot: dict[str, Any]) -> Path:
    """Replace ``status.json`` atomically."""
    return write_json(path, snapshot)


class RateMeter:
    """Frames per second over the last ``window`` seconds of arrivals (``now`` passed in: testable)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float, n: int = 1) -> None:
        self._times.extend([now] * n)
        self._drop(now)

    def rate(self, now: float) -> float:
        self._drop(now)
        if len(self._times) < 2:
            return 0.0
        span = now - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _drop(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()


class EventLog:
    """``events.jsonl``: append one event per line, flushed and fsync'ed line by line.

    Opening an existing log keeps its complete lines and cuts a last line that a killed run left
    without its newline, so a resumed run appends after whole lines only.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            _cut_partial_line(self.path)
            self._fh: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise VCEError(
                f"cannot write {self.path}: {exc.strerror or exc}; choose a writable -o folder"
            ) from exc

    def write(self, video: str, event: Event, extra: dict[str, Any] | None = None) -> None:
        """One line: the event's ``video_id``, ``start``, ``end``, ``label``, then ``extra``'s keys."""
        line = json.dumps(
            {
                "video_id": video,
                "start": event["start"],
                "end": event["end"],
                "label": list(event["label"]),
                **(extra or {}),
            }
        )
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise VCEError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_partial_line(path: Path) -> None:
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


def read_event_log(path: str | os.PathLike[str]) -> Iterator[tuple[str, Event]]:
    """(video_id, event) of each complete line of an ``events.jsonl`` (a partial last line is skipped)."""
    p = Path(path)
    try:
        data = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise VCEError(f"cannot read {p}: {exc.strerror or exc}") from exc
    lines = data.split("\n")[:-1]  # the text after the last newline is not a complete line
    for number, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
            yield (
                str(obj["video_id"]),
                {
                    "start": int(obj["start"]),
                    "end": int(obj["end"]),
                    "label": [str(x) for x in obj["label"]],
                },
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise VCEError(
                f"{p}, line {number}: not an events.jsonl line ({exc}); move the file away"
            ) from exc
