"""The runtime's preprocessing against open_clip's own BiomedCLIP transform (PIL + torchvision)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
from PIL import Image  # noqa: E402

from vce.runtime.preprocess import BIOMEDCLIP, PreprocessSpec, preprocess, resize_crops  # noqa: E402


def capsule_frame(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Mucosa-like: warm textured tissue, folds, specular highlights, a dark circular vignette."""
    rng = np.random.default_rng(seed)
    h, w = shape
    size = max(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / size
    tissue = np.stack(
        [190 + 30 * np.sin(9 * xx + 4 * yy), 95 + 25 * np.sin(7 * yy), 80 + 10 * np.cos(5 * xx)], -1
    )
    texture = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), size / 120)
    vignette = np.clip(1.25 - 1.6 * np.hypot(xx - w / size / 2, yy - h / size / 2), 0, 1)[..., None]
    img = (tissue + texture) * vignette
    for _ in range(6):
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        cv2.circle(img, (int(cx), int(cy)), int(rng.integers(2, 6)), (255, 255, 255), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


# Olympus, NaviCam, PillCam, 576-px capsules, 1080p video (landscape and portrait)
@pytest.mark.parametrize(
    "shape", [(336, 336), (480, 480), (512, 512), (576, 576), (1080, 1920), (1920, 1080)]
)
def test_preprocessing_matches_open_clip_transform(shape: tuple[int, int]) -> None:
    transform = open_clip.image_transform(224, is_train=False, mean=BIOMEDCLIP.mean, std=BIOMEDCLIP.std)
    frames = [capsule_frame(shape, seed) for seed in range(3)]
    ref = np.stack([transform(Image.fromarray(f)).numpy() for f in frames])
    ours = preprocess(frames)
    # the same Pillow resampling: the only difference left is float rounding of the normalisation
    assert np.abs(ours - ref).max() < 1e-5
    # and the uint8 crops are exactly the ones of its Resize + CenterCrop
    crops = np.stack(
        [np.asarray(transform.transforms[1](transform.transforms[0](Image.fromarray(f)))) for f in frames]
    )
    assert np.array_equal(resize_crops(frames), crops)
    assert np.array_equal(resize_crops([f[..., ::-1] for f in frames], bgr=True), crops)
    fast = preprocess(frames, PreprocessSpec(resample="cv2-area"))
    # the OpenCV shortcut (no PIL antialiasing) differs at sharp edges such as specular highlights:
    # measured max ~0.36, mean ~2e-3 in normalised units (1 grey level ~ 0.015)
    diff = np.abs(fast - ref)
    assert diff.mean() < 0.01 and diff.max() < 0.6
    assert diff.max() > 1e-3  # it is an approximation, not the reference
