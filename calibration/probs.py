"""Reading validation probabilities for vce-calibrate and vce-eval: the per-frame CSV, checked as probabilities.

The CSV format is the runtime's (:mod:`vce.runtime.formats.framescsv`); here the values must also be
probabilities: every one in [0, 1] (a logit or a percentage would silently skew every threshold
and metric), and the file must hold at least one row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import VideoFrames, read_frames_csv
from vce.runtime.labels import LABELS


def check_probabilities(
    path: str | os.PathLike[str], videos: dict[str, VideoFrames]
) -> dict[str, VideoFrames]:
    """``videos`` unchanged if there is at least one row and every value is in [0, 1]; else one VCEError."""
    p = Path(path)
    if not videos or all(v.frames.size == 0 for v in videos.values()):
        raise VCEError(f"{p}: no rows (only a header); pass a per-frame CSV with the model's probabilities")
    for video, v in videos.items():
        bad = (v.values < 0.0) | (v.values > 1.0)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise VCEError(
                f"{p}: video {video} frame {int(v.frames[row])} {LABELS[col]}: {v.values[row, col]:g} is "
                "outside [0, 1]; the file must hold probabilities (sigmoid outputs), not logits or percentages"
            )
    return videos


def read_probabilities(path: str | os.PathLike[str]) -> dict[str, VideoFrames]:
    """A per-frame probability CSV -> {video: VideoFrames}, checked (:func:`check_probabilities`)."""
    return check_probabilities(path, read_frames_csv(path))
