"""The live pieces wired together as ``vce-run --follow`` will wire them (with a stand-in model):
recorder -> LiveFolderSource -> LagPolicy -> FillBuffer -> OnlinePostprocessor -> EventLog/status.
The final events equal the offline post-processing of the same frames, and no event comes later
than the delay bound."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from vce.runtime.formats.framefolder import list_frames
from vce.runtime.live.keepup import FillBuffer, LagPolicy
from vce.runtime.live.sources import LiveFolderSource
from vce.runtime.live.status import EventLog, read_event_log, status_snapshot, write_status
from vce.runtime.online import OnlinePostprocessor, order_events, settle_lag
from vce.runtime.pipeline import fill_probs
from vce.runtime.postprocess import PostprocessConfig, postprocess
from vce.runtime.sources import read_image
from vce.train.recorder import record_folder
from vce.train.synth import write_dataset


def model(image: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for the classifier: 17 probabilities from the frame's colour."""
    mean = image.reshape(-1, 3).mean(axis=0) / 255.0
    offsets = np.linspace(-0.15, 0.15, 17)
    return 1.0 / (1.0 + np.exp(-25.0 * (mean[np.arange(17) % 3] - 0.45 + offsets)))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, 1, 160, seed=3, size=64)
    return root / "frames" / "synth_000"


@pytest.mark.parametrize(("slow", "grouping"), [(False, "tuple"), (True, "label")])
def test_live_folder_to_events(tmp_path: Path, video: Path, slow: bool, grouping: str) -> None:
    cfg = PostprocessConfig(5, 3, 4, grouping)  # type: ignore[arg-type]
    th = np.full(17, 0.5)
    live, out = tmp_path / "live", tmp_path / "out"
    out.mkdir()
    recorder = threading.Thread(
        target=record_folder, args=(video, live), kwargs={"fps": 200, "pause_at": 80, "pause": 0.3}
    )
    source = LiveFolderSource(live, idle_timeout=10, corrupt_timeout=5, poll=(0.005, 0.05))
    proc = OnlinePostprocessor(th, cfg)
    policy = LagPolicy(3)
    fill = FillBuffer("linear")
    waiting: list[tuple[int, int, np.ndarray]] = []  # (position, frame, image)
    inferred: dict[int, bool] = {}
    emitted: list[tuple[dict, int]] = []  # event, position of the first frame of its push
    seen = 0

    def push(frames: np.ndarray, probs: np.ndarray, log: EventLog) -> None:
        first = proc.frames_seen
        for ev in proc.push(frames, probs):
            log.write(source.video_id, ev)
            emitted.append((ev, first))

    recorder.start()
    with EventLog(out / "events.jsonl") as log:
        for slot in source:
            seen += 1
            assert not slot.corrupt and slot.image is not None
            waiting.append((slot.position, slot.frame, slot.image))
            if not slow or slot.position % 4 == 0:  # slow: the model is busy, frames pile up
                infer, _ = policy.choose([w[0] for w in waiting])
                for pos, frame, image in waiting:
                    inferred[frame] = pos in infer
                    push(*fill.add(frame, model(image) if pos in infer else None), log)
                waiting = []
            write_status(
                out / "status.json",
                status_snapshot(
                    video=source.video_id, state="running", seen=seen,
                    inferred=sum(inferred.values()), skipped=len(inferred) - sum(inferred.values()),
                    corrupt=0, settled=proc.frames_settled, newest_frame=slot.frame,
                    settled_frame=proc.last_settled_frame, labels=proc.settled_labels(), fps=0.0,
                    events=len(emitted), delay_bound_frames=proc.delay_bound, now=0.0,
                ),
            )  # fmt: skip
        for _, frame, image in waiting:  # the stream ended: infer what still waits
            inferred[frame] = True
            push(*fill.add(frame, model(image)), log)
        push(*fill.finish(), log)
        for ev in proc.finish():
            log.write(source.video_id, ev)
    recorder.join()

    files = list_frames(video)
    frames = np.array([f.frame for f in files])
    probs = np.stack([model(read_image(f.path)) for f in files])
    mask = np.array([inferred[int(f)] for f in frames])
    assert mask.all() != slow  # slow: frames were skipped, and recorded
    offline = postprocess(fill_probs(np.where(mask[:, None], probs, 0.0), mask, "linear"), frames, th, cfg)
    logged = [ev for _, ev in read_event_log(out / "events.jsonl")]
    assert order_events(logged, cfg.grouping) == offline and len(offline) > 3
    for ev, first in emitted:  # returned at the latest by the push holding position last + D + 1
        last = int(np.searchsorted(frames, ev["end"], side="right")) - 1
        assert first <= last + settle_lag(cfg) + 1
    status = json.loads((out / "status.json").read_text())
    assert status["frames"]["seen"] == len(files) and status["frames"]["settled"] <= len(files)
    assert status["delay_bound"]["frames"] == settle_lag(cfg) + 1 == 2 + 2 + 4 + 1
