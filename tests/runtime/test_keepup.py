"""Keeping up: which waiting frames are inferred under --max-lag, and how skipped frames are filled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce.runtime.errors import VCEError
from vce.runtime.live.keepup import FillBuffer, LagPolicy
from vce.runtime.pipeline import fill_probs


def test_nothing_is_skipped_while_inference_keeps_up() -> None:
    assert LagPolicy(8).choose([3, 4, 5, 6]) == ([3, 4, 5, 6], [])
    assert LagPolicy(4).choose(list(range(10, 14))) == ([10, 11, 12, 13], [])
    assert LagPolicy(4).choose([]) == ([], [])


def test_behind_it_keeps_the_newest_and_thins_by_the_stride_rule() -> None:
    infer, skip = LagPolicy(4).choose(list(range(10, 20)))  # 10 waiting, at most 4
    assert infer == [12, 15, 18, 19]  # k = 3: positions % 3 == 0, and the newest
    assert skip == [10, 11, 13, 14, 16, 17]
    assert LagPolicy(4).stride_for(list(range(10, 20))) == 3
    assert LagPolicy(1).choose([5, 6, 7]) == ([7], [5, 6])
    # position 0 is a multiple of every stride: with --max-lag 1 only the newest can stay (this
    # looped forever before)
    assert LagPolicy(1).choose([0, 1, 2]) == ([2], [0, 1])
    assert LagPolicy(2).choose([0, 1, 2, 3]) == ([0, 3], [1, 2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 500), unique=True, max_size=80), st.integers(1, 20))
def test_policy_properties(waiting: list[int], max_lag: int) -> None:
    waiting.sort()
    policy = LagPolicy(max_lag)
    infer, skip = policy.choose(waiting)
    assert sorted(infer + skip) == waiting and not set(infer) & set(skip)
    assert len(infer) <= max_lag
    if waiting:
        assert infer[-1] == waiting[-1]  # the newest is always inferred
    k = policy.stride_for(waiting)
    assert all(p % k == 0 for p in infer[:-1])  # the --stride rule
    if k > 1:  # the smallest stride that fits
        smaller = [p for p in waiting[:-1] if p % (k - 1) == 0] + waiting[-1:]
        assert len(set(smaller)) > max_lag


def test_bad_max_lag_is_one_clear_error() -> None:
    for bad in (0, -3, 2.5, True):
        with pytest.raises(VCEError, match="--max-lag"):
            LagPolicy(bad)  # type: ignore[arg-type]
    with pytest.raises(VCEError, match="increasing"):
        LagPolicy(3).choose([4, 2])


def test_simulated_slow_inference_stays_within_max_lag() -> None:
    """Frames arrive at 10/s, the model infers 3/s: the queue never exceeds --max-lag, the newest
    frame is inferred each round, and every frame is either inferred or recorded as skipped."""
    policy = LagPolicy(6)
    arrived, queue, inferred, skipped = 0, [], [], []
    for _ in range(200):  # rounds of 1 s
        queue += list(range(arrived, arrived + 10))
        arrived += 10
        infer, skip = policy.choose(queue)
        assert len(infer) <= 6 and infer[-1] == arrived - 1  # the newest frame is always chosen
        skipped += skip
        inferred += infer[:3]  # 3 inferences this second; the rest wait
        queue = infer[3:]
    assert sorted(inferred + skipped + queue) == list(range(arrived))  # each one accounted for
    assert len(inferred) == 600 and len(queue) <= 3  # inference never idles, the backlog stays small


@pytest.mark.parametrize("how", ["linear", "hold"])
def test_fill_buffer_equals_the_offline_stride_fill(how: str) -> None:
    rng = np.random.default_rng(0)
    t = 40
    probs = rng.random((t, 17)).astype(np.float32)
    inferred = rng.random(t) < 0.4
    inferred[[5, 30]] = True
    inferred[:2] = False  # skipped frames before the first inferred one
    inferred[-3:] = False  # and after the last
    want = fill_probs(np.where(inferred[:, None], probs, 0).astype(np.float32), inferred, how)  # type: ignore[arg-type]
    buf = FillBuffer(how)  # type: ignore[arg-type]
    frames, rows = [], []
    for i in range(t):
        f, p = buf.add(100 + i, probs[i] if inferred[i] else None)
        frames += f.tolist()
        rows.append(p)
    f, p = buf.finish()
    frames += f.tolist()
    rows.append(p)
    assert frames == list(range(100, 100 + t))
    assert np.array_equal(np.concatenate(rows), want)


def test_fill_buffer_without_any_inferred_frame_is_an_error() -> None:
    buf = FillBuffer()
    buf.add(0, None)
    with pytest.raises(VCEError, match="no frame was inferred"):
        buf.finish()
