"""Hostile video names in the per-frame CSV: forged rows, spreadsheet formulas, colliding timelines."""

from __future__ import annotations

import contextlib
import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_testdata import colour_frames, write_folder

from vce.runtime.cli import main
from vce.runtime.errors import VCEError
from vce.runtime.formats.eventjson import read_events_json
from vce.runtime.formats.framescsv import (
    VideoFrames,
    neutralise,
    read_frames_csv,
    unneutralise,
    write_frames_csv,
)
from vce.runtime.formats.timeline import timeline_names
from vce.runtime.labels import LABELS

ONES = ",".join(["1"] * len(LABELS))
#: a folder name that, quoted by hand, closes its field, ends the row and forges 4 rows of "victim"
FORGED = (
    'evil",0,' + ",".join(["0"] * len(LABELS)) + "".join(f"\nvictim,{i},{ONES}" for i in range(4)) + '\n"x'
)


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: object) -> int:
    monkeypatch.setattr(sys, "argv", ["vce-run", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    capsys.readouterr()
    return int(exc.value.code or 0)


def test_a_folder_name_cannot_forge_rows_for_another_video(
    tmp_path: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    # one frame: the name is written once, so hand quoting would yield rows evil/0, victim/0-3, x/0
    folder = write_folder(tmp_path / "in" / FORGED, colour_frames("r"))
    out = tmp_path / "out"
    assert cli(capsys, monkeypatch, folder, "-b", bundle_dir, "-o", out, "--no-plots") == 0
    probs = read_frames_csv(out / "frames.csv")
    assert list(probs) == [FORGED] and probs[FORGED].frames.tolist() == [0]
    with open(out / "frames.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 2 and rows[1][0] == FORGED
    again = tmp_path / "again"
    code = cli(
        capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", bundle_dir, "-o", again, "--no-plots",
        "--median", 1, "--min-run", 1,
    )  # fmt: skip
    assert code == 0
    events = read_events_json(again / "events.json")
    assert list(events) == [FORGED]  # no "victim" video, no fake all-label event
    assert events[FORGED] == [{"start": 0, "end": 0, "label": ["mouth"]}]


def test_a_hand_forged_row_with_extra_fields_is_refused(tmp_path: Path) -> None:
    header = ",".join(["video", "frame", *LABELS])
    bad = tmp_path / "f.csv"
    bad.write_text(f'{header}\n"a",0,{ONES}\na,b,1,{ONES}\n')  # a name with a comma, unquoted
    with pytest.raises(VCEError, match=r"f\.csv:3: expected 19 fields, found 20"):
        read_frames_csv(bad)
    bad.write_text(f"{header}\nv,0,{ONES},1\n")
    with pytest.raises(VCEError, match=r"f\.csv:2: expected 19 fields, found 20"):
        read_frames_csv(bad)


@pytest.mark.parametrize("name", ["=HYPERLINK(1)", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "'quoted", "''x"])
def test_formula_names_are_neutralised_and_round_trip(tmp_path: Path, name: str) -> None:
    path = write_frames_csv(tmp_path / "f.csv", [VideoFrames(name, [0, 1], np.full((2, 17), 0.25))])
    with open(path, newline="", encoding="utf-8") as fh:
        cells = [row[0] for row in list(csv.reader(fh))[1:]]
    assert cells == ["'" + name] * 2  # a spreadsheet shows it as text, never evaluates it
    assert list(read_frames_csv(path)) == [name]


def test_plain_names_are_written_as_before(tmp_path: Path) -> None:
    path = write_frames_csv(tmp_path / "f.csv", [VideoFrames("vid_a", [0], np.full((1, 17), 0.5))])
    assert path.read_text().splitlines()[1] == "vid_a,0," + ",".join(["0.5"] * 17)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_any_name_round_trips(name: str) -> None:
    assert unneutralise(neutralise(name)) == name
    assert not neutralise(name).startswith(("=", "+", "-", "@", "\t", "\r"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4, unique=True))
def test_any_names_round_trip_through_the_file(
    tmp_path_factory: pytest.TempPathFactory, names: list[str]
) -> None:
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    videos = [VideoFrames(n, [0, 1], np.full((2, 17), i / 10)) for i, n in enumerate(names)]
    write_frames_csv(path, videos)
    back = read_frames_csv(path)
    assert set(back) == set(names)
    for i, n in enumerate(names):
        assert np.allclose(back[n].values, i / 10)


def test_similar_names_get_their_own_timeline(tmp_path: Path) -> None:
    names = timeline_names(["a,b", "a_b", "a b", "A_B", "vid_a", "x/../y", ".hidden", "é"])
    assert len({n.casefold() for n in names.values()}) == len(names)
    assert names["vid_a"] == "vid_a_timeline.png"  # plain names keep the readable file name
    assert all("/" not in n and not n.startswith(".") for n in names.values())
    # the same name gets the same file whatever else the run holds
    assert timeline_names(["a,b"])["a,b"] == names["a,b"]


def test_videos_a_comma_b_and_a_b_write_separate_timelines(
    tmp_path: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    inputs = [
        write_folder(tmp_path / "in" / n, colour_frames("krg", seed=i))
        for i, n in enumerate(["a,b", "a_b", "a b"])
    ]
    out = tmp_path / "out"
    assert cli(capsys, monkeypatch, *inputs, "-b", bundle_dir, "-o", out) == 0
    pngs = sorted(out.glob("*_timeline.png"))
    assert len(pngs) == 3
    import json

    record = json.loads((out / "run.json").read_text())
    assert sorted(v["timeline"] for v in record["videos"]) == sorted(p.name for p in pngs)


def test_neutralised_names_still_pair_with_their_label_files(tmp_path: Path) -> None:
    from vce.runtime.formats.framescsv import align
    from vce.runtime.formats.labelcsv import read_labels_dir, write_label_csv

    (tmp_path / "labels").mkdir()
    for name in ("-first", "=second"):
        write_label_csv(tmp_path / "labels" / f"{name}.csv", np.arange(3), np.zeros((3, 17)))
    write_frames_csv(
        tmp_path / "val.csv",
        [VideoFrames(n, np.arange(3), np.full((3, 17), 0.5)) for n in ("-first", "=second")],
    )
    rows = align(read_frames_csv(tmp_path / "val.csv"), read_labels_dir(tmp_path / "labels"))
    assert [r[0] for r in rows] == ["-first", "=second"]


_CELL = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "0", "1", "0.5", "-1", "nan", "inf", "1e300", "'x", '"', "\n", "\r", ","]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_CELL, max_size=22), max_size=6), st.booleans())
def test_random_rows_raise_only_our_error(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], with_header: bool
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if with_header:
            writer.writerow(["video", "frame", *LABELS])
        writer.writerows(rows)
    try:
        result = read_frames_csv(path)
    except VCEError:
        return
    for v in result.values():
        assert v.values.shape == (v.frames.size, 17) and np.isfinite(v.values).all()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_our_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f.csv"
    path.write_bytes(",".join(["video", "frame", *LABELS]).encode() + b"\n" + data)
    with contextlib.suppress(VCEError):
        read_frames_csv(path)
