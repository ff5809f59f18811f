"""Data discovery (Galar and RARE-VISION layouts), clear errors, split by video, stride, crop cache."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.runtime.preprocess import BIOMEDCLIP, resize_crop
from vce.train.augment import AugmentConfig, augment
from vce.train.data import FrameSet, build_crops, find_videos, split_videos


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def test_galar_layout(synth_data: Path) -> None:
    videos = find_videos(synth_data)
    assert [v.video for v in videos] == ["synth_000", "synth_001", "synth_002"]
    v = videos[0]
    assert len(v.frames) == 60 and v.labels is not None and v.labels.shape == (60, 17)
    assert v.frame_numbers[:3].tolist() == [0, 1, 2]
    s = v.strided(5)
    assert s.frame_numbers.tolist() == list(range(0, 60, 5)) and np.array_equal(s.labels, v.labels[::5])
    assert [x.video for x in find_videos(synth_data, videos=["synth_001"])] == ["synth_001"]


def test_index_column_and_rare_vision_layout(synth_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "rv"
    shutil.copytree(synth_data / "frames" / "synth_000", root / "vid_a")
    text = (synth_data / "labels" / "synth_000.csv").read_text().splitlines()
    rows = [line.split(",", 1) for line in text[1:]]
    # RARE-VISION: a frame_file column and the CSV beside the folder
    body = "\n".join(f"frame_{int(n):06d}.png,{rest}" for n, rest in rows)
    (root / "vid_a.csv").write_text("frame_file," + text[0].split(",", 1)[1] + "\n" + body + "\n")
    videos = find_videos(root)
    assert [v.video for v in videos] == ["vid_a"] and len(videos[0].frames) == 60
    ref = find_videos(synth_data, videos=["synth_000"])[0]
    assert np.array_equal(videos[0].labels, ref.labels)
    # Galar's updated labels: an `index` column
    (root / "vid_a.csv").write_text(
        "index," + text[0].split(",", 1)[1] + "\n" + "\n".join(",".join(r) for r in rows)
    )
    assert np.array_equal(find_videos(root)[0].labels, ref.labels)


def test_missing_frames_error(synth_data: Path, tmp_path: Path) -> None:
    data = _copy(synth_data, tmp_path)
    (data / "frames" / "synth_001" / "frame_000007.png").unlink()
    with pytest.raises(VCEError, match=r"synth_001.*frame 7"):
        find_videos(data)


def test_unknown_label_column_error(synth_data: Path, tmp_path: Path) -> None:
    data = _copy(synth_data, tmp_path)
    csv = data / "labels" / "synth_000.csv"
    csv.write_text(csv.read_text().replace("polyp", "polypp", 1))
    with pytest.raises(VCEError, match="unknown label column"):
        find_videos(data)


def test_empty_video_and_missing_labels_errors(synth_data: Path, tmp_path: Path) -> None:
    data = _copy(synth_data, tmp_path)
    csv = data / "labels" / "synth_002.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    with pytest.raises(VCEError, match="empty"):
        find_videos(data)
    csv.unlink()
    with pytest.raises(VCEError, match="no label CSV"):
        find_videos(data)
    assert len(find_videos(data, labels=False)) == 3  # prediction needs no labels
    for f in (data / "frames" / "synth_002").iterdir():
        f.unlink()
    with pytest.raises(VCEError, match=r"no image frames|no label CSV"):
        find_videos(data)
    with pytest.raises(VCEError, match="no such data folder"):
        find_videos(tmp_path / "nowhere")


def test_labels_without_frames_error(synth_data: Path, tmp_path: Path) -> None:
    data = _copy(synth_data, tmp_path)
    shutil.rmtree(data / "frames" / "synth_002")
    with pytest.raises(VCEError, match="no frame folder"):
        find_videos(data)


def test_split_by_video() -> None:
    ids = [f"v{i}" for i in range(10)]
    train, val = split_videos(ids, 0.2, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert split_videos(ids, 0.2, seed=1) == (train, val)
    assert split_videos(ids, 0.2, seed=1, val_videos=["v3"]) == ([i for i in ids if i != "v3"], ["v3"])
    assert split_videos(["a", "b"], 0.01, seed=0)[1] in (["a"], ["b"])
    with pytest.raises(VCEError, match="only 1 video"):
        split_videos(["a"], 0.2, seed=0)
    with pytest.raises(VCEError, match="not among"):
        split_videos(ids, 0.2, seed=0, val_videos=["zz"])


def test_crop_cache_matches_runtime_preprocessing(synth_data: Path, tmp_path: Path) -> None:
    fs = FrameSet.from_sources([v.strided(20) for v in find_videos(synth_data)])
    assert len(fs) == 9 and fs.labels.shape == (9, len(LABELS))
    crops = build_crops(fs.paths, BIOMEDCLIP)
    rgb = cv2.imread(str(fs.paths[4]))[..., ::-1]
    assert np.array_equal(crops[4], resize_crop(np.ascontiguousarray(rgb), BIOMEDCLIP))
    cached = build_crops(fs.paths, BIOMEDCLIP, cache_dir=tmp_path / "cache")
    assert isinstance(cached, np.memmap) and np.array_equal(np.asarray(cached), crops)
    files = list((tmp_path / "cache").glob("crops-*.u8"))
    assert len(files) == 1
    again = build_crops(fs.paths, BIOMEDCLIP, cache_dir=tmp_path / "cache")  # reused, not rebuilt
    assert np.array_equal(np.asarray(again), crops) and list((tmp_path / "cache").glob("crops-*.u8")) == files


def _augment_by_steps(crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """The colour jitter as the paper's pipeline applies it, one step after another in float64."""
    from vce.train.augment import _GRAY, _geometry

    h, w = crop.shape[:2]
    img = cv2.warpAffine(
        crop, _geometry(h, w, rng, cfg), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    x, g = img.astype(np.float64), _GRAY.astype(np.float64)
    x *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    x = x * c + float(x.reshape(-1, 3).mean(axis=0) @ g) * (1 - c)
    s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    x = x * s + (x @ g)[..., None] * (1 - s)
    if rng.random() < cfg.grayscale:
        x = np.repeat((x @ g)[..., None], 3, axis=2)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def test_augment_colour_jitter_is_the_steps_composed() -> None:
    """One affine colour map == brightness, contrast, saturation (and grayscale) in turn, to +-1."""
    crop = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cfg = dataclasses.replace(AugmentConfig(), erasing=0, grayscale=0.5)
    for i in range(40):
        fast = augment(crop, np.random.default_rng(i), cfg).astype(int)
        assert np.abs(fast - _augment_by_steps(crop, np.random.default_rng(i), cfg)).max() <= 1


def test_augment_shapes_determinism_identity() -> None:
    crop = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    a = augment(crop, np.random.default_rng(1))
    assert a.shape == crop.shape and a.dtype == np.uint8
    assert np.array_equal(a, augment(crop, np.random.default_rng(1)))
    assert not np.array_equal(a, crop)
    off = AugmentConfig(
        crop_scale=(1, 1),
        hflip=0,
        vflip=0,
        brightness=0,
        contrast=0,
        saturation=0,
        grayscale=0,
        rotation=0,
        erasing=0,
    )
    assert np.array_equal(augment(crop, np.random.default_rng(1), off), crop)
    flip = dataclasses.replace(off, hflip=1, vflip=1)
    assert np.array_equal(augment(crop, np.random.default_rng(1), flip), crop[::-1, ::-1])
