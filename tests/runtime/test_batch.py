"""Real batches: bad files never stop a folder, partly corrupt videos, exit codes, help, timeline axes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from runtime_testdata import SEQUENCE, SEQUENCE_EVENTS, colour_frames, write_folder, write_video
from trust_testdata import vce_run

from vce.runtime.cli import EXIT_CODES, EXIT_PROBLEMS
from vce.runtime.formats.eventjson import read_events_json
from vce.runtime.formats.framescsv import read_frames_csv
from vce.runtime.formats.timeline import clock, time_ticks, timeline_figure
from vce.runtime.labels import LABELS


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Two good inputs and five bad ones, as a real folder of a capsule study looks."""
    root = tmp_path / "study"
    root.mkdir()
    write_video(root / "good_video.avi", colour_frames(SEQUENCE))
    write_folder(root / "good_frames", colour_frames(SEQUENCE, seed=1))
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video at all\n" * 200)
    (root / "report.pdf").write_bytes(b"%PDF-1.4")
    stray = write_folder(root / "stray_frames", colour_frames("kk"))
    (stray / "frame_000005.exe").write_bytes(b"MZ")
    broken = write_folder(root / "broken_frames", colour_frames("kkk"))
    for f in broken.iterdir():
        f.write_bytes(b"broken")
    return root


BAD = {
    "zero.mp4": "the video file is empty (0 bytes)",
    "text.mp4": "unreadable or corrupt video",
    "report.pdf": "neither a video nor a frame folder",
    "stray_frames": "not an image file in a frame folder",
    "broken_frames": "no decodable frame (all 3 frame(s) are corrupt)",
}


