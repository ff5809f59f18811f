"""The inference pipeline: batching, bounded prefetch, stride and fill, resume, corrupt frames, NaN."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from runtime_testdata import FAST_SPEC, SEQUENCE, colour_frames, make_onnx, write_folder

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

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
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
        def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
            if not self.calls:
                time.sleep(0.5)  # the reader runs ahead meanwhile, but only so far
                seen_at_first_batch.append(len(yielded))
            return super().infer(images)

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
