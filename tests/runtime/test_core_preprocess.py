"""The one preprocessing: PIL-exact bicubic resize + centre crop + CLIP normalisation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from vce.runtime.errors import VCEError
from vce.runtime.preprocess import BIOMEDCLIP, PreprocessSpec, normalise, preprocess, resize_crop


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
