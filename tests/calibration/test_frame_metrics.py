"""Frame-level AP, AUC, F1 on hand-worked cases, and `vce-eval frames`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vce.calibration.cli import eval_app
from vce.calibration.frame_metrics import average_precision, frame_metrics, roc_auc
from vce.runtime.formats.framescsv import VideoFrames, write_frames_csv
from vce.runtime.formats.labelcsv import write_label_csv


def test_ap_and_auc_hand_worked() -> None:
    s, y = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])
    assert average_precision(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert roc_auc(s, y) == pytest.approx(0.75)
    # ties form one step / count one half
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    assert roc_auc(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0])) == pytest.approx(0.75)
    assert np.isnan(average_precision(s, np.zeros(4))) and np.isnan(roc_auc(s, np.ones(4)))


def test_f1_at_thresholds_and_macro() -> None:
    probs = np.zeros((4, 17))
    truth = np.zeros((4, 17))
    probs[:, 0] = [0.9, 0.6, 0.4, 0.1]
    truth[:, 0] = [1, 0, 1, 0]
    m = frame_metrics(probs, truth, 0.5)
    assert (
        m.precision[0] == pytest.approx(0.5)
        and m.recall[0] == pytest.approx(0.5)
        and m.f1[0] == pytest.approx(0.5)
    )
    assert m.macro()["f1"] == pytest.approx(0.5)  # only the label with support counts
    assert m.macro()["ap"] == pytest.approx(m.ap[0])


def test_frames_cli(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((50, 17)) < 0.3).astype(float)
    p = np.clip(y * 0.6 + rng.random((50, 17)) * 0.4, 0, 1)
    write_frames_csv(tmp_path / "f.csv", [VideoFrames("v", np.arange(50), p)])
    (tmp_path / "labels").mkdir()
    write_label_csv(tmp_path / "labels" / "v.csv", np.arange(50), y)
    res = CliRunner().invoke(
        eval_app,
        ["frames", str(tmp_path / "f.csv"), str(tmp_path / "labels"), "--threshold", "0.5", "--json"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    want = frame_metrics(p, y, 0.5)
    assert out["macro"]["ap"] == pytest.approx(want.macro()["ap"], abs=1e-5)
    assert out["per_label"]["colon"]["f1"] == pytest.approx(want.f1[4], abs=1e-5)
