"""Bad numeric input, decompression bombs and full disks (issue 11): one clear line each, nothing
half-written, earlier outputs intact."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from runtime_testdata import SEQUENCE, colour_frames, make_bundle, write_folder
from trust_testdata import one_error_line, run_cli

import vce.runtime.atomic as atomic
from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.formats.eventjson import read_events_json, write_events_json
from vce.runtime.formats.framescsv import VideoFrames, write_frames_csv
from vce.runtime.formats.imageheader import MAX_IMAGE_PIXELS, image_dimensions
from vce.runtime.formats.labelcsv import read_label_csv
from vce.runtime.labels import LABELS
from vce.runtime.live.sources import StdinSource, write_frame
from vce.runtime.sources import decode_image, read_image

# --- event JSON --------------------------------------------------------------------------------------


def _events(tmp_path: Path, event: dict[str, Any], video_id: Any = "v1") -> Path:
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"videos": [{"video_id": video_id, "events": [event]}]}))
    return path


@pytest.mark.parametrize(
    "event",
    [
        {"start": 0, "end": 1e300, "label": ["colon"]},
        {"start": 0, "end": 2**70, "label": ["colon"]},
        {"start": -5, "end": 3, "label": ["colon"]},
    ],
)
def test_frames_out_of_range_in_an_event_json_are_one_line(event: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(VCEError, match="between 0 and"):
        read_events_json(_events(tmp_path, event))


def test_end_1e300_through_vce_eval_score(tmp_path: Path, capsys, monkeypatch) -> None:
    from vce.calibration.cli import eval_main

    pred = _events(tmp_path, {"start": 0, "end": 1e300, "label": ["colon"]})
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps({"videos": [{"video_id": "v1", "events": [{"start": 0, "end": 9, "label": ["colon"]}]}]})
    )
    code, _, err = run_cli(capsys, monkeypatch, eval_main, "vce-eval", "score", pred, gt)
    assert code == 2 and "e.json" in one_error_line(err, "vce-eval")


@pytest.mark.parametrize("label", [[1], [["colon"]], [None]])
def test_labels_must_be_strings(label: Any, tmp_path: Path) -> None:
    """Not str()-ed into a label: a nested list 900 deep would be a RecursionError."""
    with pytest.raises(VCEError, match="must be a label name"):
        read_events_json(_events(tmp_path, {"start": 0, "end": 1, "label": label}), check_labels=False)


@pytest.mark.parametrize("video_id", [{"a": 1}, ["v1"], None, True, 1.5])
def test_a_video_id_must_be_a_string_or_an_integer(video_id: Any, tmp_path: Path) -> None:
    with pytest.raises(VCEError, match="video_id"):
        read_events_json(_events(tmp_path, {"start": 0, "end": 1, "label": []}, video_id))


# --- label CSVs --------------------------------------------------------------------------------------


def _label_csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "v.csv"
    path.write_text("frame," + ",".join(LABELS) + "\n" + body)
    return path


def test_a_blank_label_cell_is_an_error_not_0(tmp_path: Path) -> None:
    row = ["0"] * len(LABELS)
    row[3] = ""
    with pytest.raises(VCEError, match=r"v\.csv:2: label 'small intestine' is blank"):
        read_label_csv(_label_csv(tmp_path, "7," + ",".join(row) + "\n"))


@pytest.mark.parametrize(
    ("frame", "expect"),
    [("²", "cannot read a frame number"), ("frame_99999999999999999999999", "between 0 and")],
)
def test_frame_numbers_in_a_label_csv_are_checked(frame: str, expect: str, tmp_path: Path) -> None:
    with pytest.raises(VCEError, match=expect):
        read_label_csv(_label_csv(tmp_path, f"{frame}," + ",".join(["0"] * len(LABELS)) + "\n"))


def test_a_header_only_or_oversized_label_csv_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(VCEError, match="no frames listed"):
        read_label_csv(_label_csv(tmp_path, ""))
    with pytest.raises(VCEError, match="not a valid CSV"):
        read_label_csv(_label_csv(tmp_path, "0," + "1" * 200_000 + "\n"))


# --- decompression bombs -------------------------------------------------------------------------------


def _png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )


def _jpeg_header(w: int, h: int) -> bytes:
    app0 = b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof = struct.pack(">BHHB", 8, h, w, 3) + b"\x01\x11\0\x02\x11\0\x03\x11\0"
    return (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", len(app0) + 2)
        + app0
        + b"\xff\xc0"
        + struct.pack(">H", len(sof) + 2)
        + sof
        + b"\xff\xd9"
    )


def _bmp_header(w: int, h: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


def _tiff_header(w: int, h: int) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\0" + struct.pack("<I", 8) + ifd


def _webp_header(w: int, h: int) -> bytes:
    vp8x = b"\x00\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


HEADERS = {
    "png": _png_header,
    "jpg": _jpeg_header,
    "bmp": _bmp_header,
    "tif": _tiff_header,
    "webp": _webp_header,
}


@pytest.mark.parametrize("fmt", sorted(HEADERS))
def test_a_decompression_bomb_is_refused_from_its_header(fmt: str, tmp_path: Path) -> None:
    """A tiny file that declares 16000 x 16000 pixels (768 MB decoded) is refused before decoding."""
    side = 16000  # below WebP's own maximum, 16383
    path = tmp_path / f"frame_000001.{fmt}"
    path.write_bytes(HEADERS[fmt](side, side))
    assert image_dimensions(path.read_bytes()) == (side, side)
    with pytest.raises(VCEError, match=rf"frame_000001\.{fmt}: the image is 16000x16000 pixels"):
        read_image(path)
    with pytest.raises(VCEError, match=r"^stdin: frame 7: the image is 16000x16000 pixels"):
        decode_image(path.read_bytes(), "stdin: frame 7")  # a frame of a stream: the same check


def test_a_bomb_on_the_stdin_frame_stream_is_one_error_before_decoding() -> None:
    stream = io.BytesIO()
    write_frame(stream, _png_header(16000, 16000))
    stream.seek(0)
    with pytest.raises(VCEError, match=r"^stdin: frame 0: the image is 16000x16000 pixels"):
        list(StdinSource(stream))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_real_images_are_measured_and_decoded(ext: str, tmp_path: Path) -> None:
    """The header readers agree with OpenCV's encoders (every suffix a frame folder accepts)."""
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / f"f{ext}"
    assert cv2.imwrite(str(path), image)
    assert image_dimensions(path.read_bytes()) == (53, 37)
    decoded = read_image(path)
    assert decoded is not None and decoded.shape == (37, 53, 3)


