"""A run's per-video summary takes its origin fields from the one definition its VideoProbs uses."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from vce.runtime.pipeline import VideoOrigin, VideoProbs
from vce.runtime.run import VideoSummary


def test_summary_and_probs_share_the_origin_fields() -> None:
    origin = {f.name for f in fields(VideoOrigin)}
    assert origin <= {f.name for f in fields(VideoProbs)} and origin <= {f.name for f in fields(VideoSummary)}
    own = {f.name for f in fields(VideoSummary)} - origin
    assert own == {"frames", "inferred", "events", "fps", "timeline"}  # counts only, no restated field


def test_summary_of_a_video() -> None:
    vp = VideoProbs(
        video="v",
        source="/x/v.mp4",
        kind="video",
        frames=np.array([0, 1, 2, 4], np.int64),
        probs=np.zeros((4, 17), np.float32),
        inferred=np.array([True, False, True, True]),
        corrupt=[3],
        missing_at_end=2,
        resumed=True,
        resumed_frames=2,
    )
    s = VideoSummary.of(vp, 5, 25.0, "v_timeline.png")
    assert (s.video, s.source, s.kind, s.corrupt, s.missing_at_end) == ("v", "/x/v.mp4", "video", [3], 2)
    assert (s.frames, s.inferred, s.events, s.resumed, s.resumed_frames) == (4, 3, 5, True, 2)
    assert s.corrupt is not vp.corrupt and s.n_corrupt == vp.n_corrupt == 3
    assert s.to_dict() == {
        "video": "v",
        "input": "/x/v.mp4",
        "kind": "video",
        "frames": 4,
        "frames_not_decoded": 3,
        "inferred": 3,
        "events": 5,
        "resumed_frames": 2,
        "fps": 25.0,
        "timeline": "v_timeline.png",
    }
