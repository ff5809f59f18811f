"""The synthetic capsule-video generator: layout, label structure, determinism, MP4 round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from vce.runtime.errors import VCEError
from vce.runtime.formats.labelcsv import read_labels_dir
from vce.runtime.labels import ANATOMY, LABEL_INDEX, LABELS, PATHOLOGY
from vce.train import synth

REGIONS = ["mouth", "esophagus", "stomach", "small intestine", "colon"]


def test_generate_video_shapes_and_determinism() -> None:
    f1, y1 = synth.generate_video(np.random.default_rng(7), 120, size=96)
    f2, y2 = synth.generate_video(np.random.default_rng(7), 120, size=96)
    f3, _ = synth.generate_video(np.random.default_rng(8), 120, size=96)
    assert f1.shape == (120, 96, 96, 3) and f1.dtype == np.uint8
    assert y1.shape == (120, 17) and set(np.unique(y1)) <= {0, 1}
    assert np.array_equal(f1, f2) and np.array_equal(y1, y2)
    assert not np.array_equal(f1, f3)


def test_anatomy_order_and_exclusivity() -> None:
    _, y = synth.generate_video(np.random.default_rng(1), 400, size=64)
    regions = y[:, [LABEL_INDEX[r] for r in REGIONS]]
    assert np.all(regions.sum(axis=1) == 1)  # exactly one region per frame
    # regions appear as one contiguous run each, in anatomical order
    seq = regions.argmax(axis=1)
    assert np.all(np.diff(seq) >= 0) and set(seq) == set(range(5))
    # landmarks: short runs, always with the region before them
    for landmark, region in synth.LANDMARKS.items():
        rows = np.flatnonzero(y[:, LABEL_INDEX[landmark]])
        assert 1 <= rows.size <= 20 and np.all(np.diff(rows) == 1)
        assert np.all(y[rows, LABEL_INDEX[region]] == 1)
    # at most one landmark per frame; anatomy labels never exceed region + landmark
    assert y[:, : len(ANATOMY)].sum(axis=1).max() <= 2


@pytest.mark.parametrize("seed", range(5))
def test_short_videos_keep_landmarks_long_enough_for_the_median_filter(seed: int) -> None:
    """At 120 frames (the demo's length) every landmark lasts LANDMARK_MIN frames or more, so the
    paper's median filter of 7 cannot erase it, and pathologies are dense (about one per 30 frames)."""
    segments, runs = synth.plan_runs(np.random.default_rng(seed), 120)
    for seg in segments:
        if seg.label in synth.LANDMARKS:
            assert seg.stop - seg.start >= synth.LANDMARK_MIN == 8
    assert len(runs) >= 3
    assert all(synth.PATHOLOGY_RUN[0] <= r.stop - r.start for r in runs)


def test_pathology_runs_have_known_lengths() -> None:
    rng = np.random.default_rng(3)
    segments, runs = synth.plan_runs(rng, 1000)
    assert len(runs) >= 6
    assert {r.label for r in runs} <= set(PATHOLOGY)
    for r in runs:
        assert synth.PATHOLOGY_RUN[0] <= r.stop - r.start <= synth.PATHOLOGY_RUN[1]
    y = synth.labels_from_runs(1000, segments, runs)
    assert y[:, len(ANATOMY) :].sum(axis=1).max() == 1  # pathology runs never overlap


@pytest.mark.parametrize("label", [*PATHOLOGY, *synth.LANDMARKS])
def test_every_pattern_is_visible_and_off_mucosa_colour(label: str) -> None:
    size = 256
    sprite = synth.make_sprite(np.random.default_rng(0), label, size)
    area = float(sprite.alpha.sum()) / size**2
    assert area > 0.01  # at least 1 % of the frame
    # nearly all of the shape's pixels are coloured unlike any region's mucosa
    regions = np.array(list(synth._REGION_RGB.values()), np.float32)
    distance = np.linalg.norm(sprite.rgb[:, :, None, :] - regions[None, None], axis=-1).min(axis=-1)
    w = sprite.alpha
    assert float((w * (distance > 50)).sum() / w.sum()) > 0.8


def test_pathology_frames_show_the_pattern() -> None:
    """Within one region, a pathology frame differs from its neighbours far more than quiet frames do."""
    plan, frames = synth.iter_video(np.random.default_rng(11), 300, size=96)
    video = np.stack(list(frames)).astype(np.float32)
    busy = plan.labels[:, len(ANATOMY) :].any(axis=1)
    region = plan.labels[:, : len(REGIONS)].argmax(axis=1)

    def changed(a: int, b: int) -> float:
        return float((np.abs(video[a] - video[b]).sum(-1) > 90).mean())

    quiet = [
        changed(t, t + 1) for t in range(299) if not busy[t : t + 2].any() and region[t] == region[t + 1]
    ]
    for run in plan.runs:
        t = run.start
        if t > 0 and not busy[t - 1] and region[t - 1] == region[t]:
            assert changed(t, t - 1) > 3 * np.median(quiet) + 0.005


def test_write_dataset_layout_and_labels(tmp_path) -> None:
    ids = synth.write_dataset(tmp_path / "d", videos=2, frames=30, seed=1, mp4=True, size=64)
    assert ids == ["synth_000", "synth_001"]
    frames = sorted((tmp_path / "d" / "frames" / "synth_000").iterdir())
    assert [p.name for p in frames[:2]] == ["frame_000000.png", "frame_000001.png"] and len(frames) == 30
    img = cv2.imread(str(frames[0]))
    assert img.shape == (64, 64, 3)
    labels = read_labels_dir(tmp_path / "d" / "labels")
    assert list(labels) == ids
    header = (tmp_path / "d" / "labels" / "synth_000.csv").read_text().splitlines()[0].split(",")
    assert header == ["frame", *LABELS]
    _, y = synth.generate_video(synth.video_rng(1, 0), 30, size=64)
    assert np.array_equal(labels["synth_000"].values, y)  # the files hold what the generator made
    cap = cv2.VideoCapture(str(tmp_path / "d" / "videos" / "synth_001.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 30
    meta = json.loads((tmp_path / "d" / "synth.json").read_text())
    assert meta["seed"] == 1 and set(meta["videos"]) == set(ids)
    assert not list((tmp_path / "d" / "frames").glob(".*"))  # no partial folders left


def test_png_round_trip_is_exact(tmp_path) -> None:
    synth.write_dataset(tmp_path, videos=1, frames=10, seed=2, size=64)
    frames, _ = synth.generate_video(synth.video_rng(2, 0), 10, size=64)
    disk = cv2.imread(str(tmp_path / "frames" / "synth_000" / "frame_000004.png"))[..., ::-1]
    assert np.array_equal(disk, frames[4])


def test_jpeg_frames_are_close_small_and_read_as_a_dataset(tmp_path) -> None:
    from vce.train.data import find_videos

    synth.write_dataset(tmp_path / "j", videos=1, frames=10, seed=2, size=64, image_format="jpg")
    synth.write_dataset(tmp_path / "p", videos=1, frames=10, seed=2, size=64)
    frames, labels = synth.generate_video(synth.video_rng(2, 0), 10, size=64)
    jpgs = sorted((tmp_path / "j" / "frames" / "synth_000").iterdir())
    assert [p.name for p in jpgs][:2] == ["frame_000000.jpg", "frame_000001.jpg"] and len(jpgs) == 10
    disk = cv2.imread(str(jpgs[4]))[..., ::-1].astype(int)
    assert np.abs(disk - frames[4]).mean() < 3  # quality 95: below the frames' own sensor noise (3)
    size = lambda root: sum(f.stat().st_size for f in (root / "frames" / "synth_000").iterdir())  # noqa: E731
    assert size(tmp_path / "j") < size(tmp_path / "p") / 2
    [src] = find_videos(tmp_path / "j")
    assert src.video == "synth_000" and np.array_equal(src.labels, labels)
    with pytest.raises(VCEError, match="--format must be one of png, jpg"):
        synth.write_dataset(tmp_path / "x", videos=1, frames=10, seed=2, size=64, image_format="gif")


def test_refuses_to_overwrite_and_bad_sizes(tmp_path) -> None:
    synth.write_dataset(tmp_path, videos=1, frames=10, seed=0, size=64)
    with pytest.raises(VCEError, match="already exists"):
        synth.write_dataset(tmp_path, videos=1, frames=10, seed=0, size=64)
    synth.write_dataset(tmp_path, videos=1, frames=12, seed=0, size=64, overwrite=True)
    assert len(list((tmp_path / "frames" / "synth_000").iterdir())) == 12
    with pytest.raises(VCEError, match="at least"):
        synth.generate_video(np.random.default_rng(0), 5)


def test_importable_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import vce.train, vce.train.synth\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
