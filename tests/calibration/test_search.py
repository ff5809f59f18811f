"""The fast search equals the runtime post-processing + the metric; it recovers known parameters;
cross-validation leaves videos out; `vce-calibrate fit` writes the bundle."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vce.calibration.calibrate import Fitted, calibrate
from vce.calibration.cli import calibrate_app
from vce.calibration.groundtruth import ground_truth, video_ground_truth
from vce.calibration.metric import evaluate
from vce.calibration.search import (
    SearchSpace,
    best_config,
    config_scores,
    config_table,
    prepare_videos,
    video_config_aps,
    video_folds,
)
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import VideoFrames, write_frames_csv
from vce.runtime.formats.labelcsv import write_label_csv
from vce.runtime.postprocess import PAPER, PostprocessConfig, postprocess


def _random_video(rng: np.random.Generator, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frames = np.cumsum(rng.integers(1, 4, t))  # frame numbers with gaps
    labels = np.zeros((t, 17))
    for c in range(17):
        on, pos = rng.random() < 0.3, 0
        while pos < t:
            n = int(rng.integers(1, 40))
            labels[pos : pos + n, c] = on
            on, pos = not on, pos + n
    probs = np.clip(labels * 0.5 + rng.random((t, 17)) * 0.6, 0, 1)
    return frames, probs, labels


def test_fast_engine_equals_runtime_postprocess_and_metric() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        frames, probs, labels = _random_video(rng, int(rng.integers(1, 250)))
        gt = {"v": video_ground_truth(VideoFrames("v", frames, labels))}
        videos = prepare_videos([("v", frames, probs, labels)], gt)
        if not videos:
            continue
        th = rng.uniform(0.3, 0.8, 17)
        configs = [
            PostprocessConfig(
                int(rng.choice([1, 2, 3, 5, 7])), int(rng.integers(0, 6)), int(rng.integers(0, 7)), g
            )
            for g in ("tuple", "label")
        ]
        fast = video_config_aps(videos[0], th, configs)
        for i, cfg in enumerate(configs):
            want = evaluate({"v": postprocess(probs, frames, th, cfg)}, gt).ap[0]
            np.testing.assert_allclose(fast[i], want, atol=1e-12, err_msg=str(cfg))


def _planted(rng: np.random.Generator, t: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Labels with true runs (some exactly 5 long, neighbours 7 apart) and predictions with 3-frame
    blips and 6-frame dropouts: only min_run 4 and max_gap 6 (median 1) restore the truth."""
    labels = np.zeros((t, 17))
    pred = np.zeros((t, 17))
    for c in range(6):
        pos = int(rng.integers(0, 10))
        while pos < t - 60:
            length = 5 if rng.random() < 0.3 else int(rng.integers(20, 40))
            labels[pos : pos + length, c] = 1
            pred[pos : pos + length, c] = 1
            if length >= 20:
                hole = pos + int(rng.integers(7, length - 12))
                pred[hole : hole + 6, c] = 0
            gap = 7 if rng.random() < 0.3 else int(rng.integers(15, 30))
            if gap >= 15:
                pred[pos + length + 6 : pos + length + 9, c] = 1  # 3-frame blip in the gap
            pos += length + gap
    return labels, pred * 0.8 + 0.1


def test_search_recovers_planted_parameters() -> None:
    rng = np.random.default_rng(1)
    rows, labels_by_video = [], {}
    for v in range(3):
        labels, probs = _planted(rng)
        frames = np.arange(labels.shape[0])
        rows.append((f"v{v}", frames, probs, labels))
        labels_by_video[f"v{v}"] = VideoFrames(f"v{v}", frames, labels)
    videos = prepare_videos(rows, ground_truth(labels_by_video))
    space = SearchSpace(
        medians=(1, 3), min_runs=(1, 2, 3, 4, 6), max_gaps=(0, 2, 4, 6, 8), groupings=("tuple", "label")
    )
    configs = space.configs()
    scores = config_scores(config_table(videos, np.full(17, 0.5), configs), "mean")
    best = configs[best_config(scores)]
    assert (best.median, best.min_run, best.max_gap) == (1, 4, 6)
    assert scores.max() == pytest.approx(1.0)
    assert np.sort(scores)[-3] < 1.0  # only the two groupings of the planted values are perfect