def test_one_bad_file_never_stops_a_folder(
    tmp_path: Path, mixed_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    code, stdout, err = vce_run(capsys, monkeypatch, mixed_folder, "-b", bundle_dir, "-o", out, "--no-plots")
    assert code == EXIT_PROBLEMS
    assert "Traceback" not in err and "error" not in err.lower()
    assert err.strip().splitlines()[-1].startswith("vce-run: done, with problems: 5 input(s) could not run")
    # every good input ran
    assert read_events_json(out / "events.json") == {
        "good_frames": SEQUENCE_EVENTS,
        "good_video": SEQUENCE_EVENTS,
    }
    assert sorted(read_frames_csv(out / "frames.csv")) == ["good_frames", "good_video"]
    # every bad one is listed with its reason: in the summary and in run.json
    record = json.loads((out / "run.json").read_text())
    listed = {Path(p["input"]).name: p["reason"] for p in record["problems"]}
    assert sorted(listed) == sorted(BAD)
    for name, reason in BAD.items():
        assert reason in listed[name] and name in listed[name]
        assert reason in stdout
    assert "5 input(s) could not run:" in stdout


def test_strict_stops_at_the_first_bad_input(
    tmp_path: Path, mixed_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    code, _, err = vce_run(capsys, monkeypatch, mixed_folder, "-b", bundle_dir, "-o", out, "--strict")
    assert code == 2
    [line] = [x for x in err.splitlines() if "error" in x]
    assert line.startswith("vce-run: error:") and any(reason in line for reason in BAD.values())
    assert not out.exists() or not list(out.iterdir())


def test_strict_also_stops_at_a_video_without_decodable_frames(
    tmp_path: Path, bundle_dir: Path, frame_folder: Path, capsys, monkeypatch
) -> None:
    broken = write_folder(tmp_path / "broken", colour_frames("kk"))
    for f in broken.iterdir():
        f.write_bytes(b"broken")
    out = tmp_path / "out"
    code, _, err = vce_run(capsys, monkeypatch, frame_folder, broken, "-b", bundle_dir, "-o", out, "--strict")
    assert code == 2 and "no decodable frame" in err
    assert not (out / "events.json").exists()


def test_when_no_input_can_run_every_reason_is_given_and_nothing_is_written(
    tmp_path: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "gone").mkdir()
    out = tmp_path / "out"
    code, _, err = vce_run(
        capsys, monkeypatch, tmp_path / "zero.mp4", tmp_path / "gone", tmp_path / "nope.avi", "-b", bundle_dir,
        "-o", out,
    )  # fmt: skip
    assert code == 2
    assert err.count("vce-run: warning:") == 3 and "empty (0 bytes)" in err and "no such file" in err
    assert err.strip().splitlines()[-1] == (
        "vce-run: error: none of the 3 inputs can be run (reasons above); nothing written"
    )
    assert not out.exists()


def test_a_partly_corrupt_video_accounts_for_every_frame(
    tmp_path: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    path = write_video(tmp_path / "v.avi", colour_frames("k" * 30))
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = np.random.default_rng(0).bytes(400)
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, _, err = vce_run(capsys, monkeypatch, path, "-b", bundle_dir, "-o", out)
    assert code == EXIT_PROBLEMS and "vce-run: warning:" in err and "could not be decoded" in err
    assert "vce-run: error" not in err
    probs = read_frames_csv(out / "frames.csv")["v"]
    assert 0 < probs.missing.size < 30
    assert sorted([*probs.frames.tolist(), *probs.missing.tolist()]) == list(range(30))
    lines = (out / "frames.csv").read_text().splitlines()
    assert len(lines) == 1 + 30
    record = json.loads((out / "run.json").read_text())
    assert record["videos"][0]["frames_not_decoded"] == probs.missing.size
    assert record["videos"][0]["fps"] == pytest.approx(10.0)  # from the container
    assert (out / "v_timeline.png").is_file()


def test_exit_codes_are_documented_in_help_and_readme(capsys, monkeypatch) -> None:
    code, stdout, _ = vce_run(capsys, monkeypatch, "--help")
    assert code == 0
    text = " ".join(stdout.split())
    assert "Exit codes:" in text
    for number, _what in EXIT_CODES:
        assert re.search(rf"\b{number} ", text.split("Exit codes:")[1]), number
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("Exit codes of `vce-run`")[1][:1500]
    for number, _what in EXIT_CODES:
        assert f"| {number} |" in section


def test_help_shows_no_wrong_defaults_and_flags_take_no_value(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "150")
    _, stdout, _ = vce_run(capsys, monkeypatch, "--help")
    median = next(line for line in stdout.splitlines() if "--median" in line)
    assert "7" not in median and "calibrated" in median
    for flag in ("--fresh", "--overwrite", "--strict", "--allow-corrupt", "--plots", "--quiet", "--help"):
        line = next(line for line in stdout.splitlines() if flag in line)
        assert "<bool>" not in line, line


def test_no_arguments_prints_the_help(capsys, monkeypatch) -> None:
    code, stdout, err = vce_run(capsys, monkeypatch)
    assert "Usage:" in stdout + err and "Exit codes:" in stdout + err
    assert "Missing option" not in stdout + err and code == 2


def test_timeline_has_a_time_axis_a_probability_scale_and_shows_missing_frames() -> None:
    frames = np.array([0, 1, 2, 5, 6, 7])
    probs = np.full((6, len(LABELS)), 0.2)
    fig = timeline_figure(
        "v", frames, probs, [], np.full(len(LABELS), 0.5), missing=np.array([3, 4, 8]), fps=2.0
    )
    axes = fig.axes
    assert [t for t in axes[0].get_yticks()] == [0, 0.5, 1]
    top = [child for child in axes[0].get_children() if type(child).__name__ == "SecondaryAxis"]
    assert len(top) == 1 and "examination time" in top[0].get_xlabel()
    assert top[0].xaxis.get_major_formatter()(7200.0 + 61, 0) == "2:01:01"
    grey = [p for p in axes[0].patches if p.get_facecolor()[:3] == pytest.approx((0.55, 0.55, 0.55))]
    assert len(grey) == 2  # frames 3-4 and 8
    assert axes[0].get_xlim() == (0, 9)
    assert "3 frame(s) that could not be decoded" in fig._suptitle.get_text()
    no_fps = timeline_figure("v", frames, probs, [], np.full(len(LABELS), 0.5))
    assert not [c for c in no_fps.axes[0].get_children() if type(c).__name__ == "SecondaryAxis"]
    assert clock(59.6) == "0:01:00" and clock(3 * 3600 + 125, with_seconds=False) == "3:02"
    # round ticks: every second on a 3 s clip, every 30 min on a 4 h examination (labels h:mm)
    ticks, seconds = time_ticks(3.0)
    assert ticks.tolist() == [0, 1, 2, 3] and seconds
    ticks, seconds = time_ticks(4 * 3600.0)
    assert ticks.tolist() == [i * 1800.0 for i in range(9)] and not seconds


def test_frame_folders_get_a_time_axis_with_fps(
    tmp_path: Path, frame_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, frame_folder, "-b", bundle_dir, "-o", out, "--fps", 2)[0] == 0
    record = json.loads((out / "run.json").read_text())
    assert record["videos"][0]["fps"] == 2.0
    side = json.loads((out / "frames.provenance.json").read_text())
    assert side["fps"] == {"vid_b": 2.0}
    code, _, err = vce_run(
        capsys, monkeypatch, frame_folder, "-b", bundle_dir, "-o", tmp_path / "o2", "--fps", -1
    )
    assert code == 2 and "--fps must be a positive number" in err
