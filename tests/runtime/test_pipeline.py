"""The inference pipeline: batching, bounded prefetch, stride and fill, resume, corrupt frames, NaN."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from runtime_testdata import FAST_SPEC, SEQUENCE, colour_frames, make_onnx, write_folder, write_video

from vce.runtime.backends.base import Runner
from vce.runtime.backends.ort import OrtRunner
from vce.runtime.errors import VCEError
from vce.runtime.pipeline import PipelineOptions, fill_probs, infer_sources
from vce.runtime.preprocess import preprocess
from vce.runtime.sources import FolderSource, FrameSlot, Source, discover


class Counting(Runner):
    """Wraps a runner; counts frames; optionally raises after ``fail_after`` calls or sleeps."""

    def __init__(self, inner: Runner, fail_after: int | None = None, sleep: float = 0.0) -> None:
        self.inner, self.fail_after, self.sleep = inner, fail_after, sleep
        self.calls = 0
        self.frames = 0

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.frames += images.shape[0]
        time.sleep(self.sleep)
        return self.inner.infer(images)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> OrtRunner:
    return OrtRunner(make_onnx(tmp_path_factory.mktemp("m") / "model.onnx"), threads=1)


def _run(sources: list[Source], runner: Runner, **kw: object) -> list:  # type: ignore[type-arg]
    partial = kw.pop("partial_dir", None)
    opts = PipelineOptions(**kw)  # type: ignore[arg-type]
    return list(
        infer_sources(sources, runner, spec=FAST_SPEC, options=opts, partial_dir=partial, model_hash="m1")
    )


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_batched_pipeline_equals_direct_inference(
    batch: int, video_file: Path, frame_folder: Path, runner: OrtRunner
) -> None:
    sources = discover([video_file, frame_folder])
    results = _run(sources, runner, batch=batch, workers=2)
    assert [r.video for r in results] == ["vid_a", "vid_b"]
    for src, res in zip(sources, results, strict=True):
        images = [s.image for s in src.slots()]
        direct = runner.infer(preprocess(images, FAST_SPEC, bgr=True))["probs"]
        np.testing.assert_allclose(res.probs, direct, rtol=0, atol=1e-6)
        assert res.frames.tolist() == list(range(len(SEQUENCE))) and res.inferred.all()


def test_prefetch_is_bounded(tmp_path: Path, runner: OrtRunner) -> None:
    src = FolderSource(write_folder(tmp_path / "long", colour_frames("k" * 120)))
    yielded = []
    original = src.slots

    def counting_slots(*a: object, **kw: object) -> Iterator[FrameSlot]:
        for slot in original(*a, **kw):  # type: ignore[arg-type]
            yielded.append(slot.position)
            yield slot

    src.slots = counting_slots  # type: ignore[method-assign]
    seen_at_first_batch = []

    class Slow(Counting):
        def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
            if not self.calls:
                time.sleep(0.5)  # the reader runs ahead meanwhile, but only so far
                seen_at_first_batch.append(len(yielded))
            return super()._infer(images)

    (res,) = _run([src], Slow(runner), batch=2, workers=1, prefetch=2)
    assert res.frames.size == 120
    # queue (2) + one unit being put + one being cut + the one running: a few units of 2, not 120
    assert seen_at_first_batch[0] <= 2 * 6


@pytest.mark.parametrize("stride", [2, 5, 7])
def test_stride_infers_every_kth_and_the_last_frame(
    stride: int, video_file: Path, frame_folder: Path, runner: OrtRunner
) -> None:
    sources = discover([video_file, frame_folder])
    full = _run(sources, runner)
    counting = Counting(runner)
    strided = _run(sources, counting, stride=stride, batch=4, fill="hold")
    n = len(SEQUENCE)
    expect = sorted({*range(0, n, stride), n - 1})
    assert counting.frames == 2 * len(expect)
    for f, s in zip(full, strided, strict=True):
        assert np.flatnonzero(s.inferred).tolist() == expect
        np.testing.assert_allclose(s.probs[expect], f.probs[expect], atol=1e-6)
        mask = np.zeros(n, bool)
        mask[expect] = True
        np.testing.assert_allclose(s.probs, fill_probs(f.probs, mask, "hold"), atol=1e-6)


def test_fill_hold_and_linear_hand_worked() -> None:
    p = np.array([[0.0], [9.0], [9.0], [0.6], [9.0], [1.0]])
    mask = np.array([True, False, False, True, False, True])
    assert fill_probs(p, mask, "hold")[:, 0].tolist() == [0.0, 0.0, 0.0, 0.6, 0.6, 1.0]
    np.testing.assert_allclose(fill_probs(p, mask, "linear")[:, 0], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    late = np.array([False, True, False, False, False, False])
    assert fill_probs(p, late, "hold")[:, 0].tolist() == [9.0] * 6  # before the first: the first


def test_interrupted_run_resumes_from_its_partials(tmp_path: Path, runner: OrtRunner) -> None:
    folder = write_folder(tmp_path / "v", colour_frames(SEQUENCE))
    partial = tmp_path / "out" / ".partial"
    partial.mkdir(parents=True)
    reference = _run(discover([folder]), runner)[0]
    with pytest.raises(KeyboardInterrupt):
        _run(
            discover([folder]),
            Counting(runner, fail_after=2),
            batch=4,
            partial_dir=partial,
            checkpoint_seconds=0,
        )
    assert len(list(partial.glob("*.npz"))) == 1
    second = Counting(runner)
    resumed = _run(discover([folder]), second, batch=4, partial_dir=partial, checkpoint_seconds=0)[0]
    assert second.frames == len(SEQUENCE) - 8  # the two finished batches were not redone
    assert resumed.resumed
    np.testing.assert_allclose(resumed.probs, reference.probs, atol=1e-6)
    assert resumed.frames.tolist() == reference.frames.tolist()
    # a finished video is not inferred again; another model or input starts over
    third = Counting(runner)
    _run(discover([folder]), third, batch=4, partial_dir=partial)
    assert third.frames == 0
    other = Counting(runner)
    list(
        infer_sources(
            discover([folder]),
            other,
            spec=FAST_SPEC,
            options=PipelineOptions(),
            partial_dir=partial,
            model_hash="m2",
        )
    )
    assert other.frames == len(SEQUENCE)


def test_corrupt_frames_are_excluded_and_all_corrupt_is_an_error(tmp_path: Path, runner: OrtRunner) -> None:
    folder = write_folder(tmp_path / "v", colour_frames(SEQUENCE))
    for n in (3, 20):
        (folder / f"frame_{n:06d}.png").write_bytes(b"not a png")
    (res,) = _run(discover([folder]), runner, stride=2)
    assert res.corrupt == [3, 20]
    assert 3 not in res.frames and 20 not in res.frames and res.frames.size == len(SEQUENCE) - 2
    bad = write_folder(tmp_path / "bad", colour_frames("kk"))
    for f in bad.iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(VCEError, match=r"no decodable frame \(all 2 frame\(s\) are corrupt\)"):
        _run(discover([bad]), runner)


def test_nan_outputs_are_an_error(tmp_path: Path, frame_folder: Path) -> None:
    nan_runner = OrtRunner(make_onnx(tmp_path / "nan.onnx", nan=True))
    with pytest.raises(VCEError, match="NaN/Inf probabilities"):
        _run(discover([frame_folder]), nan_runner)


def _many_videos(tmp_path: Path) -> list[Source]:
    """A long video first, then short ones: the short ones finish before it."""
    paths = [write_video(tmp_path / "a_long.avi", colour_frames("kr" * 40, seed=1))]
    for i, seq in enumerate(["rg" * 3, "gb", "bkkr" * 2, "g"]):
        paths.append(write_video(tmp_path / f"b{i}_short.avi", colour_frames(seq, seed=2 + i)))
    paths.append(write_folder(tmp_path / "c_folder", colour_frames("kgb" * 5, seed=9)))
    return discover(paths)


@pytest.mark.parametrize("with_partials", [False, True])
def test_parallel_videos_yield_in_input_order_the_sequential_results(
    tmp_path: Path, runner: OrtRunner, with_partials: bool
) -> None:
    sources = _many_videos(tmp_path)
    sequential = _run(sources, runner, batch=3, parallel_videos=1)
    partial = None
    if with_partials:
        partial = tmp_path / "partials"
        partial.mkdir()

    class Recording(Counting):
        def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
            time.sleep(0.002)
            return super()._infer(images)

    rec = Recording(runner)
    seen: list[str] = []
    results = list(
        infer_sources(
            sources,
            rec,
            spec=FAST_SPEC,
            options=PipelineOptions(batch=3, parallel_videos=4, workers=2),
            partial_dir=partial,
            on_frames=lambda video, n: seen.append(video),
        )
    )
    order = [r.video for r in results]
    assert order == [s.video_id for s in sources]
    assert not any(r.resumed for r in results)  # those that waited on disk were made in this run
    for a, b in zip(sequential, results, strict=True):
        assert a.video == b.video and np.array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.probs, b.probs)
    # the videos really were interleaved: a short one's batches came before the long one ended
    first_short = seen.index("b0_short")
    assert "a_long" in seen[first_short:]


def test_parallel_videos_option_is_checked() -> None:
    with pytest.raises(VCEError, match="--parallel-videos must be at least 1"):
        PipelineOptions(parallel_videos=0)


def test_a_uint8_graph_gets_uint8_crops_and_the_same_probabilities(
    tmp_path: Path, video_file: Path, frame_folder: Path, runner: OrtRunner
) -> None:
    import onnx

    from vce.export.uint8_input import add_uint8_input

    model = add_uint8_input(onnx.load(str(make_onnx(tmp_path / "f.onnx"))), FAST_SPEC)
    onnx.save(model, str(tmp_path / "u8.onnx"))
    u8 = OrtRunner(tmp_path / "u8.onnx", threads=1)
    got: list[np.dtype] = []

    class Spy(Counting):
        input_dtype = np.dtype(np.uint8)

        def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
            got.append(images.dtype)
            assert images.shape[1:] == (FAST_SPEC.image_size, FAST_SPEC.image_size, 3)
            return super()._infer(images)

    sources = discover([video_file, frame_folder])
    ref = _run(sources, runner, batch=4)
    out = _run(sources, Spy(u8), batch=4)
    assert set(got) == {np.dtype(np.uint8)}
    for a, b in zip(ref, out, strict=True):
        np.testing.assert_array_equal(a.probs, b.probs)