def test_video_folds_partition_videos() -> None:
    folds = video_folds(7, 3, seed=2)
    assert len(folds) == 3 and sorted(np.concatenate(folds).tolist()) == list(range(7))
    assert video_folds(7, 3, seed=2)[0].tolist() == folds[0].tolist()


def _dataset(tmp_path, n_videos: int = 4, t: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    (tmp_path / "labels").mkdir()
    vfs, probs_by, labels_by = [], {}, {}
    for v in range(n_videos):
        labels, probs = _planted(rng, t)
        frames = np.arange(t)
        write_label_csv(tmp_path / "labels" / f"v{v}.csv", frames, labels)
        vfs.append(VideoFrames(f"v{v}", frames, probs))
        probs_by[f"v{v}"], labels_by[f"v{v}"] = vfs[-1], VideoFrames(f"v{v}", frames, labels)
    write_frames_csv(tmp_path / "val.csv", vfs)
    return probs_by, labels_by


def test_cross_validation_scores_held_out_videos(tmp_path) -> None:
    probs, labels = _dataset(tmp_path)
    space = SearchSpace(medians=(1,), min_runs=(1, 4), max_gaps=(0, 6), groupings=("tuple",))
    current = Fitted(np.full(17, 0.5), PostprocessConfig(1, 1, 0, "tuple"))
    r = calibrate(probs, labels, current, method="keep", objective="map50", space=space, folds=2, seed=0)
    held = sorted(v for f in r.folds for v in f["heldout_videos"])
    assert held == ["v0", "v1", "v2", "v3"]  # every video held out exactly once
    assert all(f["postprocess"]["min_run"] == 4 and f["postprocess"]["max_gap"] == 6 for f in r.folds)
    assert r.cv_score == pytest.approx(1.0) and r.cv_before < 0.9
    assert r.after.config == PostprocessConfig(1, 4, 6, "tuple")
    assert r.regression() is None
    # fitted values that score below the bundle's current ones are reported (held out, or in sample)
    worse = dataclasses.replace(r, ap_before=r.ap_after, ap_after=r.ap_before)
    worse.folds = [
        {**f, "heldout_after": f["heldout_before"], "heldout_before": f["heldout_after"]} for f in r.folds
    ]
    assert "on held-out videos, below the bundle's current 1.0000" in str(worse.regression())
    worse.folds = []
    assert "on the validation videos, below the bundle's current 1.0000" in str(worse.regression())
    with pytest.raises(VCEError, match=r"--folds must be 0 .* or at least 2, got 1"):
        calibrate(probs, labels, current, method="keep", space=space, folds=1)


def test_fit_cli_writes_bundle(tmp_path) -> None:
    _dataset(tmp_path, n_videos=3, t=400, seed=3)
    Bundle.create(tmp_path / "b").save()
    res = CliRunner().invoke(
        calibrate_app,
        ["fit", str(tmp_path / "val.csv"), "--labels", str(tmp_path / "labels"), "--bundle", str(tmp_path / "b"),
         "--folds", "3", "--medians", "1,3", "--min-runs", "1,4", "--max-gaps", "0,6", "--thresholds", "temporal"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "held-out" in res.output and "below the bundle's current" not in res.output
    b = Bundle.load(tmp_path / "b")  # the plot is listed and verified
    assert b.manifest.postprocess_config() == PostprocessConfig(1, 4, 6, "tuple")
    assert 0.1 < b.manifest.thresholds["mouth"] < 0.9
    fit = b.manifest.calibration["fit"]
    assert fit["thresholds_method"] == "temporal" and fit["cross_validation"]["folds"] == 3
    assert fit["after_in_sample"]["mAP@0.5"] == pytest.approx(1.0)
    assert (tmp_path / "b" / "calibration.png").stat().st_size > 1000
    assert (
        json.loads((tmp_path / "b" / "manifest.json").read_text())["files"]["calibration.png"]["role"]
        == "calibration-plot"
    )
    before = b.manifest.to_dict()
    res = CliRunner().invoke(
        calibrate_app,
        ["fit", str(tmp_path / "val.csv"), "--labels", str(tmp_path / "labels"), "--bundle", str(tmp_path / "b"),
         "--folds", "0", "--medians", "1", "--min-runs", "1", "--max-gaps", "0", "--dry-run"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert Bundle.load(tmp_path / "b").manifest.to_dict() == before
    assert PAPER.median == 7  # the runtime default is untouched
