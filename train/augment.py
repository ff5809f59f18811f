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
_MEAN_U8 = np.array(CLIP_MEAN, dtype=np.float32) * 255.0
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


def augment(crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = PAPER_AUGMENT) -> np.ndarray:
    """One augmented copy of an RGB uint8 crop [S, S, 3] (same shape and dtype)."""
    h, w = crop.shape[:2]
    img = cv2.warpAffine(
        np.ascontiguousarray(crop),
        _geometry(h, w, rng, cfg),
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    x = img.astype(np.float32)
    if cfg.brightness > 0:
        x *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast > 0:
        mean = float(np.asarray(cv2.mean(x)[:3]) @ _GRAY)
        c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        x = x * c + mean * (1.0 - c)
    if cfg.saturation > 0:
        sat = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
        x = x * sat + (x @ _GRAY)[..., None] * (1.0 - sat)
    if rng.random() < cfg.grayscale:
        x = np.repeat((x @ _GRAY)[..., None], 3, axis=2)
    if rng.random() < cfg.erasing:
        a = h * w * rng.uniform(*cfg.erasing_area)
        r = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        eh, ew = min(h, round(np.sqrt(a * r))), min(w, round(np.sqrt(a / r)))
        y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
        x[y0 : y0 + eh, x0 : x0 + ew] = _MEAN_U8
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)