def test_the_limit_allows_8k_frames() -> None:
    assert 7680 * 4320 <= MAX_IMAGE_PIXELS < 16000 * 16000


def test_a_bomb_in_a_frame_folder_is_one_line_naming_the_file(tmp_path: Path, capsys, monkeypatch) -> None:
    from vce.runtime.cli import main

    folder = write_folder(tmp_path / "vid", colour_frames(SEQUENCE[:6]))
    (folder / "frame_000003.png").write_bytes(_png_header(40000, 40000))
    bundle = make_bundle(tmp_path / "bundle")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, monkeypatch, main, "vce-run", folder, "-b", bundle, "-o", out, "-q")
    line = one_error_line(err, "vce-run")
    assert code == 2 and "frame_000003.png: the image is 40000x40000 pixels" in line
    assert not (out / "frames.csv").exists()


# --- a full disk -------------------------------------------------------------------------------------


class _FullDisk:
    """A file whose write fails as write(2) does on a full disk (ENOSPC: "The device containing the
    file referred to by fd has no room for the data", man 2 write): Python raises OSError(ENOSPC)."""

    def __init__(self, path: Any, *args: Any, **kwargs: Any) -> None:
        self.path = str(path)
        self._fh = open(path, *args, **kwargs)  # noqa: SIM115

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def test_enospc_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "events.json"
    write_events_json(target, {"v": []})
    before = target.read_bytes()
    monkeypatch.setattr(atomic, "open", _FullDisk, raising=False)
    with pytest.raises(VCEError) as exc:
        write_json(target, {"x": 1})
    message = str(exc.value)
    assert message.startswith(f"cannot write {target}: No space left on device") and "\n" not in message
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.json"]


def test_enospc_during_vce_run_keeps_the_earlier_outputs(tmp_path: Path, capsys, monkeypatch) -> None:
    from vce.runtime.cli import main

    probs = tmp_path / "probs.csv"
    rng = np.random.default_rng(0)
    write_frames_csv(probs, [VideoFrames("v1", np.arange(30), rng.random((30, len(LABELS))))])
    out = tmp_path / "out"
    args = ["--from-probs", probs, "-o", out, "--no-plots", "--thresholds", "0.5", "-q"]
    assert run_cli(capsys, monkeypatch, main, "vce-run", *args)[0] == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"events.json", "frames.csv"} <= set(earlier)

    def full_for_events(path: Any, *a: Any, **kw: Any) -> Any:  # the disk fills up at events.json
        return _FullDisk(path, *a, **kw) if ".events.json." in str(path) else open(path, *a, **kw)

    monkeypatch.setattr(atomic, "open", full_for_events, raising=False)
    code, _, err = run_cli(capsys, monkeypatch, main, "vce-run", *args, "--median", "3", "--overwrite")
    line = one_error_line(err, "vce-run")
    assert code == 2 and f"cannot write {out / 'events.json'}: No space left on device" in line
    now = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {k: now.get(k) for k in ("events.json", "frames.csv")} == {
        k: earlier[k] for k in ("events.json", "frames.csv")
    }
