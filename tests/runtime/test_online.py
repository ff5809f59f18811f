"""Online post-processing: equal to the offline result, final when emitted, within the delay bound."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.runtime.online import (
    OnlinePostprocessor,
    delay_bound_frames,
    delay_bound_seconds,
    order_events,
    settle_lag,
)
from vce.runtime.postprocess import (
    MAX_WINDOW,
    PAPER,
    PostprocessConfig,
    binarize,
    group_events,
    postprocess,
    smooth,
    thresholds_array,
)


def reference(probs: np.ndarray, frames: np.ndarray, th: np.ndarray, cfg: PostprocessConfig) -> list[dict]:
    """The offline definition, step by step (each step is checked against scipy / loop references in
    test_postprocess.py); independent of the online processor."""
    return group_events(smooth(binarize(probs, th), cfg), frames, cfg.grouping)


def random_video(seed: int, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities with runs of all lengths (correlated noise), sparse increasing frame numbers."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.05, 0.95, NUM := len(LABELS))
    flips = rng.random((t, NUM)) < rng.uniform(0.05, 0.6)
    state = np.cumsum(flips, axis=0) % 2
    probs = np.clip(level + np.where(state, 0.3, -0.3) + rng.normal(0, 0.2, (t, NUM)), 0, 1)
    frames = np.cumsum(rng.integers(1, 4, size=t)) + int(rng.integers(-5, 100))
    th = rng.uniform(0.2, 0.8, NUM)
    return probs, frames, th


def chunks(rng: np.random.Generator, t: int, mode: str) -> list[tuple[int, int]]:
    if mode == "frame":
        return [(i, i + 1) for i in range(t)]
    out, i = [], 0
    while i < t:
        k = int(rng.integers(0, 12))  # empty pushes too
        out.append((i, min(i + k, t)))
        i = min(i + k, t)
    return out


def last_position(frames: np.ndarray, end: int) -> int:
    return int(np.searchsorted(frames, end, side="right")) - 1


configs = st.builds(
    PostprocessConfig,
    median=st.integers(1, 10),
    min_run=st.integers(0, 6),
    max_gap=st.integers(0, 7),
    grouping=st.sampled_from(["tuple", "label"]),
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(0, 90)),
    st.integers(0, 2**31 - 1),
    configs,
    st.sampled_from(["frame", "chunks"]),
)
def test_online_equals_offline_final_and_within_bound(
    t: int, seed: int, cfg: PostprocessConfig, mode: str
) -> None:
    probs, frames, th = random_video(seed, t)
    want = reference(probs, frames, th, cfg)
    assert postprocess(probs, frames, th, cfg) == want  # the offline entry point (one final push)

    proc = OnlinePostprocessor(th, cfg)
    d = settle_lag(cfg)
    emitted: list[tuple[dict, int]] = []  # (copy at emission, first position of the emitting push)
    returned: list[dict] = []
    for a, b in chunks(np.random.default_rng(seed + 1), t, mode):
        for ev in proc.push(frames[a:b], probs[a:b]):
            emitted.append((copy.deepcopy(ev), a))
            returned.append(ev)
        assert proc.frames_settled >= proc.frames_seen - d  # the stated settling lag
    for ev in proc.finish():
        emitted.append((copy.deepcopy(ev), t))
        returned.append(ev)

    got = order_events(returned, cfg.grouping)
    assert got == want
    assert len(returned) == len(want)  # nothing emitted twice
    for ev, first in emitted:
        assert ev in want  # final when emitted: never changed or retracted afterwards
        b = last_position(frames, ev["end"])
        # returned at the latest by the push holding position b + D + 1 (or by finish)
        assert first <= b + d + 1, (ev, first, b, d)
    if mode == "frame":
        delays = [first + 1 - (last_position(frames, ev["end"]) + 1) for ev, first in emitted if first < t]
        assert all(x <= delay_bound_frames(cfg) for x in delays)


@pytest.mark.parametrize(
    ("median", "min_run", "max_gap"), [(1, 3, 5), (3, 3, 5), (7, 5, 5), (5, 0, 4), (3, 4, 0), (1, 1, 0)]
)
def test_delay_bound_is_reached(median: int, min_run: int, max_gap: int) -> None:
    """The bound is tight. Colon switches off after frame 19, then on again after exactly max_gap
    frames for a run one frame shorter than min_run: the gap stays open (hence the event) until that
    run is known to be short, D + 1 frames after frame 19. Without gap filling: an ulcer run of
    exactly min_run frames from frame 20 splits the event only once it has reached min_run."""
    cfg = PostprocessConfig(median, min_run, max_gap, "tuple")
    c, u = LABELS.index("colon"), LABELS.index("ulcer")
    x = np.zeros((60, len(LABELS)))
    if max_gap > 0:
        x[:20, c] = 1.0
        run = max(min_run - 1, 0)
        x[20 + max_gap : 20 + max_gap + run, c] = 1.0
    else:
        x[:, c] = 1.0
        run = max(min_run, 1)
        x[20 : 20 + run, u] = 1.0
    # runs and gaps in x are at least median//2 + 1 frames long (or absent): the median keeps them
    assert run == 0 or run >= median // 2 + 1
    assert max_gap == 0 or max_gap >= median // 2 + 1
    proc = OnlinePostprocessor(0.5, cfg)
    for i in range(60):
        events = proc.push([i], x[i : i + 1])
        if events:
            assert events == [{"start": 0, "end": 19, "label": ["colon"]}]
            assert i + 1 - 20 == delay_bound_frames(cfg) == settle_lag(cfg) + 1
            break
    else:
        pytest.fail("the first event was never emitted")


def test_default_bound_in_frames_and_seconds() -> None:
    assert settle_lag(PAPER) == 3 + 2 + 5
    assert delay_bound_frames(PAPER) == 11
    assert delay_bound_seconds(PAPER, 2.0) == pytest.approx(5.5)
    assert delay_bound_seconds(PAPER, 6.0) == pytest.approx(11 / 6)
    assert delay_bound_frames(PostprocessConfig(6, 0, 0)) == 3  # even median: right half is 2
    with pytest.raises(VCEError, match="frame rate"):
        delay_bound_seconds(PAPER, 0)


def test_memory_holds_a_window_not_the_history() -> None:
    cfg = PostprocessConfig(9, 4, 6, "label")
    rng = np.random.default_rng(3)
    proc = OnlinePostprocessor(0.5, cfg)
    n_events = 0
    for i in range(3000):
        n_events += len(proc.push([i], rng.random((1, len(LABELS)))))
        assert proc._median.buf.shape[0] <= cfg.median - 1
        assert proc._smooth.pend.shape[0] <= cfg.min_run - 1 + cfg.max_gap
        assert proc._frames.shape[0] <= settle_lag(cfg)
    assert n_events > 100  # events kept flowing, none held back


def test_frame_by_frame_equals_one_push_on_a_long_video() -> None:
    probs, frames, th = random_video(7, 5000)
    for cfg in (PAPER, PostprocessConfig(21, 5, 20, "label"), PostprocessConfig(4, 2, 3, "tuple")):
        proc = OnlinePostprocessor(th, cfg)
        got = [ev for i in range(0, 5000, 7) for ev in proc.push(frames[i : i + 7], probs[i : i + 7])]
        got += proc.finish()
        assert order_events(got, cfg.grouping) == reference(probs, frames, th, cfg)


def test_status_views_follow_the_settled_frames() -> None:
    th = thresholds_array(0.5)
    x = np.zeros((30, len(LABELS)))
    x[:, LABELS.index("stomach")] = 1.0
    x[10:, LABELS.index("ulcer")] = 1.0
    proc = OnlinePostprocessor(th, PAPER)
    assert proc.settled_labels() == [] and proc.last_settled_frame is None
    proc.push(np.arange(100, 130), x)
    # steady labels: only the median's right half (3 frames) is pending, not the whole D = 10
    assert proc.frames_settled == 27
    assert proc.last_settled_frame == 100 + proc.frames_settled - 1
    assert proc.current_region() == ["stomach"]
    assert proc.current_pathologies() == ["ulcer"]


def test_invariants_are_enforced_with_clear_errors() -> None:
    proc = OnlinePostprocessor(0.5)
    proc.push([5, 6], np.zeros((2, 17)))
    with pytest.raises(VCEError, match="strictly increasing"):
        proc.push([6], np.zeros((1, 17)))
    with pytest.raises(VCEError, match="strictly increasing"):
        proc.push([8, 8], np.zeros((2, 17)))
    with pytest.raises(VCEError, match="shape"):
        proc.push([9], np.zeros((1, 16)))
    with pytest.raises(VCEError, match="do not match"):
        proc.push([9, 10], np.zeros((1, 17)))
    with pytest.raises(VCEError, match="NaN"):
        proc.push([9], np.full((1, 17), np.nan))
    assert proc.finish() == [{"start": 5, "end": 6, "label": []}]
    with pytest.raises(VCEError, match="finished"):
        proc.push([9], np.zeros((1, 17)))


@pytest.mark.parametrize("field", ["median", "min_run", "max_gap"])
def test_huge_or_non_integer_windows_are_one_clear_error(field: str) -> None:
    with pytest.raises(VCEError, match=rf"{field} \(--{field.replace('_', '-')}\) must be between"):
        PostprocessConfig(**{field: 10**9})
    with pytest.raises(VCEError, match="whole number"):
        PostprocessConfig(**{field: 7.5})
    assert getattr(PostprocessConfig(**{field: MAX_WINDOW}), field) == MAX_WINDOW
    cfg = PostprocessConfig(**{field: np.int64(4)})
    assert type(getattr(cfg, field)) is int  # JSON-safe in manifests


def test_bench_postprocess_quick_run(tmp_path: Path) -> None:
    """bench/bench_postprocess.py runs (5,000 frames) and finds no event later than the bound."""
    script = Path(__file__).resolve().parents[2] / "bench" / "bench_postprocess.py"
    out = tmp_path / "pp.json"
    subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)], check=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["delay_frames"]["max"] <= report["delay_frames"]["bound"] == 11
    assert report["offline_tuple"]["events"] > 100


@pytest.mark.parametrize("grouping", ["tuple", "label"])
def test_a_long_video_is_post_processed_in_chunks_with_the_events_of_one_push(grouping: str) -> None:
    """postprocess() pushes a long video OFFLINE_CHUNK frames at a time (bounded memory); its events
    are those of the whole video in one push, across several chunk boundaries."""
    from vce.runtime.online import OFFLINE_CHUNK

    rng = np.random.default_rng(3)
    n = 2 * OFFLINE_CHUNK + 777
    # runs of random length, so events straddle the chunk boundaries
    probs = np.repeat(rng.random((n // 9 + 1, len(LABELS))), 9, axis=0)[:n].astype(np.float32)
    probs += rng.normal(0, 0.05, probs.shape).astype(np.float32)
    frames = np.arange(n) * 2 + 5
    config = PostprocessConfig(median=5, min_run=3, max_gap=4, grouping=grouping)
    one = order_events(OnlinePostprocessor(0.5, config).push(frames, probs, final=True), config.grouping)
    got = postprocess(probs, frames, 0.5, config)
    assert len(got) > 100 and got == one
    assert any(e["start"] < frames[OFFLINE_CHUNK] <= e["end"] for e in got)  # one crosses a boundary
