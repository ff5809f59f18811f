"""Training augmentations on the uint8 RGB crop (before ``vce.runtime.preprocess.normalise``).

A numpy/OpenCV counterpart of the paper's torchvision pipeline: random resized crop (scale 0.7-1,
ratio 0.9-1.1), horizontal flip (p 0.5), vertical flip (p 0.3), brightness/contrast/saturation
jitter (0.3/0.3/0.2), grayscale (p 0.05), rotation (+-15 degrees) and random erasing (p 0.2,
area 2-15 %, filled with the normalisation mean, i.e. zeros after normalising). Hue jitter is left
out. Every draw comes from the ``rng`` passed in, so a (seed, epoch, index) triple fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vce.runtime.preprocess import CLIP_MEAN


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    hflip: float = 0.5
    vflip: float = 0.3
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2
    grayscale: float = 0.05
    rotation: float = 15.0
    erasing: float = 0.2
    erasing_area: tuple[float, float] = (0.02, 0.15)


PAPER_AUGMENT = AugmentConfig()
#: the erasing fill: the normalisation mean, i.e. zero after ``normalise``
_MEAN_U8 = np.round(np.array(CLIP_MEAN) * 255.0).astype(np.uint8)
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _crop_window(
    h: int, w: int, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop window (x0, y0, width, height); the whole image as fallback."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*cfg.crop_scale)
        ratio = np.exp(rng.uniform(np.log(cfg.crop_ratio[0]), np.log(cfg.crop_ratio[1])))
        cw, ch = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return (
                float(rng.integers(0, w - cw + 1)),
                float(rng.integers(0, h - ch + 1)),
                float(cw),
                float(ch),
            )
    return 0.0, 0.0, float(w), float(h)


def _geometry(h: int, w: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """One 2x3 matrix mapping output pixels to input pixels: rotation, flips, resized crop composed."""
    if cfg.crop_scale[0] < 1.0:
        x0, y0, cw, ch = _crop_window(h, w, rng, cfg)
    else:
        x0, y0, cw, ch = 0.0, 0.0, float(w), float(h)
    fx = -1.0 if rng.random() < cfg.hflip else 1.0
    fy = -1.0 if rng.random() < cfg.vflip else 1.0
    angle = np.deg2rad(rng.uniform(-cfg.rotation, cfg.rotation)) if cfg.rotation > 0 else 0.0
    cos, sin = np.cos(angle), np.sin(angle)
    centre = np.array([[1, 0, -(w - 1) / 2.0], [0, 1, -(h - 1) / 2.0], [0, 0, 1]])
    rotate = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    flip = np.diag([fx, fy, 1.0])
    window = np.array([[cw / w, 0, x0 + (cw - 1) / 2.0], [0, ch / h, y0 + (ch - 1) / 2.0], [0, 0, 1]])
    return (window @ flip @ rotate @ centre)[:2]


def _colour_matrix(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, bool]:
    """The colour jitter as one affine map of each RGB pixel (a 3x4 matrix), and whether it is a no-op.

    Brightness ``p -> b p``, contrast ``p -> c p + (1 - c) m`` (m: the mean grey of the image so
    far), saturation ``p -> s p + (1 - s) grey(p)`` and grayscale ``p -> grey(p)`` are all affine,
    so they compose into one matrix that OpenCV applies in a single pass. The grey weights sum to 1,
    so the saturation and grayscale maps keep a grey pixel grey and the offset stays ``(1 - c) m``.
    """
    m = np.eye(3)
    offset = 0.0
    gray = _GRAY.astype(np.float64)
    if cfg.brightness > 0:
        m *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast > 0:
        mean = float(np.asarray(cv2.mean(img)[:3]) @ gray) * m[0, 0]  # grey mean after brightness
        c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        m *= c
        offset = mean * (1.0 - c)
    if cfg.saturation > 0:
        sat = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
        m = (sat * np.eye(3) + (1.0 - sat) * np.outer(np.ones(3), gray)) @ m
    if rng.random() < cfg.grayscale:
        m = np.outer(np.ones(3), gray) @ m
    identity = offset == 0.0 and np.array_equal(m, np.eye(3))
    return np.concatenate([m, np.full((3, 1), offset)], axis=1), identity


def augment(crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = PAPER_AUGMENT) -> np.ndarray:
    """One augmented copy of an RGB uint8 crop [S, S, 3] (same shape and dtype).

    Geometry (one bilinear warp), then the colour jitter (one affine colour map, rounded and
    saturated to uint8), then random erasing: three passes over the image, all in OpenCV/uint8.
    """
    h, w = crop.shape[:2]
    img = cv2.warpAffine(
        np.ascontiguousarray(crop),
        _geometry(h, w, rng, cfg),
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    colour, identity = _colour_matrix(img, rng, cfg)
    if not identity:
        img = cv2.transform(img, colour)
    if rng.random() < cfg.erasing:
        a = h * w * rng.uniform(*cfg.erasing_area)
        r = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        eh, ew = min(h, round(np.sqrt(a * r))), min(w, round(np.sqrt(a / r)))
        y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
        img[y0 : y0 + eh, x0 : x0 + ew] = _MEAN_U8
    return img
