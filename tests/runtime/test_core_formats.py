"""Labels, per-frame CSV, event JSON, label CSVs, frame folders, bundle manifest, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from runtime_testdata import make_onnx

from vce.runtime.atomic import atomic_path, write_json
from vce.runtime.bundle import MANIFEST, Bundle, Manifest
from vce.runtime.errors import VCEError
from vce.runtime.formats.eventjson import read_events_json, write_events_json
from vce.runtime.formats.framefolder import list_frames, natural_key
from vce.runtime.formats.framescsv import VideoFrames, align, read_frames_csv, write_frames_csv
from vce.runtime.formats.labelcsv import read_label_csv, read_labels_dir, write_label_csv
from vce.runtime.labels import GALAR_LABELS, LABELS, map_galar_columns


def test_labels_are_the_reference_17_and_galar_29() -> None:
    assert len(LABELS) == 17 and len(GALAR_LABELS) == 29 and len(set(GALAR_LABELS)) == 29
    assert LABELS[0] == "mouth" and LABELS[3] == "small intestine" and LABELS[-1] == "ulcer"
    assert map_galar_columns(["frame", "Small_Intestine", "bubbles", "ulcer "]) == {
        "Small_Intestine": 3,
        "ulcer ": 16,
    }


def test_frames_csv_round_trip_and_sorting(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = rng.random((5, 17))
    out = write_frames_csv(tmp_path / "f.csv", [VideoFrames("b,1", [4, 3, 2, 1, 0], p)])
    back = read_frames_csv(out)["b,1"]
    assert back.frames.tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(back.values, p[::-1], atol=1e-6)
    labels = {"b,1": VideoFrames("b,1", np.arange(6), np.zeros((6, 17)))}
    [(vid, frames, pp, yy)] = align({"b,1": back}, labels)
    assert (
        vid == "b,1"
        and frames.tolist() == [0, 1, 2, 3, 4]
        and yy.shape == (5, 17)
        and np.allclose(pp, back.values)
    )


def test_frames_csv_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("video,frame,mouth\nv,0,0.1\n")
    with pytest.raises(VCEError, match="missing column"):
        read_frames_csv(bad)
    with pytest.raises(VCEError, match="no such file"):
        read_frames_csv(tmp_path / "nope.csv")
    header = ",".join(["video", "frame", *LABELS])
    bad.write_text(f"{header}\nv,0,{','.join(['0.1'] * 17)}\nv,1,nan,{','.join(['0.1'] * 16)}\n")
    with pytest.raises(VCEError, match=r"bad\.csv: video v has NaN or infinite values \(first at frame 1\)"):
        read_frames_csv(bad)


@pytest.mark.parametrize(
    "events",
    [
        5,  # not a list
        ["not an event"],
        [{"start": 0, "end": 3, "label": "colon"}],  # a bare string: the official check reads its letters
        [{"start": 0, "end": 3, "label": None}],
        [{"start": 0.5, "end": 3, "label": ["colon"]}],
        [{"start": "0", "end": 3, "label": ["colon"]}],
        [{"start": True, "end": 3, "label": ["colon"]}],
        [{"end": 3, "label": ["colon"]}],
    ],
)
def test_malformed_event_json_is_one_clear_error(tmp_path: Path, events: object) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"videos": [{"video_id": "v", "events": events}]}))
    with pytest.raises(VCEError, match=r"e\.json: video v"):
        read_events_json(path, check_labels=False)


def test_event_json_round_trip_sorted_and_checked(tmp_path: Path) -> None:
    path = write_events_json(
        tmp_path / "e.json",
        {"v2": [{"start": 0, "end": 4, "label": ["colon"]}], "v1": [{"start": 1, "end": 1, "label": []}]},
    )
    data = json.loads(path.read_text())
    assert [v["video_id"] for v in data["videos"]] == ["v1", "v2"]
    assert read_events_json(path)["v2"] == [{"start": 0, "end": 4, "label": ["colon"]}]
    (tmp_path / "f.json").write_text(
        '{"videos": [{"video_id": 7, "events": [{"start": 2.0, "end": 5, "label": []}]}]}'
    )
    assert read_events_json(tmp_path / "f.json") == {"7": [{"start": 2, "end": 5, "label": []}]}
    with pytest.raises(VCEError, match="not RARE-VISION labels"):
        write_events_json(tmp_path / "x.json", {"v": [{"start": 0, "end": 1, "label": ["bubbles"]}]})
    assert not (tmp_path / "x.json").exists()
    (tmp_path / "y.json").write_text(
        '{"videos": [{"video_id": "a", "events": [{"start": 3, "end": 1, "label": []}]}]}'
    )
    with pytest.raises(VCEError, match="before it starts"):
        read_events_json(tmp_path / "y.json")


def test_label_csv_galar_layouts(tmp_path: Path) -> None:
    y = np.zeros((4, 17))
    y[1:3, LABELS.index("polyp")] = 1
    write_label_csv(tmp_path / "v1.csv", np.array([3, 2, 1, 0]), y)
    v = read_label_csv(tmp_path / "v1.csv")
    assert v.frames.tolist() == [0, 1, 2, 3] and v.values[:, LABELS.index("polyp")].tolist() == [0, 1, 1, 0]
    (tmp_path / "v2.csv").write_text("index,section,Stomach,good view,dirt\n0,upper,1,1,0\n1,upper,0,0,1\n")
    (tmp_path / "metadata.csv").write_text("File Name,Capsule System,Gender ,Age\n")
    both = read_labels_dir(tmp_path)
    assert sorted(both) == ["v1", "v2"]
    assert both["v2"].values[:, LABELS.index("stomach")].tolist() == [1, 0]
    (tmp_path / "t.csv").write_text("frame_file,ulcer\nframe_000010.png,1\n")
    assert read_label_csv(tmp_path / "t.csv").frames.tolist() == [10]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("frame,stomack\n0,1\n", "unknown label column"),
        ("frame,stomach\n", "empty"),
        ("section,stomach\nx,1\n", "no frame column"),
        ("frame,stomach\n0,2\n", "must be 0 or 1"),
        ("frame,stomach\n0,1\n0,0\n", "listed twice"),
    ],
)
def test_label_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "v.csv").write_text(content)
    with pytest.raises(VCEError, match=message):
        read_label_csv(tmp_path / "v.csv")


def test_frame_folder_natural_order_and_errors(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        (tmp_path / f"frame_{n}.PNG").write_bytes(b"")
    (tmp_path / "video.csv").write_text("frame_file\n")
    assert [f.frame for f in list_frames(tmp_path)] == [1, 2, 10]
    assert sorted(["f10", "f2"], key=natural_key) == ["f2", "f10"]
    (tmp_path / "notes.docx").write_bytes(b"")
    with pytest.raises(VCEError, match="not an image file"):
        list_frames(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VCEError, match="no image frames"):
        list_frames(empty)


def test_bundle_manifest_hashes_and_schema(tmp_path: Path) -> None:
    b = Bundle.create(tmp_path / "b")
    make_onnx(b.root / "model.onnx")
    b.add_file("model.onnx", "fp32")
    b.save()
    loaded = Bundle.load(b.root)
    assert loaded.graph("fp32").name == "model.onnx"
    assert loaded.manifest.thresholds_array().tolist() == [0.5] * 17
    assert loaded.manifest.postprocess_config().median == 7
    assert loaded.manifest.preprocess_spec().image_size == 224
    with open(b.root / "model.onnx", "ab") as fh:
        fh.write(b"\0")  # tampered
    with pytest.raises(VCEError, match="does not match the manifest"):
        Bundle.load(b.root)
    (b.root / "model.onnx").unlink()
    with pytest.raises(VCEError, match="missing"):
        Bundle.load(b.root)
    data = Manifest().to_dict() | {"schema_version": 99}
    write_json(b.root / MANIFEST, data)
    with pytest.raises(VCEError, match="schema version"):
        Bundle.load(b.root)
    with pytest.raises(VCEError, match="not a vce bundle"):
        Bundle.load(tmp_path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_frames_csv_of_a_long_video_is_written_chunk_by_chunk_with_the_same_bytes(tmp_path: Path) -> None:
    """Rows are turned into Python numbers a chunk at a time; the file is row-for-row the plain format."""
    from vce.runtime.formats import framescsv
    from vce.runtime.formats.framescsv import VideoFrames, write_frames_csv

    n = 2 * framescsv._CHUNK + 3
    rng = np.random.default_rng(0)
    values = rng.random((n, 17)).astype(np.float32)
    frames = np.arange(n, dtype=np.int64) * 3
    write_frames_csv(tmp_path / "f.csv", [VideoFrames("v", frames, values)])
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert len(lines) == n + 1
    for i in (0, framescsv._CHUNK - 1, framescsv._CHUNK, n - 1):
        assert lines[i + 1] == ",".join(["v", str(frames[i]), *(f"{x:.6g}" for x in values[i].tolist())])


def test_timeline_preload_imports_matplotlib_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    """vce-run starts matplotlib's import early (the plots come at the end); without it, nothing."""
    import subprocess
    import sys

    code = (
        "import sys; from vce.runtime.formats.timeline import preload; "
        "assert 'matplotlib.figure' not in sys.modules; t = preload(); t.join(); "
        "print('matplotlib.figure' in sys.modules, t.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "vce-matplotlib-import"]
    import importlib.util

    from vce.runtime.formats import timeline

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert timeline.preload() is None
