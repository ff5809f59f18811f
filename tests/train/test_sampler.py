"""Square-root frequency weights and the epoch sampler."""

from __future__ import annotations

import numpy as np
import pytest

from vce.train.sampler import EpochSampler, sqrt_frequency_weights


def test_weights_by_hand() -> None:
    # 4 frames: label 0 on 3 frames, label 1 on 1 frame (shared with label 0), frame 3 unlabelled
    y = np.array([[1, 0], [1, 1], [1, 0], [0, 0]])
    f0 = (3 + 1) / 4  # (count + 1) / N
    f1 = (1 + 1) / 4
    raw = np.array([1 / np.sqrt(f0), max(1 / np.sqrt(f0), 1 / np.sqrt(f1)), 1 / np.sqrt(f0), 1.0])
    w = sqrt_frequency_weights(y)
    assert np.allclose(w, raw / raw.sum() * 4)
    assert w.mean() == pytest.approx(1.0)
    assert w[1] > w[0] and w[0] == w[2]


def test_rare_frames_drawn_more_often() -> None:
    y = np.zeros((1000, 2))
    y[:10, 1] = 1
    y[10:, 0] = 1
    s = EpochSampler(1000, sqrt_frequency_weights(y), num_samples=20000, seed=0)
    idx = np.array(list(s))
    share = np.mean(idx < 10)
    w0, w1 = 1 / np.sqrt(991 / 1000), 1 / np.sqrt(11 / 1000)
    expected = 10 * w1 / (10 * w1 + 990 * w0)
    assert share == pytest.approx(expected, abs=0.01)
    assert share > 5 * 10 / 1000


def test_deterministic_per_epoch_and_sharded() -> None:
    w = np.linspace(1, 2, 50)
    a = EpochSampler(50, w, seed=3)
    b = EpochSampler(50, w, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b)
    r0 = EpochSampler(50, w, seed=3, rank=0, world_size=2)
    r1 = EpochSampler(50, w, seed=3, rank=1, world_size=2)
    full = r0.global_indices().tolist()
    assert list(r0) == full[0::2] and list(r1) == full[1::2] and len(r0) == len(r1) == 25


def test_uniform_is_a_permutation() -> None:
    s = EpochSampler(10, None, seed=0)
    assert sorted(s) == list(range(10))
