"""Thresholds: the paper's F1 grid recovers known cut points; the temporal fit finds the metric's optimum."""

from __future__ import annotations

import numpy as np
import pytest

from vce.calibration.groundtruth import video_ground_truth
from vce.calibration.search import prepare_videos
from vce.calibration.thresholds import NO_SUPPORT, f1_at, paper_grid_thresholds, temporal_thresholds
from vce.runtime.formats.framescsv import VideoFrames
from vce.runtime.postprocess import PostprocessConfig


def test_f1_at_matches_direct_count() -> None:
    rng = np.random.default_rng(0)
    p, y = rng.random(500), rng.random(500) < 0.3
    grid = np.arange(0.05, 0.95, 0.1)
    direct = [2 * np.sum((p >= t) & y) / (np.sum(p >= t) + y.sum()) for t in grid]
    assert np.allclose(f1_at(p, y, grid), direct)


def test_paper_grid_recovers_known_thresholds() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    true = np.round(rng.choice(np.arange(0.17, 0.83, 0.02), 17), 2)
    truth = rng.random((n, 17)) < 0.2
    truth[:, 16] = False  # no support
    truth[:, 15] = False
    truth[:20, 15] = True  # 0.5 % support: grid starts at 0.05
    true[15] = 0.07
    gap_lo, gap_hi = true - 0.015, true + 0.005  # only grid point in (lo, hi]: the true one
    probs = np.where(truth, rng.uniform(gap_hi, 1.0, (n, 17)), rng.uniform(0.0, gap_lo, (n, 17)))
    got = paper_grid_thresholds(probs, truth)
    assert got[16] == NO_SUPPORT
    assert np.allclose(got[:16], true[:16])


def test_temporal_thresholds_find_the_event_optimum() -> None:
    # label 0: true events at 0.6, background at 0.5 with isolated false frames at 0.55. Without
    # smoothing only a threshold in (0.55, 0.6] gives clean events (AP 1); lower thresholds add
    # one-frame false events or merge everything, higher ones predict nothing.
    t = 400
    labels = np.zeros((t, 17))
    labels[50:150, 0] = 1
    labels[250:350, 0] = 1
    probs = np.full((t, 17), 0.01)
    probs[:, 0] = np.where(labels[:, 0] > 0, 0.6, 0.5)
    probs[::40, 0] = np.where(labels[::40, 0] > 0, 0.6, 0.55)  # isolated false frames between 0.5 and 0.6
    frames = np.arange(t)
    gt = {"v": video_ground_truth(VideoFrames("v", frames, labels))}
    videos = prepare_videos([("v", frames, probs, labels)], gt)
    got = temporal_thresholds(videos, PostprocessConfig(1, 0, 0, "label"), "map95", fallback=np.full(17, 0.5))
    assert 0.55 < got[0] <= 0.6
    # labels without ground truth: AP 1 only when nothing is predicted -> above every probability
    assert np.all(got[1:] > 0.01)
    assert got[1] == pytest.approx(0.5, abs=0.011)  # all tie: the one nearest the fallback
