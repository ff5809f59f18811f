"""RARE-VISION event JSON: ``{"videos": [{"video_id": ..., "events": [{"start", "end", "label"}]}]}``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.formats.jsonfile import read_json
from vce.runtime.labels import LABELS
from vce.runtime.postprocess import Event

#: the largest frame number accepted anywhere (2**31 - 1: 2 years of video at 30 frames/s)
MAX_FRAME = 2**31 - 1


def to_submission(videos: Mapping[str, list[Event]]) -> dict[str, Any]:
    """{video_id: events} -> the submission object, videos sorted by id, labels checked."""
    allowed = set(LABELS)
    out = []
    for vid in sorted(videos):
        for ev in videos[vid]:
            bad = [name for name in ev["label"] if name not in allowed]
            if bad:
                raise VCEError(f"video {vid}: labels {bad} are not RARE-VISION labels")
        out.append({"video_id": vid, "events": [dict(ev) for ev in videos[vid]]})
    return {"videos": out}


def write_events_json(path: str | os.PathLike[str], videos: Mapping[str, list[Event]]) -> Path:
    """Write the events of every video into one RARE-VISION JSON file, atomically."""
    return write_json(path, to_submission(videos), indent=1)


def _frame(value: Any) -> int | None:
    """An integral frame number (int, or a float with no fraction), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _video_id(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 1024:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_events_json(path: str | os.PathLike[str], *, check_labels: bool = True) -> dict[str, list[Event]]:
    """Read a RARE-VISION JSON file (prediction or ground truth) in file order; clear errors."""
    p = Path(path)
    data = read_json(p, "expected a RARE-VISION events JSON")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise VCEError(f'{p}: expected an object with a "videos" list')
    allowed = set(LABELS)
    out: dict[str, list[Event]] = {}
    for i, video in enumerate(data["videos"]):
        if not isinstance(video, dict) or "video_id" not in video or "events" not in video:
            raise VCEError(f'{p}: videos[{i}] needs "video_id" and "events"')
        vid = _video_id(video["video_id"])
        if vid is None:
            raise VCEError(f'{p}: videos[{i}] "video_id" must be a non-empty string (or an integer)')
        if vid in out:
            raise VCEError(f"{p}: video {vid} appears twice")
        if not isinstance(video["events"], list):
            raise VCEError(f'{p}: video {vid}: "events" must be a list of events')
        events: list[Event] = []
        for j, ev in enumerate(video["events"]):
            start, end = (_frame(ev.get(k)) if isinstance(ev, dict) else None for k in ("start", "end"))
            label = ev.get("label") if isinstance(ev, dict) else None
            # the official checker iterates "label": a bare string would be checked letter by letter
            if start is None or end is None or not isinstance(label, list):
                raise VCEError(
                    f'{p}: video {vid} event {j} needs integer "start" and "end" and a "label" list '
                    '(e.g. {"start": 0, "end": 9, "label": ["colon"]})'
                )
            if not all(isinstance(name, str) for name in label):
                raise VCEError(f'{p}: video {vid} event {j}: every "label" must be a label name (a string)')
            labels = list(label)
            if check_labels:
                bad = [name for name in labels if name not in allowed]
                if bad:
                    raise VCEError(
                        f"{p}: video {vid} event {j} has label(s) {bad}; only the 17 RARE-VISION labels are allowed"
                    )
            if not (0 <= start <= MAX_FRAME and 0 <= end <= MAX_FRAME):
                raise VCEError(
                    f"{p}: video {vid} event {j}: frame numbers must be between 0 and {MAX_FRAME} "
                    f"(start {str(start)[:24]}, end {str(end)[:24]})"
                )
            if end < start:
                raise VCEError(f"{p}: video {vid} event {j} ends ({end}) before it starts ({start})")
            events.append({"start": start, "end": end, "label": labels})
        out[vid] = events
    return out
