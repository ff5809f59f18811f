"""The frozen oracle: vce's former numpy re-implementation of Pillow's bicubic resize (before Pillow
became the runtime's resampler, commit aec1909), kept verbatim in its arithmetic.

It reproduces Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` (22-bit fixed point) and
the two separable passes (horizontal, then vertical, each rounded to uint8). The runtime now calls
Pillow; the tests check that the bytes are still the ones this code gave on every size they try.
"""

from __future__ import annotations

import functools

import numpy as np

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
    """(indices [out, taps], integer weights [out, taps]); unused taps have weight 0."""
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
    return idx, weights


def _pil_pass(img: np.ndarray, out_size: int, axis: int, keep: slice) -> np.ndarray:
    """One separable pass along ``axis`` of uint8 ``img``; only output positions ``keep``."""
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


def oracle_resize_crop(frame: np.ndarray, size: int = 224, resize: str = "shortest") -> np.ndarray:
    """Resize (shortest side, or squash) with Pillow's bicubic arithmetic and centre-crop to ``size``."""
    h, w = frame.shape[:2]
    if resize == "squash":
        nh, nw = size, size
    elif h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
    rows, cols = slice(top, top + size), slice(left, left + size)
    out = _pil_pass(frame, nw, axis=1, keep=cols) if nw != w else frame[:, cols]
    out = _pil_pass(out, nh, axis=0, keep=rows) if nh != h else out[rows]
    return np.ascontiguousarray(out)
