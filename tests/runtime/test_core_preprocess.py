"""The one preprocessing: Pillow bicubic resize + centre crop + CLIP normalisation.

The bytes must be the ones vce gave before it called Pillow: ``pil_oracle`` keeps that numpy
implementation frozen as the oracle.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from pil_oracle import oracle_resize_crop

from vce.runtime.errors import VCEError
from vce.runtime.preprocess import (
    BIOMEDCLIP,
    PreprocessSpec,
    normalise,
    normalise_constants,
    preprocess,
    resize_crop,
    resize_crops,
)


def pil_reference(img: np.ndarray, size: int = 224) -> np.ndarray:
    """torchvision's Resize(size, BICUBIC) + CenterCrop(size) on a PIL image, written with PIL alone."""
    h, w = img.shape[:2]
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    out = Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC)
    top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
    return np.asarray(out)[top : top + size, left : left + size]


def mucosa_like(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array([200, 110, 90], dtype=np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), 4)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "shape", [(512, 512), (336, 336), (480, 480), (480, 640), (640, 360), (224, 224), (120, 90)]
)
def test_resize_crop_is_bit_exact_with_pil(shape: tuple[int, int]) -> None:
    img = mucosa_like(*shape, seed=sum(shape))
    ours = resize_crop(img)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, pil_reference(img))


#: frame sizes (h, w) of capsule cameras and of videos people feed in: square 336/480/512/576,
#: 1080p and 720p landscape, portrait phones, odd and tiny sizes, upscaling (< 224)
ORACLE_SHAPES = [
    (336, 336), (576, 576), (480, 480), (512, 512), (1080, 1920), (720, 1280), (1920, 1080),
    (640, 360), (481, 367), (225, 224), (224, 225), (1001, 223), (100, 150), (57, 31), (3, 1000),
]  # fmt: skip


@pytest.mark.parametrize("shape", ORACLE_SHAPES)
def test_pillow_resize_gives_the_former_numpy_bytes(shape: tuple[int, int]) -> None:
    """Byte-identical to vce's former numpy resampler (the frozen oracle), RGB and BGR input."""
    rng = np.random.default_rng(sum(shape))
    img = (
        mucosa_like(*shape, seed=sum(shape))
        if min(shape) >= 16
        else rng.integers(0, 256, (*shape, 3), np.uint8)
    )
    ref = oracle_resize_crop(img)
    assert np.array_equal(resize_crop(img), ref)
    assert np.array_equal(resize_crop(np.ascontiguousarray(img[..., ::-1]), bgr=True), ref)


def test_random_sizes_and_settings_match_the_oracle() -> None:
    """40 random frame sizes x output sizes x shortest/squash, random noise (the hardest content)."""
    rng = np.random.default_rng(15)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(8, 1300, 2))
        size = int(rng.choice([32, 224, 336, 384]))
        resize = str(rng.choice(["shortest", "squash"]))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        spec = PreprocessSpec(image_size=size, resize=resize)  # type: ignore[arg-type]
        assert np.array_equal(resize_crop(img, spec), oracle_resize_crop(img, size, resize)), (
            h,
            w,
            size,
            resize,
        )


def test_resize_crops_batches_bgr_frames_into_rgb_crops() -> None:
    frames = [mucosa_like(336, 336, 1), mucosa_like(1080, 1920, 2)[..., ::-1]]
    out = resize_crops(frames, bgr=True)
    assert out.shape == (2, 224, 224, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0], oracle_resize_crop(np.ascontiguousarray(frames[0][..., ::-1])))
    assert np.array_equal(out[1], oracle_resize_crop(mucosa_like(1080, 1920, 2)))


def test_random_noise_is_also_exact() -> None:
    img = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    assert np.array_equal(resize_crop(img), pil_reference(img))


def test_normalise_values_and_layout() -> None:
    img = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    img[..., 0] = 255
    x = normalise(img)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx((1.0 - BIOMEDCLIP.mean[0]) / BIOMEDCLIP.std[0], abs=1e-6)
    assert x[0, 1, 0, 0] == pytest.approx(-BIOMEDCLIP.mean[1] / BIOMEDCLIP.std[1], abs=1e-6)


def test_normalise_table_is_bit_identical_to_the_arithmetic() -> None:
    img = np.random.default_rng(1).integers(0, 256, (3, 17, 13, 3), dtype=np.uint8)
    mean = np.asarray(BIOMEDCLIP.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    inv_std = (1.0 / np.asarray(BIOMEDCLIP.std, dtype=np.float32)).reshape(1, 3, 1, 1)
    direct = (img.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0) - mean) * inv_std
    assert np.array_equal(normalise(img), direct)
    scale, m, inv = normalise_constants(BIOMEDCLIP)  # what the uint8 graph bakes in
    assert scale.dtype == m.dtype == inv.dtype == np.float32
    assert np.array_equal(m.reshape(1, 3, 1, 1), mean) and np.array_equal(inv.reshape(1, 3, 1, 1), inv_std)
    assert scale == np.float32(1.0 / 255.0)
    with pytest.raises(VCEError, match="expects uint8 RGB"):
        normalise(img.astype(np.float32))


def test_preprocess_batch_bgr_and_empty() -> None:
    a, b = mucosa_like(336, 336, 1), mucosa_like(512, 512, 2)
    rgb = preprocess([a, b])
    bgr = preprocess([a[..., ::-1], b[..., ::-1]], bgr=True)
    assert rgb.shape == (2, 3, 224, 224)
    assert np.array_equal(rgb, bgr)
    assert preprocess([]).shape == (0, 3, 224, 224)


def test_fast_resamplers_are_close() -> None:
    img = mucosa_like(512, 512, 3)
    exact = resize_crop(img).astype(int)
    for mode in ("cv2-area", "cv2-cubic"):
        approx = resize_crop(img, PreprocessSpec(resample=mode)).astype(int)  # type: ignore[arg-type]
        assert np.abs(approx - exact).max() <= 8


def test_spec_round_trip_and_bad_input() -> None:
    spec = PreprocessSpec(resample="cv2-area")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(VCEError):
        PreprocessSpec.from_dict({"resample": "nearest"})
    with pytest.raises(VCEError, match="uint8"):
        resize_crop(np.zeros((10, 10), dtype=np.uint8))


def test_pass_order_is_pinned_for_frames_more_than_two_to_one_tall() -> None:
    """Pillow 13 resizes such frames vertically first (one call); vce keeps the classic order."""
    import PIL

    img = np.random.default_rng(2).integers(0, 256, (1000, 300, 3), dtype=np.uint8)
    assert np.array_equal(resize_crop(img), oracle_resize_crop(img))
    if int(PIL.__version__.split(".")[0]) >= 13:  # the one-call resize gives other bytes there
        assert not np.array_equal(pil_reference(img), oracle_resize_crop(img))
