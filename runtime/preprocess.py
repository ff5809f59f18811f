"""The toolkit's one preprocessing: BiomedCLIP's image transform, resampled by Pillow.

open_clip's BiomedCLIP transform is: convert to RGB, resize the shortest side to 224 with PIL's
bicubic filter (antialiased), centre crop 224, scale to [0, 1], normalise with the CLIP mean/std.
``resample="pil-bicubic"`` (the default) *is* that resize: Pillow's ``Image.resize(BICUBIC)``
(it releases the GIL, so worker threads scale), its two passes in Pillow's classic order. ``"cv2-area"`` and ``"cv2-cubic"`` are faster
approximations for edge devices.

Resampling works on each channel alone, so a BGR frame is resized as it comes and only the small
crop has its channels swapped (``bgr=True``): the same bytes as converting first, for less work.

The normalisation (:func:`normalise`) runs ``(x * (1/255) - mean) * (1/std)`` in float32 through
a 256-entry table; a uint8 graph (``vce-export onnx --input uint8``) does the same float32
operations, in the same order and with the same constants (:func:`normalise_constants`), inside
the graph.

Training uses this module too (augmentations are applied to the uint8 crop).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

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


def _check_frame(frame: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise VCEError(f"expected an HxWx3 uint8 image, got shape {frame.shape} dtype {frame.dtype}")


def _pil_bicubic(frame: np.ndarray, nh: int, nw: int, rows: slice, cols: slice) -> np.ndarray:
    """Pillow's bicubic resize to (nh, nw) cropped to (rows, cols): horizontal pass, then vertical.

    The two passes are two single-axis ``resize`` calls, so the order is fixed: Pillow 13 runs the
    vertical pass first when the height shrinks more than twice as much as the width (a frame
    more than 2:1 tall), Pillow <= 12 never; pinned, the bytes are the same on every version (and
    the same as vce's former numpy resampler). The columns outside the crop are dropped before
    the vertical pass, which works on each column alone: less work, the same bytes.
    """
    image = Image.fromarray(np.ascontiguousarray(frame))  # any channel order: each channel alone
    h = frame.shape[0]
    if nw != frame.shape[1]:
        image = image.resize((nw, h), Image.Resampling.BICUBIC)
    if (cols.start, cols.stop) != (0, nw):
        image = image.crop((cols.start, 0, cols.stop, h))
    if nh != h:
        image = image.resize((image.width, nh), Image.Resampling.BICUBIC)
    return np.asarray(image)[rows]


def resize_crop(
    frame: np.ndarray, spec: PreprocessSpec = BIOMEDCLIP, *, bgr: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """Resize (shortest side) and centre-crop one HxWx3 uint8 frame to an RGB ``image_size`` crop.

    ``bgr``: the frame is BGR (as OpenCV decodes); the crop is still RGB. ``out``: write the crop
    into this uint8 [S, S, 3] array (a batch row) instead of a new one.
    """
    _check_frame(frame)
    h, w = frame.shape[:2]
    size = spec.image_size
    nh, nw = _resized_size(h, w, size, spec.resize)
    rows, cols = _crop_box(nh, nw, size)
    if (nh, nw) == (h, w):
        crop = frame[rows, cols]
    elif spec.resample == "pil-bicubic":
        crop = _pil_bicubic(frame, nh, nw, rows, cols)
    else:
        interp = cv2.INTER_AREA if spec.resample == "cv2-area" else cv2.INTER_CUBIC
        crop = cv2.resize(frame, (nw, nh), interpolation=interp)[rows, cols]
    if out is None:
        out = np.empty((size, size, 3), dtype=np.uint8)
    if bgr:
        cv2.cvtColor(crop, cv2.COLOR_BGR2RGB, dst=out)  # a plain channel swap, 10x numpy's [..., ::-1]
    else:
        out[...] = crop
    return out


def resize_crops(
    frames: Sequence[np.ndarray] | np.ndarray, spec: PreprocessSpec = BIOMEDCLIP, *, bgr: bool = False
) -> np.ndarray:
    """Frames (each HxWx3 uint8, RGB unless ``bgr``) -> RGB crops uint8 [N, S, S, 3]."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = frames[None]
    size = spec.image_size
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        resize_crop(f, spec, bgr=bgr, out=out[i])
    return out


def normalise_constants(spec: PreprocessSpec = BIOMEDCLIP) -> tuple[np.float32, np.ndarray, np.ndarray]:
    """(scale, mean, inv_std) in float32: normalised = (uint8 value * scale - mean) * inv_std.

    The one definition of the arithmetic: :func:`normalise`'s table and the uint8 graph's first
    nodes both use these constants, in this order.
    """
    scale = np.float32(1.0 / 255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = (np.float32(1.0) / np.asarray(spec.std, dtype=np.float32)).astype(np.float32)
    return scale, mean, inv_std


@functools.lru_cache(maxsize=8)
def _normalise_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Per channel, a [1, 256] float32 table: every uint8 value normalised with the same float32 ops."""
    scale, m, inv_std = normalise_constants(PreprocessSpec(mean=mean, std=std))  # type: ignore[arg-type]
    values = np.arange(256, dtype=np.float32)[:, None] * scale
    lut = ((values - m) * inv_std).astype(np.float32)
    return tuple(np.ascontiguousarray(lut[:, c]).reshape(1, 256) for c in range(3))


def normalise(images: np.ndarray, spec: PreprocessSpec = BIOMEDCLIP) -> np.ndarray:
    """uint8 [N,H,W,3] RGB -> float32 [N,3,H,W], scaled to [0,1] and normalised.

    A 256-entry table per channel (OpenCV's LUT): the same float32 arithmetic, done once per value
    instead of once per pixel. Each channel plane is looked up straight into its NCHW place.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise VCEError(f"normalise expects uint8 RGB images [N,H,W,3], got {images.dtype} {images.shape}")
    luts = _normalise_lut(tuple(map(float, spec.mean)), tuple(map(float, spec.std)))
    n, h, w, _ = images.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for i in range(n):
        for c, plane in enumerate(cv2.split(np.ascontiguousarray(images[i]))):
            cv2.LUT(plane, luts[c], dst=out[i, c])
    return out


def model_input(crops: np.ndarray, spec: PreprocessSpec = BIOMEDCLIP, dtype: Any = np.float32) -> np.ndarray:
    """uint8 RGB crops [N,S,S,3] -> what a graph takes: the crops themselves for a uint8 graph
    (``dtype`` uint8, it normalises inside), else :func:`normalise` (float32 [N,3,S,S])."""
    return crops if np.dtype(dtype) == np.uint8 else normalise(crops, spec)


def preprocess(
    frames: Sequence[np.ndarray] | np.ndarray, spec: PreprocessSpec = BIOMEDCLIP, *, bgr: bool = False
) -> np.ndarray:
    """Frames (each HxWx3 uint8, RGB unless ``bgr``) -> model input float32 [N,3,S,S]."""
    return normalise(resize_crops(frames, spec, bgr=bgr), spec)
