"""Live sources: a folder being written, an OpenCV stream, the stdin frame stream; the recorder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_testdata import grow_in_thirds

from vce.runtime.errors import VCEError
from vce.runtime.formats.framefolder import list_frames
from vce.runtime.live.sources import (
    END_MARKER,
    LiveFolderSource,
    LiveStreamSource,
    StdinSource,
    _next_name,
    file_complete,
    write_end,
    write_frame,
)
from vce.runtime.sources import FrameSlot, read_image
from vce.train.recorder import record_folder, record_stream

FAST = {"poll": (0.005, 0.05)}


def make_frames(folder: Path, n: int, start: int = 0, ext: str = ".png") -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    images = []
    for i in range(start, start + n):
        img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"frame_{i:06d}{ext}"), img)
        images.append(read_image(folder / f"frame_{i:06d}{ext}"))
    return images


def collect(source: Iterable[FrameSlot], into: list[FrameSlot]) -> threading.Thread:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            into.extend(source)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.errors = errors  # type: ignore[attr-defined]
    t.start()
    return t


def test_folder_recorded_live_equals_the_folder_offline(tmp_path: Path) -> None:
    images = make_frames(tmp_path / "src", 14)
    live = tmp_path / "live"
    got: list[FrameSlot] = []
    source = LiveFolderSource(live, idle_timeout=5.0, corrupt_timeout=5.0, **FAST)
    t = collect(source, got)
    # half-written files, a pause in the middle, then the end marker
    record_folder(tmp_path / "src", live, fps=60, pause_at=7, pause=0.3)
    t.join(10)
    assert not t.is_alive() and not t.errors
    assert source.ended_by == "marker" and source.late == []
    assert [s.frame for s in got] == [f.frame for f in list_frames(live)] == list(range(14))
    assert [s.position for s in got] == list(range(14))
    assert not any(s.corrupt for s in got)
    for slot, image in zip(got, images, strict=True):
        assert np.array_equal(slot.image, image)


def test_half_written_file_waits_until_complete(tmp_path: Path) -> None:
    (images := make_frames(tmp_path / "src", 1))
    data = (tmp_path / "src" / "frame_000000.png").read_bytes()
    live = tmp_path / "live"
    live.mkdir()
    (live / "frame_000000.png").write_bytes(data[: len(data) // 2])
    got: list[FrameSlot] = []
    source = LiveFolderSource(live, idle_timeout=5.0, corrupt_timeout=5.0, **FAST)
    t = collect(source, got)
    time.sleep(0.4)
    assert got == []  # incomplete: not read, not corrupt
    with open(live / "frame_000000.png", "ab") as fh:
        fh.write(data[len(data) // 2 :])
    (live / END_MARKER).touch()
    t.join(5)
    assert len(got) == 1 and np.array_equal(got[0].image, images[0])


def test_frame_that_stays_corrupt_is_marked_after_the_timeout(tmp_path: Path) -> None:
    live = tmp_path / "live"
    make_frames(live, 1, start=2)
    (live / "frame_000001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # never completes
    (live / END_MARKER).touch()
    warnings: list[str] = []
    source = LiveFolderSource(live, idle_timeout=5.0, corrupt_timeout=0.4, warn=warnings.append, **FAST)
    t0 = time.monotonic()
    got = list(source)
    assert time.monotonic() - t0 >= 0.4
    assert [(s.frame, s.corrupt) for s in got] == [(1, True), (2, False)]
    assert got[0].image is None and any("frame_000001.png" in w and "corrupt" in w for w in warnings)


def test_idle_timeout_ends_and_other_files_are_ignored(tmp_path: Path) -> None:
    live = tmp_path / "live"
    make_frames(live, 2)
    (live / "frame_000009.png.part").write_bytes(b"recorder temp file")
    (live / "labels.csv").write_text("frame\n")
    (live / ".hidden.png").write_bytes(b"x")
    (live / "frame_000005.png").mkdir()  # a folder is not a frame
    t0 = time.monotonic()
    source = LiveFolderSource(live, idle_timeout=0.3, **FAST)
    assert [s.frame for s in source] == [0, 1]
    assert source.ended_by == "idle" and 0.3 <= time.monotonic() - t0 < 3


def test_late_frame_is_skipped_and_reported(tmp_path: Path) -> None:
    live = tmp_path / "live"
    make_frames(live, 1, start=5)
    warnings: list[str] = []
    got: list[FrameSlot] = []
    source = LiveFolderSource(live, idle_timeout=5.0, warn=warnings.append, **FAST)
    t = collect(source, got)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    make_frames(live, 1, start=3)  # numbered before the frame already read
    make_frames(live, 1, start=6)
    (live / END_MARKER).touch()
    t.join(5)
    assert [s.frame for s in got] == [5, 6]
    assert source.late == ["frame_000003.png"] and "out of order" in warnings[0]


def test_folder_that_never_appears_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VCEError, match=r"no such frame folder after waiting 0 s; start the recorder"):
        list(LiveFolderSource(tmp_path / "nowhere", idle_timeout=0.2, **FAST))
    with pytest.raises(VCEError, match="no such frame folder; start the recorder"):
        list(LiveFolderSource(tmp_path / "nowhere", **FAST))
    (tmp_path / "file").write_text("x")
    with pytest.raises(VCEError, match="not a folder"):
        list(LiveFolderSource(tmp_path / "file", idle_timeout=0.2, **FAST))


def test_folder_rules_are_the_offline_ones(tmp_path: Path) -> None:
    live = tmp_path / "live"
    make_frames(live, 1)
    cv2.imwrite(str(live / "cover.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(VCEError, match="no frame number"):
        list(LiveFolderSource(live, idle_timeout=0.2, **FAST))


def test_stop_ends_the_iteration_without_waiting(tmp_path: Path) -> None:
    live = tmp_path / "live"
    make_frames(live, 1)
    source = LiveFolderSource(live, idle_timeout=60, poll=(0.5, 0.5))
    got: list[FrameSlot] = []
    t = collect(source, got)
    time.sleep(0.2)
    t0 = time.monotonic()
    source.stop()
    t.join(5)
    assert source.ended_by == "stopped" and time.monotonic() - t0 < 1 and len(got) == 1


def test_next_name_and_completeness_markers(tmp_path: Path) -> None:
    assert _next_name("frame_000123.png") == "frame_000124.png"
    assert _next_name("img9.jpg") == "img10.jpg"
    assert _next_name("v2_frame_0099.PNG") == "v2_frame_0100.PNG"
    assert _next_name("cover.png") is None
    make_frames(tmp_path, 1, ext=".jpg")
    make_frames(tmp_path, 1, ext=".bmp")
    make_frames(tmp_path, 1, ext=".webp")
    for ext in (".jpg", ".bmp", ".webp"):
        p = tmp_path / f"frame_000000{ext}"
        data = p.read_bytes()
        assert file_complete(p, len(data)) is True
        p.write_bytes(data[: len(data) - 3])
        assert file_complete(p, len(data) - 3) is False
    cv2.imwrite(str(tmp_path / "frame_000000.tif"), np.zeros((4, 4, 3), np.uint8))
    assert file_complete(tmp_path / "frame_000000.tif", 10) is None  # no marker: size must settle


def test_a_large_folder_is_listed_rarely(tmp_path: Path) -> None:
    """Frames named in sequence are found by name: the folder is not listed once per frame."""
    live = tmp_path / "live"
    live.mkdir()
    for i in range(3000):  # a long examination's worth of earlier (non-image) files
        (live / f"note_{i}.txt").write_text("")
    src = tmp_path / "src"
    make_frames(src, 40)
    got: list[FrameSlot] = []
    source = LiveFolderSource(live, idle_timeout=5.0, **FAST)
    t = collect(source, got)
    record_folder(src, live, fps=100, half_written=False)
    t.join(10)
    assert [s.frame for s in got] == list(range(40))
    assert source.full_scans < 10  # 2 when measured: the first listing and the one after the marker


# --- OpenCV streams ----------------------------------------------------------------------------------


def write_avi(path: Path, n: int) -> bytes:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((48, 64, 3), (i * 6) % 255, np.uint8))
    w.release()
    return path.read_bytes()


def test_stream_source_reads_a_finished_file(tmp_path: Path) -> None:
    write_avi(tmp_path / "cam.avi", 12)
    source = LiveStreamSource(str(tmp_path / "cam.avi"))
    got = list(source)
    assert [s.frame for s in got] == list(range(12)) and source.ended_by == "eof"
    assert source.video_id == "cam" and got[0].image.shape == (48, 64, 3)


def test_stream_source_follows_a_growing_file(tmp_path: Path) -> None:
    data = write_avi(tmp_path / "full.avi", 30)
    grow = tmp_path / "grow.avi"
    grow_in_thirds(data, grow)
    got = list(LiveStreamSource(str(grow), idle_timeout=1.5))
    assert len(got) == 30


def test_stream_that_never_appears_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VCEError, match="no such video file after waiting 0 s"):
        list(LiveStreamSource(str(tmp_path / "none.avi"), idle_timeout=0.2, **FAST))
    (tmp_path / "junk.avi").write_bytes(b"not a video at all" * 10)
    with pytest.raises(VCEError, match="OpenCV cannot open this stream"):
        list(LiveStreamSource(str(tmp_path / "junk.avi")))
    assert LiveStreamSource("0").video_id == "camera0"
    assert LiveStreamSource("rtsp://cam.local:554/live").video_id == "cam.local_554_live"


# --- the stdin frame stream ----------------------------------------------------------------------


def encoded(images: list[np.ndarray]) -> list[bytes]:
    return [cv2.imencode(".png", im)[1].tobytes() for im in images]


def test_stdin_stream_round_trip_with_a_corrupt_frame(tmp_path: Path) -> None:
    images = make_frames(tmp_path / "src", 3)
    buf = io.BytesIO()
    blobs = encoded(images)
    for data in (blobs[0], b"garbage, not an image", blobs[1], blobs[2]):
        write_frame(buf, data)
    write_end(buf)
    buf.write(b"anything after the end is not read")
    source = StdinSource(io.BytesIO(buf.getvalue()))
    got = list(source)
    assert [(s.frame, s.corrupt) for s in got] == [(0, False), (1, True), (2, False), (3, False)]
    for slot, image in zip([got[0], got[2], got[3]], images, strict=True):
        assert np.array_equal(slot.image, image)
    assert source.ended_by == "marker"


def test_stdin_eof_at_a_boundary_ends_and_mid_frame_is_one_clear_error(tmp_path: Path) -> None:
    blobs = encoded(make_frames(tmp_path / "src", 3))
    buf = io.BytesIO()
    for data in blobs:
        write_frame(buf, data)
    whole = buf.getvalue()
    source = StdinSource(io.BytesIO(whole))
    assert len(list(source)) == 3 and source.ended_by == "eof"
    got: list[FrameSlot] = []
    with pytest.raises(
        VCEError, match=r"the stream ended in the middle of frame 2 \(10 of \d+ image bytes\); the 2 complete"
    ):
        got.extend(StdinSource(io.BytesIO(whole[: len(whole) - len(blobs[2]) + 10])))
    assert len(got) == 2  # everything complete before the cut was yielded
    with pytest.raises(VCEError, match=r"middle of frame 0 \(2 of 4 length bytes\)"):
        list(StdinSource(io.BytesIO(b"\x00\x01")))
    with pytest.raises(VCEError, match="not the vce frame stream"):
        list(StdinSource(io.BytesIO(b"\x7f\xff\xff\xff....")))


def test_stdin_pipe_idle_timeout_and_recorder_stream(tmp_path: Path) -> None:
    src = tmp_path / "src"
    images = make_frames(src, 4)
    r, w = os.pipe()
    with os.fdopen(w, "wb") as out:
        record_stream(src, out, fps=200, end_marker=False)  # fits in the pipe's buffer
        reader = os.fdopen(r, "rb")
        source = StdinSource(reader, idle_timeout=0.3, poll=(0.01, 0.05))
        t0 = time.monotonic()
        got = list(source)  # the writer is still open: the stream ends by the idle timeout
        assert source.ended_by == "idle" and time.monotonic() - t0 >= 0.3
    reader.close()
    assert [s.frame for s in got] == [0, 1, 2, 3]
    for slot, image in zip(got, images, strict=True):
        assert np.array_equal(slot.image, image)


def test_synth_live_cli_writes_a_recording(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "vce-train"
    live = tmp_path / "live"
    subprocess.run(
        [str(exe), "synth", str(tmp_path / "data"), "--videos", "1", "--frames", "16", "--size", "64",
         "--live", str(live), "--fps", "200"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert (live / END_MARKER).is_file()
    assert [f.path.read_bytes() for f in list_frames(live)] == [
        f.path.read_bytes() for f in list_frames(tmp_path / "data" / "frames" / "synth_000")
    ]
    out = subprocess.run(
        [str(exe), "synth", str(tmp_path / "data2"), "--videos", "1", "--frames", "16", "--size", "64",
         "--live", "-", "--fps", "200"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert len(list(StdinSource(io.BytesIO(out.stdout)))) == 16


def test_live_modules_import_without_torch() -> None:
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'timm', 'open_clip', 'torchvision'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import vce.runtime.online, vce.runtime.live.sources, vce.runtime.live.keepup, vce.runtime.live.status\n"
        "import vce.train.recorder\n"
        "print('OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "OK", proc.stderr


def test_a_folder_created_while_waiting_is_not_refused(tmp_path: Path, monkeypatch) -> None:
    """The recorder's mkdir can land between the source's two checks (is it a folder? does it exist?)."""
    live = tmp_path / "live"
    source = LiveFolderSource(live, idle_timeout=5)
    real = Path.is_dir
    calls = []

    def is_dir(path: Path) -> bool:
        if path == live and not calls:  # the first check sees no folder; then the recorder makes it
            calls.append(path)
            live.mkdir()
            return False
        return real(path)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    source._wait_for_folder()
    assert calls == [live]
    (tmp_path / "file").write_text("x")
    with pytest.raises(VCEError, match="not a folder"):
        LiveFolderSource(tmp_path / "file", idle_timeout=5)._wait_for_folder()
