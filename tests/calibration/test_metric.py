"""The temporal mAP against hand-worked cases (every official rule) and a plain restatement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vce.calibration.metric import average_precision, evaluate, sanity_check, score_files, tiou
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS


def ev(start: int, end: int, *labels: str) -> dict:
    return {"start": start, "end": end, "label": list(labels)}


def test_tiou_inclusive_frames() -> None:
    assert tiou(0, 9, 5, 14) == pytest.approx(5 / 15)
    assert tiou(3, 3, 3, 3) == 1.0  # one frame is a segment of length 1
    assert tiou(0, 4, 5, 9) == 0.0  # touching, no shared frame
    assert tiou(0, 99, 0, 94) == 0.95


def test_predictions_in_file_order() -> None:
    gt = [(0, 9), (20, 29)]
    # hit, miss, hit: AP = 1 * 1/2 + 2/3 * 1/2
    assert average_precision(gt, [(20, 29), (50, 60), (0, 9)], 0.5) == pytest.approx(5 / 6)
    assert average_precision(gt, [(0, 9), (20, 29), (50, 60)], 0.5) == pytest.approx(1.0)
    assert average_precision(gt, [(50, 60), (0, 9), (20, 29)], 0.5) == pytest.approx(0.5 * 0.5 + 2 / 3 * 0.5)


def test_greedy_first_unmatched_ground_truth() -> None:
    # [0,19] has tIoU exactly 0.5 with both halves: it takes the first; [10,19] then takes the second
    gt = [(0, 9), (10, 19)]
    assert average_precision(gt, [(0, 19), (10, 19)], 0.5) == pytest.approx(1.0)
    # at 0.95 the long one misses: tp = [0, 1] -> precision 1/2 at recall 1/2
    assert average_precision(gt, [(0, 19), (10, 19)], 0.95) == pytest.approx(0.25)
    # greedy, not optimal: P1 takes A (first reaching 0.5), P2 only fits A, already matched
    gt_overlap = [(0, 9), (5, 14)]
    assert average_precision(gt_overlap, [(0, 14), (0, 9)], 0.5) == pytest.approx(0.5)
    # a duplicate prediction is a false positive after the first
    assert average_precision([(0, 9)], [(0, 9), (0, 9)], 0.5) == pytest.approx(1.0)
    assert average_precision([(0, 9)], [(30, 39), (0, 9), (0, 9)], 0.5) == pytest.approx(0.5)


def test_threshold_is_inclusive() -> None:
    assert average_precision([(0, 99)], [(0, 94)], 0.95) == 1.0
    assert average_precision([(0, 99)], [(0, 93)], 0.95) == 0.0
    assert average_precision([(0, 9)], [(0, 19)], 0.5) == 1.0  # tIoU exactly 0.5


def test_empty_ground_truth_and_empty_prediction_rules() -> None:
    assert average_precision([], [], 0.5) == 1.0
    assert average_precision([], [(0, 3)], 0.5) == 0.0
    assert average_precision([(0, 3)], [], 0.5) == 0.0


def test_video_mean_over_17_labels_and_mean_over_videos() -> None:
    gt = {"a": [ev(0, 9, "stomach"), ev(10, 19)], "b": [ev(0, 4, "colon", "ulcer"), ev(5, 9, "colon")]}
    pred = {
        "a": [ev(0, 9, "stomach"), ev(10, 11, "polyp")],  # polyp not in ground truth: AP 0
        "b": [ev(0, 9, "colon"), ev(0, 4, "ulcer")],  # colon [0,9] vs [0,4],[5,9]: tIoU 0.5 with the first
    }
    r = evaluate(pred, gt)
    assert r.per_video["a"]["mAP@0.5"] == pytest.approx(16 / 17)
    # colon: tp [1] of 2 gt -> 0.5 at 0.5, 0 at 0.95; ulcer 1.0 at both
    assert r.per_video["b"]["mAP@0.5"] == pytest.approx((15 + 0.5 + 1.0) / 17)
    assert r.per_video["b"]["mAP@0.95"] == pytest.approx(16 / 17)
    assert r.overall["mAP@0.5"] == pytest.approx((16 / 17 + 16.5 / 17) / 2)
    assert r.per_label["colon"]["mAP@0.5"] == pytest.approx((1.0 + 0.5) / 2)
    assert r.per_label["polyp"]["mAP@0.5"] == pytest.approx(0.5)
    d = r.to_dict()
    assert set(d) == {"mAP@0.5", "mAP@0.95", "per_video", "per_label"}


def test_multi_label_event_counts_for_each_label() -> None:
    gt = {"v": [ev(0, 9, "hematin", "stomach")]}
    pred = {"v": [ev(0, 9, "stomach", "hematin")]}
    assert evaluate(pred, gt).overall["mAP@0.95"] == 1.0


def test_video_without_labelled_events_is_not_scored() -> None:
    gt = {"a": [ev(0, 9, "colon")], "empty": [ev(0, 50)]}
    pred = {"a": [ev(0, 9, "colon")], "empty": [ev(0, 5, "polyp")]}
    r = evaluate(pred, gt)
    assert r.videos == ["a"] and r.unscored == ["empty"]
    assert r.overall["mAP@0.5"] == 1.0


def test_sanity_checks() -> None:
    gt = {"a": [ev(0, 9, "colon")], "b": [ev(0, 9, "colon")]}
    with pytest.raises(VCEError, match=r"Missing in the prediction: \['b'\]"):
        sanity_check({"a": []}, gt)
    with pytest.raises(VCEError, match=r"Not in the ground truth: \['c'\]"):
        sanity_check({"a": [], "b": [], "c": []}, gt)
    with pytest.raises(VCEError, match="invalid label"):
        sanity_check({"a": [ev(0, 1, "Colon")], "b": []}, gt)


def _reference_ap(gt: list, pred: list, thr: float) -> float:
    """The official rules, restated literally with Python loops."""
    used: set[int] = set()
    flags = []
    for ps, pe in pred:
        hit = False
        for j, (gs, ge) in enumerate(gt):
            inter = max(0, min(pe, ge) - max(ps, gs) + 1)
            if j not in used and inter / ((pe - ps + 1) + (ge - gs + 1) - inter) >= thr:
                used.add(j)
                hit = True
                break
        flags.append(hit)
    if not gt:
        return 0.0 if pred else 1.0
    ap, cum, prev = 0.0, 0, 0.0
    for i, f in enumerate(flags):
        cum += f
        ap += cum / (i + 1) * (cum / len(gt) - prev)
        prev = cum / len(gt)
    return ap


def test_matches_plain_restatement_on_random_segments() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        gt = [tuple(sorted(rng.integers(0, 60, 2))) for _ in range(rng.integers(0, 6))]
        pred = [tuple(sorted(rng.integers(0, 60, 2))) for _ in range(rng.integers(0, 8))]
        for thr in (0.3, 0.5, 0.95):
            assert average_precision(gt, pred, thr) == pytest.approx(_reference_ap(gt, pred, thr), abs=1e-12)


def test_score_files_and_cli(tmp_path, capsys) -> None:
    from vce.calibration.cli import eval_app
    from vce.runtime.formats.eventjson import write_events_json

    gt = {"v1": [ev(0, 9, "colon"), ev(10, 20, "colon", "ulcer")]}
    write_events_json(tmp_path / "gt.json", gt)
    write_events_json(tmp_path / "pred.json", {"v1": [ev(0, 20, "colon")]})
    r = score_files(tmp_path / "pred.json", tmp_path / "gt.json")
    assert r.per_label["colon"]["mAP@0.5"] == pytest.approx(0.5)  # [0,20] vs [10,20]: 11/21 >= 0.5
    from typer.testing import CliRunner

    res = CliRunner().invoke(
        eval_app, ["score", str(tmp_path / "pred.json"), str(tmp_path / "gt.json"), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["mAP@0.5"] == pytest.approx(r.overall["mAP@0.5"])
    assert set(out["per_video"]["v1"]) == {"mAP@0.5", "mAP@0.95"} and set(out["per_label"]) == set(LABELS)
    (tmp_path / "bad.json").write_text(
        json.dumps({"videos": [{"video_id": "v1", "events": [ev(0, 1, "tumour")]}]})
    )
    with pytest.raises(VCEError, match="tumour"):
        score_files(tmp_path / "bad.json", tmp_path / "gt.json")
