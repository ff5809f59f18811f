"""The toolkit's one preprocessing: BiomedCLIP's image transform in numpy/OpenCV.

open_clip's BiomedCLIP transform is: convert to RGB, resize the shortest side to 224 with PIL's
bicubic filter (antialiased), centre crop 224, scale to [0, 1], normalise with the CLIP mean/std.
``resample="pil-bicubic"`` (the default) reproduces PIL's resampling bit for bit: the same filter,
the same support scaling, the same 22-bit fixed-point coefficients, horizontal then vertical pass
each rounded to uint8. ``"cv2-area"`` and ``"cv2-cubic"`` are faster approximations for edge devices.

Training uses this function too (augmentations are applied to the uint8 frame before it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from vce.runtime.errors import VCEError

Resample = Literal["pil-bicubic", "cv2-area", "cv2-cubic"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessSpec:
    """What the model expects; stored in every bundle manifest and model config."""

    image_size: int = 224
    resize: Literal["shortest", "squash"] = "shortest"
    crop: Literal["center"] = "center"
    resample: Resample = "pil-bicubic"
    mean: tuple[float, float, float] = field(default=CLIP_MEAN)
    std: tuple[float, float, float] = field(default=CLIP_STD)
    channel_order: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(x) for x in known[key])
        spec = cls(**known)
        if spec.resample not in ("pil-bicubic", "cv2-area", "cv2-cubic"):
            raise VCEError(f"unknown resample {spec.resample!r} in the preprocessing spec")
        return spec


BIOMEDCLIP = PreprocessSpec()

# --- PIL-exact bicubic resampling -----------------------------------------------------------------

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit images


def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    out = np.zeros_like(x)
    m1 = x < 1.0
    m2 = (x >= 1.0) & (x < 2.0)
    out[m1] = ((a + 2.0) * x[m1] - (a + 3.0)) * x[m1] * x[m1] + 1.0
    out[m2] = (((x[m2] - 5.0) * x[m2] + 8.0) * x[m2] - 4.0) * a
    return out


@functools.lru_cache(maxsize=64)
def _pil_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the bicubic filter.

    Returns (indices [out, taps], integer weights [out, taps]); unused taps have weight 0.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    taps = int(np.ceil(support)) * 2 + 1
    idx = np.zeros((out_size, taps), dtype=np.int64)
    weights = np.zeros((out_size, taps), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = _bicubic((np.arange(xmax) + xmin - center + 0.5) / filterscale)
        total = k.sum()
        if total != 0.0:
            k = k / total
        scaled = k * (1 << _PRECISION_BITS)
        fixed = np.where(scaled < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int64)
        idx[xx, :xmax] = np.arange(xmax) + xmin
        weights[xx, :xmax] = fixed
    idx.setflags(write=False)
    weights.setflags(write=False)
    return idx, weights


def _pil_pass(img: np.ndarray, out_size: int, axis: int, keep: slice) -> np.ndarray:
    """One separable pass along ``axis`` of uint8 ``img``; only output positions ``keep``.

    Sums tap by tap (at most ~11 taps for 512 -> 224) in exact integer arithmetic.
    """
    idx, w = _pil_coeffs(img.shape[axis], out_size)
    idx, w = idx[keep], w[keep]
    shape = [1] * img.ndim
    shape[axis] = w.shape[0]
    acc = np.full(
        (*img.shape[:axis], w.shape[0], *img.shape[axis + 1 :]), 1 << (_PRECISION_BITS - 1), dtype=np.int64
    )
    for tap in range(w.shape[1]):
        weights = w[:, tap]
        if not weights.any():
            continue
        acc += np.take(img, idx[:, tap], axis=axis) * weights.reshape(shape)
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def _resized_size(h: int, w: int, size: int, mode: str) -> tuple[int, int]:
    """torchvision's Resize(int) output size: the short side to ``size``, the long side truncated."""
    if mode == "squash":
        return size, size
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def _crop_box(h: int, w: int, size: int) -> tuple[slice, slice]:
    """torchvision's CenterCrop offsets (Python round, as torchvision)."""
    top = round((h - size) / 2.0)
    left = round((w - size) / 2.0)
    return slice(top, top + size), slice(left, left + size)


def resize_crop(frame: np.ndarray, spec: PreprocessSpec = BIOMEDCLIP) -> np.ndarray:
    """Resize (shortest side) and centre-crop one RGB uint8 HxWx3 frame to ``image_size``."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise VCEError(f"expected an HxWx3 uint8 image, got shape {frame.shape} dtype {frame.dtype}")
    h, w = frame.shape[:2]
    size = spec.image_size
    nh, nw = _resized_size(h, w, size, spec.resize)
    rows, cols = _crop_box(nh, nw, size)
    if spec.resample == "pil-bicubic":
        out = frame
        if nw != w:
            out = _pil_pass(out, nw, axis=1, keep=cols)
        else:
            out = out[:, cols]
        if nh != h:
            out = _pil_pass(out, nh, axis=0, keep=rows)
        else:
            out = out[rows]
        return np.ascontiguousarray(out)
    interp = cv2.INTER_AREA if spec.resample == "cv2-area" else cv2.INTER_CUBIC
    if (nh, nw) != (h, w):
        frame = cv2.resize(frame, (nw, nh), interpolation=interp)
    return np.ascontiguousarray(frame[rows, cols])


@functools.lru_cache(maxsize=8)
def _normalise_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """[1, 256, 3] float32: every uint8 value of each channel, normalised with the same float32 ops."""
    values = np.arange(256, dtype=np.float32)[:, None] * np.float32(1.0 / 255.0)
    lut = (values - np.asarray(mean, dtype=np.float32)) * (1.0 / np.asarray(std, dtype=np.float32))
    return np.ascontiguousarray(lut.astype(np.float32)[None])


def normalise(images: np.ndarray, spec: PreprocessSpec = BIOMEDCLIP) -> np.ndarray:
    """uint8 [N,H,W,3] RGB -> float32 [N,3,H,W], scaled to [0,1] and normalised.

    A 256-entry table per channel (OpenCV's LUT): the same float32 arithmetic, done once per value
    instead of once per pixel (~8x faster).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise VCEError(f"normalise expects uint8 RGB images [N,H,W,3], got {images.dtype} {images.shape}")
    lut = _normalise_lut(tuple(map(float, spec.mean)), tuple(map(float, spec.std)))
    n, h, w, _ = images.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for i in range(n):
        out[i] = cv2.LUT(np.ascontiguousarray(images[i]), lut).transpose(2, 0, 1)
    return out


def preprocess(
    frames: Sequence[np.ndarray] | np.ndarray, spec: PreprocessSpec = BIOMEDCLIP, *, bgr: bool = False
) -> np.ndarray:
    """Frames (each HxWx3 uint8, RGB unless ``bgr``) -> model input float32 [N,3,S,S]."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = frames[None]
    if len(frames) == 0:
        return np.zeros((0, 3, spec.image_size, spec.image_size), dtype=np.float32)
    crops = np.stack([resize_crop(np.ascontiguousarray(f[..., ::-1]) if bgr else f, spec) for f in frames])
    return normalise(crops, spec)
