"""Ground truth as make_json.py builds it: tuple grouping on raw labels, `frame` or `index` column."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from vce.calibration.cli import eval_app
from vce.calibration.groundtruth import build_ground_truth


def _write(path, column: str, rows: list[tuple[int, int, int, int]]) -> None:
    lines = [f"{column},section,stomach,erosion,good view,colon"]
    lines += [f"{f},x,{s},{e},1,{c}" for f, s, e, c in rows]
    path.write_text("\n".join(lines) + "\n")


def test_tuple_grouping_splits_regions_and_keeps_empty_events(tmp_path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    # frame, stomach, erosion, colon (rows deliberately out of order; frames 6-7 missing)
    rows = [
        (0, 0, 0, 0),
        (1, 1, 0, 0),
        (2, 1, 1, 0),
        (3, 1, 1, 0),
        (4, 1, 0, 0),
        (5, 0, 0, 0),
        (8, 0, 0, 1),
        (9, 0, 0, 1),
    ]
    _write(labels / "vid_b.csv", "index", rows[::-1])
    _write(labels / "vid_a.csv", "frame", [(0, 1, 0, 0), (1, 1, 0, 0)])
    out = build_ground_truth(labels, tmp_path / "gt.json")
    data = json.loads(out.read_text())
    assert [v["video_id"] for v in data["videos"]] == ["vid_a", "vid_b"]
    assert data["videos"][0]["events"] == [{"start": 0, "end": 1, "label": ["stomach"]}]
    assert data["videos"][1]["events"] == [
        {"start": 0, "end": 0, "label": []},
        {"start": 1, "end": 1, "label": ["stomach"]},
        {"start": 2, "end": 3, "label": ["erosion", "stomach"]},  # sorted tuple
        {"start": 4, "end": 4, "label": ["stomach"]},
        {"start": 5, "end": 7, "label": []},  # ends at the next event's start minus one
        {"start": 8, "end": 9, "label": ["colon"]},
    ]


def test_gt_cli(tmp_path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    _write(labels / "v.csv", "frame", [(0, 1, 0, 0)])
    res = CliRunner().invoke(eval_app, ["gt", str(labels), "-o", str(tmp_path / "g.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "g.json").read_text())["videos"][0]["events"][0]["label"] == ["stomach"]
