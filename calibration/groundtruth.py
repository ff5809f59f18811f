"""Ground truth from Galar label CSVs, built as the challenge's ``make_json.py`` builds it.

Frames in index order; a new event whenever the sorted tuple of active labels changes (the empty
tuple included); an event ends at the next event's first frame minus one, the last at the last
frame. This is ``vce.runtime.postprocess.group_events`` with ``tuple`` grouping on the raw 0/1
labels (no thresholds, no smoothing): the same code that groups predictions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vce.runtime.formats.eventjson import write_events_json
from vce.runtime.formats.framescsv import VideoFrames
from vce.runtime.formats.labelcsv import read_labels_dir
from vce.runtime.postprocess import Event, group_events


def video_ground_truth(labels: VideoFrames) -> list[Event]:
    """One video's 0/1 labels -> its ground-truth events (tuple grouping)."""
    return group_events(labels.values > 0.5, labels.frames, "tuple")


def ground_truth(labels: Mapping[str, VideoFrames]) -> dict[str, list[Event]]:
    """{video: labels} -> {video: ground-truth events}."""
    return {vid: video_ground_truth(v) for vid, v in labels.items()}


def build_ground_truth(labels_dir: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Every ``<video>.csv`` of a label folder -> one RARE-VISION ground-truth JSON (atomic)."""
    return write_events_json(output, ground_truth(read_labels_dir(labels_dir)))
