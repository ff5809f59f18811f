"""status.json snapshots, events.jsonl lines, the arrival rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vce.runtime.errors import VCEError
from vce.runtime.live.status import EventLog, RateMeter, read_event_log, status_snapshot, write_status


def snapshot(**over: object) -> dict:
    args = {
        "video": "synth_000",
        "state": "running",
        "seen": 120,
        "inferred": 100,
        "skipped": 18,
        "corrupt": 2,
        "settled": 108,
        "newest_frame": 119,
        "settled_frame": 107,
        "labels": ["colon", "pylorus", "ulcer", "polyp"],
        "fps": 4.0,
        "events": 7,
        "delay_bound_frames": 11,
        "now": 1_700_000_000.25,
    }
    args.update(over)
    return status_snapshot(**args)  # type: ignore[arg-type]


def test_status_snapshot_fields() -> None:
    s = snapshot()
    assert s["frames"] == {"seen": 120, "inferred": 100, "skipped": 18, "corrupt": 2, "settled": 108}
    assert s["region"] == ["colon", "pylorus"] and s["pathologies"] == ["ulcer", "polyp"]
    assert s["behind"] == {"frames": 10, "seconds": 2.5}  # 120 seen - 2 corrupt - 108 settled, at 4/s
    assert s["delay_bound"] == {"frames": 11, "seconds": 2.75}
    assert s["updated"] == "2023-11-14T22:13:20+00:00" and s["updated_unix"] == 1_700_000_000.25
    assert s["state"] == "running" and s["events"] == 7 and s["fps"] == 4.0
    still = snapshot(fps=0.0)
    assert still["fps"] is None and still["behind"]["seconds"] is None
    with pytest.raises(VCEError, match="state"):
        snapshot(state="paused")


def test_write_status_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_status(path, snapshot(seen=1, settled=0, corrupt=0))
    write_status(path, snapshot())
    assert json.loads(path.read_text())["frames"]["seen"] == 120
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary left


def test_event_log_lines_and_resume_after_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.write("v", {"start": 0, "end": 9, "label": ["colon"]})
        log.write("v", {"start": 10, "end": 12, "label": []})
        # each line is on disk (flushed) before the next is written
        assert path.read_text().count("\n") == 2
    with open(path, "a") as fh:  # a killed run left half a line
        fh.write('{"video_id": "v", "sta')
    assert [e for _, e in read_event_log(path)] == [
        {"start": 0, "end": 9, "label": ["colon"]},
        {"start": 10, "end": 12, "label": []},
    ]
    with EventLog(path) as log:  # reopening cuts the partial line, then appends
        log.write("v", {"start": 13, "end": 20, "label": ["ulcer"]})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2]) == {
        "video_id": "v",
        "start": 13,
        "end": 20,
        "label": ["ulcer"],
    }
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(VCEError, match="line 1"):
        list(read_event_log(tmp_path / "bad.jsonl"))


def test_event_log_in_an_unwritable_place_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VCEError, match="cannot write"):
        EventLog(tmp_path / "missing-folder" / "events.jsonl")


def test_rate_meter() -> None:
    m = RateMeter(window=10.0)
    assert m.rate(0.0) == 0.0
    for i in range(21):
        m.tick(i * 0.5)  # 2 frames/s
    assert m.rate(10.0) == pytest.approx(2.0)
    assert m.rate(100.0) == 0.0  # nothing in the window any more
