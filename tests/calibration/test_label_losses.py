"""`vce-calibrate fit` says why a label scores worse after calibration than before (in sample)."""

from __future__ import annotations

import dataclasses

import numpy as np
from typer.testing import CliRunner

from vce.calibration.calibrate import CalibrationResult, Fitted, calibrate, label_losses
from vce.calibration.search import SearchSpace
from vce.runtime.labels import LABELS
from vce.runtime.postprocess import PostprocessConfig

C = LABELS.index("angiectasia")


def _result() -> CalibrationResult:
    """Two videos: the first without angiectasia (AP 1 while nothing is predicted), the second with it."""
    ones = np.ones((2, 17, 2))
    before, after = ones.copy(), ones.copy()
    before[:, C, :] = [[1.0, 1.0], [0.0, 0.0]]  # video 1's events missed at 0.50
    after[:, C, :] = [[0.0, 0.0], [0.125, 0.0]]  # 0.15 finds one, and predicts events on video 0
    after[:, LABELS.index("polyp"), 0] = [1.0, 1.0]  # unchanged: no note
    thresholds_only, postprocess_only = ones.copy(), ones.copy()
    thresholds_only[:, C, 0] = [0.0, 0.2]
    postprocess_only[:, C, 0] = [1.0, 0.0]
    gt = np.ones((2, 17), np.int64)
    gt[0, C] = 0
    th_after = np.full(17, 0.5)
    th_after[C] = 0.15
    return CalibrationResult(
        method="paper", objective="map50",
        before=Fitted(np.full(17, 0.5), PostprocessConfig(7, 3, 5, "tuple")),
        after=Fitted(th_after, PostprocessConfig(1, 3, 0, "tuple")),
        ap_before=before, ap_after=after, f1_before=np.zeros(17), f1_after=np.zeros(17), videos=["a", "b"],
        frames=100, space=SearchSpace(), ap_thresholds_only=thresholds_only, ap_postprocess_only=postprocess_only,
        gt_events=gt,
    )  # fmt: skip


def test_a_label_that_lost_gets_its_reason() -> None:
    lines = label_losses(_result())
    assert lines[0] == (
        "angiectasia: AP@0.5 0.500 -> 0.062; events now predicted on 1 of the 1 video(s) without it "
        "(each scores 0 instead of 1); threshold 0.50 -> 0.15 alone: 0.100, post-processing alone: 0.500"
    )
    assert len(lines) == 2 and lines[1].startswith("why a label can lose: each threshold maximises")
    assert "--thresholds temporal" in lines[1]


def test_no_note_when_no_label_lost() -> None:
    r = _result()
    assert label_losses(dataclasses.replace(r, ap_after=r.ap_before)) == []


def test_calibrate_scores_each_half_of_the_change(tmp_path) -> None:
    from test_search import _dataset

    probs, labels = _dataset(tmp_path)
    space = SearchSpace(medians=(1,), min_runs=(1, 4), max_gaps=(0, 6), groupings=("tuple",))
    current = Fitted(np.full(17, 0.5), PostprocessConfig(1, 1, 0, "tuple"))
    r = calibrate(probs, labels, current, method="paper", space=space, folds=0)
    assert r.ap_thresholds_only is not None and r.ap_postprocess_only is not None and r.gt_events is not None
    assert r.ap_thresholds_only.shape == r.ap_after.shape == r.ap_postprocess_only.shape
    assert r.gt_events.shape == (len(r.videos), 17)
    if r.after.config == current.config:  # then the thresholds alone are the whole change
        assert np.array_equal(r.ap_thresholds_only, r.ap_after)


def test_fit_prints_the_notes(tmp_path, monkeypatch) -> None:
    import vce.calibration.calibrate as calibrate_module
    from vce.calibration.cli import calibrate_app

    monkeypatch.setattr(calibrate_module, "fit_bundle", lambda *a, **k: _result())
    res = CliRunner().invoke(
        calibrate_app, ["fit", "val.csv", "--labels", "labels", "--bundle", "b", "--dry-run", "--no-plot"]
    )
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if line.startswith("note: ")]
    assert notes[0].startswith("note: angiectasia: AP@0.5 0.500 -> 0.062; events now predicted")
    assert notes[1].startswith("note: why a label can lose")
