"""Inputs: videos, frame folders, folders of them; frame numbers; corrupt and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_testdata import SEQUENCE, colour_frames, write_folder, write_h264, write_video

from vce.runtime.errors import VCEError
from vce.runtime.sources import FolderSource, VideoSource, discover


def test_video_frames_are_decode_indices_and_decode_back(video_file: Path) -> None:
    (src,) = discover([video_file])
    assert isinstance(src, VideoSource) and src.video_id == "vid_a"
    slots = list(src.slots())
    assert [s.frame for s in slots] == list(range(len(SEQUENCE)))
    assert not any(s.corrupt for s in slots)
    # MJPG is lossy but close: the red frames decode red (BGR order from OpenCV)
    assert slots[10].image is not None and slots[10].image[..., 2].mean() > 180
    assert src.missing_at_end == 0


def test_folder_natural_order_and_numbers_from_file_names(tmp_path: Path) -> None:
    frames = colour_frames("krg")
    folder = tmp_path / "ukdd_navi_00051"
    write_folder(folder, frames, numbers=[2, 10, 100], pattern="frame_{}.PNG")
    (folder / "ukdd_navi_00051.csv").write_text("frame_file\n")  # sidecars are ignored
    (src,) = discover([folder])
    assert isinstance(src, FolderSource) and src.video_id == "ukdd_navi_00051"
    slots = list(src.slots())
    assert [s.frame for s in slots] == [2, 10, 100]
    assert [s.position for s in slots] == [0, 1, 2]
    assert slots[1].image is not None and slots[1].image[..., 2].mean() > 180  # red, BGR


def test_directory_of_videos_and_folders_sorted_by_id(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    write_video(root / "v10.avi", colour_frames("kk"))
    write_video(root / "v2.avi", colour_frames("kk"))
    write_folder(root / "f1", colour_frames("kk"))
    (root / "notes.txt").write_text("sidecar")
    (root / "empty_dir").mkdir()
    ids = [s.video_id for s in discover([root])]
    assert ids == ["f1", "v10", "v2"]  # sorted by id, as events.json


def test_corrupt_image_in_a_folder_is_reported_not_dropped(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "v", colour_frames("kkkk"))
    (folder / "frame_000002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    slots = list(FolderSource(folder).slots())
    assert [s.corrupt for s in slots] == [False, False, True, False]
    assert slots[2].frame == 2 and slots[2].image is None


def test_corrupt_frame_in_the_middle_of_a_video_is_counted(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.avi", colour_frames("k" * 30))
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = os.urandom(400)
    path.write_bytes(bytes(data))
    src = VideoSource(path)
    slots = list(src.slots())
    good = sum(not s.corrupt for s in slots)
    bad = sum(s.corrupt for s in slots) + src.missing_at_end
    assert 0 < good < 30 and bad == 30 - good  # every announced frame is accounted for


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.mp4", "no such file or folder"),
        (lambda p: _write(p / "empty.mp4", b""), "empty"),
        (lambda p: _write(p / "noise.mp4", os.urandom(4096)), "unreadable or corrupt video"),
        (lambda p: _write(p / "doc.pdf", b"%PDF"), "not a video file"),
        (lambda p: _mkdir(p / "nothing"), "no videos and no frame folders"),
    ],
)
def test_bad_inputs_raise_one_clear_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(VCEError, match=message):
        discover([make(tmp_path)])


def test_truncated_mp4_and_non_images_in_a_folder(tmp_path: Path) -> None:
    mp4 = write_video(tmp_path / "t.mp4", colour_frames("k" * 20), fourcc="mp4v")
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(VCEError, match="unreadable or corrupt"):
        discover([mp4])
    folder = write_folder(tmp_path / "f", colour_frames("kk"))
    (folder / "frame_000009.exe").write_bytes(b"MZ")
    with pytest.raises(VCEError, match="not an image file"):
        discover([folder])


def test_duplicate_video_ids_are_refused(tmp_path: Path) -> None:
    a = (
        write_video(tmp_path / "a" / "same.avi", colour_frames("k"), fps=5)
        if _mkdir(tmp_path / "a")
        else None
    )
    b = write_folder(tmp_path / "b" / "same", colour_frames("k"))
    with pytest.raises(VCEError, match="is taken by"):
        discover([a, b])  # type: ignore[list-item]


def test_fingerprint_changes_with_the_input(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "v", colour_frames("kk"))
    before = FolderSource(folder).fingerprint()
    assert FolderSource(folder).fingerprint() == before
    write_folder(folder, colour_frames("kkk"))
    assert FolderSource(folder).fingerprint() != before
    assert np.all(np.diff([s.frame for s in FolderSource(folder).slots()]) == 1)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _decoded(src: VideoSource, **kw: object) -> list[tuple[int, int, bool, str | None]]:
    import hashlib

    return [
        (
            s.position,
            s.frame,
            s.corrupt,
            None if s.image is None else hashlib.sha256(s.image.tobytes()).hexdigest(),
        )
        for s in src.slots(**kw)  # type: ignore[arg-type]
    ]


def _moving(n: int, size: int = 96) -> np.ndarray:
    """Frames that differ from each other (a moving gradient + noise): real inter-frame prediction."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        base = np.stack([(xx + 3 * t) % 256, (yy + 2 * t) % 256, (xx + yy + t) % 256], -1)
        out[t] = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255)
    return out


@pytest.mark.parametrize("codec", ["mp4v", "h264"])
def test_threaded_decode_gives_the_sequential_frames_and_numbers(tmp_path: Path, codec: str) -> None:
    """FFmpeg's own decoding threads: the same images, numbers and order as one thread."""
    frames = _moving(60)
    if codec == "h264":
        pytest.importorskip("av", reason="PyAV writes the H.264 test video (pip install av)")
        path = write_h264(tmp_path / "v.mp4", frames)
    else:
        path = write_video(tmp_path / "v.mp4", frames, fourcc="mp4v")
    src = VideoSource(path)
    cap = src._open(4)
    assert cap.get(cv2.CAP_PROP_N_THREADS) == 4  # the threads really are asked for
    cap.release()
    sequential = _decoded(src, threads=1)
    assert [s[0] for s in sequential] == list(range(60)) and not any(s[2] for s in sequential)
    assert len({s[3] for s in sequential}) == 60  # 60 different images
    assert _decoded(src, threads=4) == sequential
    assert _decoded(src) == sequential  # OpenCV's default (one thread per CPU)
    strided = _decoded(src, start=7, want=lambda pos: pos % 5 == 0, threads=3)
    assert [s[:3] for s in strided] == [s[:3] for s in sequential[7:]]
    assert [s[3] for s in strided if s[3]] == [s[3] for s in sequential[7:] if s[0] % 5 == 0]


def test_small_frames_decode_on_one_thread_large_ones_on_ffmpegs(tmp_path: Path) -> None:
    src = VideoSource(write_video(tmp_path / "v.avi", colour_frames("kr", size=48)))
    assert src.frame_size == (48, 48)
    assert src.decoder_threads() == 1 and src.decoder_threads(3) == 3
    src.frame_size = (1920, 1080)  # as a 1080p header says
    assert src.decoder_threads() == 0  # OpenCV's default: one per CPU
