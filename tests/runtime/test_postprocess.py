"""Post-processing: hand-worked cases and property tests against reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.ndimage import median_filter

from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.runtime.postprocess import (
    PAPER,
    PAPER_THRESHOLDS,
    PostprocessConfig,
    fill_gaps,
    group_events,
    median_filter_binary,
    postprocess,
    remove_short_runs,
    thresholds_array,
)


# --- loop references, written as the paper describes the steps ------------------------------------
def ref_remove_short_runs(x: list[int], min_run: int) -> list[int]:
    out = list(x)
    i = 0
    while i < len(out):
        if out[i] == 1:
            j = i
            while j < len(out) and out[j] == 1:
                j += 1
            if j - i < min_run:
                out[i:j] = [0] * (j - i)
            i = j
        else:
            i += 1
    return out


def ref_fill_gaps(x: list[int], max_gap: int) -> list[int]:
    out = list(x)
    last_one = -1
    for i, v in enumerate(out):
        if v == 1:
            if last_one >= 0 and 0 < i - last_one - 1 <= max_gap:
                out[last_one + 1 : i] = [1] * (i - last_one - 1)
            last_one = i
    return out


def ref_make_json(binary: np.ndarray, frames: list[int]) -> list[dict]:
    """The challenge's make_json.py grouping: new event whenever the sorted label tuple changes."""
    events: list[dict] = []
    current = None
    for pos, frame in enumerate(frames):
        active = tuple(sorted(LABELS[j] for j in range(len(LABELS)) if binary[pos, j]))
        if active != current:
            if events:
                events[-1]["end"] = frame - 1
            events.append({"start": frame, "end": frame, "label": list(active)})
            current = active
    if events:
        events[-1]["end"] = frames[-1]
    return events


# --- hand-worked cases ---------------------------------------------------------------------------
def test_median_filter_hand_worked_edges_reflect() -> None:
    # size 7 needs 4 ones in the window; at the left edge the window is x2 x1 x0 | x0 x1 x2 x3
    x = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    # position 0 window: 0 1 1 1 1 0 0 -> 4 ones -> 1 ; position 1: 1 1 1 1 0 0 0 -> 4 -> 1
    # position 2: 1 1 1 0 0 0 0 -> 3 -> 0
    assert median_filter_binary(x, 7).astype(int).tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert median_filter_binary(y, 3).astype(int).tolist() == [0, 0, 1, 0, 1, 0, 1, 1, 1, 1]


def test_remove_short_runs_includes_runs_at_the_end() -> None:
    x = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1, 1], dtype=bool)
    assert remove_short_runs(x, 3).astype(int).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]


def test_fill_gaps_never_fills_leading_or_trailing_zeros() -> None:
    x = np.array([0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0], dtype=bool)
    # gap of 5 filled, gap of 6 not, leading/trailing zeros untouched
    assert fill_gaps(x, 5).astype(int).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0]


def test_tuple_grouping_splits_region_at_pathology_and_keeps_empty_events() -> None:
    b = np.zeros((8, 17), dtype=bool)
    b[1:7, LABELS.index("stomach")] = True
    b[3:5, LABELS.index("ulcer")] = True
    frames = [100, 101, 102, 103, 104, 105, 106, 107]
    assert group_events(b, frames, "tuple") == [
        {"start": 100, "end": 100, "label": []},
        {"start": 101, "end": 102, "label": ["stomach"]},
        {"start": 103, "end": 104, "label": ["stomach", "ulcer"]},
        {"start": 105, "end": 106, "label": ["stomach"]},
        {"start": 107, "end": 107, "label": []},
    ]
    assert group_events(b, frames, "label") == [
        {"start": 101, "end": 106, "label": ["stomach"]},
        {"start": 103, "end": 104, "label": ["ulcer"]},
    ]


def test_event_end_is_next_start_minus_one_with_sparse_frame_numbers() -> None:
    b = np.zeros((4, 17), dtype=bool)
    b[:2, 0] = True
    assert group_events(b, [0, 5, 10, 15], "tuple") == [
        {"start": 0, "end": 9, "label": ["mouth"]},
        {"start": 10, "end": 15, "label": []},
    ]


def test_postprocess_full_pipeline_hand_worked() -> None:
    t = 30
    probs = np.zeros((t, 17))
    probs[:, LABELS.index("colon")] = 0.9
    probs[10:20, LABELS.index("polyp")] = 0.5  # above the paper's 0.15 polyp threshold
    probs[14, LABELS.index("polyp")] = 0.0  # one-frame dropout: the median filter heals it
    probs[25, LABELS.index("blood")] = 0.99  # an isolated spike: removed
    events = postprocess(probs, np.arange(t), PAPER_THRESHOLDS, PAPER)
    assert events == [
        {"start": 0, "end": 9, "label": ["colon"]},
        {"start": 10, "end": 19, "label": ["colon", "polyp"]},
        {"start": 20, "end": 29, "label": ["colon"]},
    ]


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(VCEError, match="NaN"):
        postprocess(np.full((3, 17), np.nan), [0, 1, 2], 0.5)
    with pytest.raises(VCEError, match="increasing"):
        group_events(np.zeros((2, 17), bool), [3, 3])
    with pytest.raises(VCEError, match="unknown labels"):
        thresholds_array({"stomack": 0.5})
    with pytest.raises(VCEError):
        PostprocessConfig(grouping="per-label")  # type: ignore[arg-type]
    assert thresholds_array(0.3).tolist() == [0.3] * 17
    assert thresholds_array(PAPER_THRESHOLDS)[LABELS.index("hematin")] == pytest.approx(0.07)


# --- properties against the references -------------------------------------------------------------
series = st.lists(st.integers(0, 1), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(series, st.integers(1, 12))
def test_median_matches_scipy(x: list[int], size: int) -> None:
    # scipy returns uninitialised values when the window exceeds twice the series (e.g. size 12 on 5
    # samples); the paper's size 7 on real videos is far from that corner
    assume(size <= 2 * len(x))
    ref = median_filter(np.array(x, dtype=float), size=size, mode="reflect") > 0.5
    assert median_filter_binary(np.array(x, dtype=bool), size).tolist() == ref.tolist()


@settings(max_examples=300, deadline=None)
@given(series, st.integers(0, 8))
def test_remove_short_runs_matches_loop(x: list[int], min_run: int) -> None:
    assert remove_short_runs(np.array(x, bool), min_run).astype(int).tolist() == ref_remove_short_runs(
        x, min_run
    )


@settings(max_examples=300, deadline=None)
@given(series, st.integers(0, 8))
def test_fill_gaps_matches_loop(x: list[int], max_gap: int) -> None:
    assert fill_gaps(np.array(x, bool), max_gap).astype(int).tolist() == ref_fill_gaps(x, max_gap)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 50), st.integers(0, 2**31 - 1))
def test_tuple_grouping_matches_make_json(t: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = rng.random((t, 17)) < rng.uniform(0.0, 0.3)
    frames = np.cumsum(rng.integers(1, 4, size=t)) + int(rng.integers(0, 100))
    assert group_events(b, frames, "tuple") == ref_make_json(b, frames.tolist())


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 60), st.integers(0, 2**31 - 1))
def test_columns_are_independent_and_match_per_column(t: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = rng.random((t, 17)) < 0.4
    for fn, arg in ((median_filter_binary, 7), (remove_short_runs, 3), (fill_gaps, 5)):
        whole = fn(b, arg)
        for j in range(17):
            assert whole[:, j].tolist() == fn(b[:, j], arg).tolist()
