"""Synthetic capsule-endoscopy videos (numpy + OpenCV only; importable without torch).

Every video passes through the anatomy in order (mouth -> esophagus -> z-line -> stomach ->
pylorus -> small intestine -> ileocecal valve -> colon). Regions come in long contiguous runs and
each has its own hue and texture; the three landmarks are short runs (at least 8 frames where the
video allows) inside the end of the region before them (those frames carry the region *and* the
landmark, with a landmark shape drawn on the region's texture). Pathologies come in runs of 6-24
frames inside regions, about one per 30 frames, each drawn as a distinct coloured shape. Frames
look mucosa-like: smooth textured tissue, vignetting, lighting flicker, sensor noise and a slow
camera drift between consecutive frames.

The patterns are deliberately easy (a tiny ViT learns them in a few CPU epochs): the point is a
learnable, deterministic stand-in for Galar that every test and the demo can generate in seconds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.formats.labelcsv import write_label_csv
from vce.runtime.labels import LABEL_INDEX, NUM_LABELS, PATHOLOGY
from vce.train.progress import LiveBar

#: the anatomical order a capsule passes through; landmarks sit between two regions
SEQUENCE: tuple[str, ...] = (
    "mouth",
    "esophagus",
    "z-line",
    "stomach",
    "pylorus",
    "small intestine",
    "ileocecal valve",
    "colon",
)
LANDMARKS: dict[str, str] = {
    "z-line": "esophagus",
    "pylorus": "stomach",
    "ileocecal valve": "small intestine",
}
#: typical share of a video's frames per segment (jittered per video)
_SHARE = {
    "mouth": 0.08,
    "esophagus": 0.08,
    "z-line": 0.015,
    "stomach": 0.2,
    "pylorus": 0.015,
    "small intestine": 0.42,
    "ileocecal valve": 0.015,
    "colon": 0.2,
}
MIN_FRAMES = len(SEQUENCE)
DEFAULT_SIZE = 256
PATHOLOGY_RUN = (6, 24)  # inclusive run length range (shortened for very short videos)
#: one pathology run per this many frames on average: dense, so that a few short videos hold enough
#: instances of every pathology to learn from and to calibrate on
PATHOLOGY_EVERY = 30
LANDMARK_MIN = 8  # frames, for videos of 120 frames or more


@dataclass(frozen=True)
class Run:
    """A run of frames [start, stop) that carries ``label``."""

    label: str
    start: int
    stop: int


# --- label plan ------------------------------------------------------------------------------------


def _segment_lengths(rng: np.random.Generator, n_frames: int) -> list[int]:
    share = np.array([_SHARE[s] for s in SEQUENCE]) * rng.uniform(0.7, 1.3, len(SEQUENCE))
    share /= share.sum()
    # landmarks get at least LANDMARK_MIN frames where the video allows: shorter runs cannot survive
    # the paper's median filter of 7, so a short demo video could never show them as events
    minimum = np.array([min(LANDMARK_MIN, max(1, n_frames // 15)) if s in LANDMARKS else 1 for s in SEQUENCE])
    free = n_frames - minimum.sum()
    raw = share * free
    lengths = minimum + np.floor(raw).astype(int)
    remainder = n_frames - lengths.sum()
    for i in np.argsort(-(raw - np.floor(raw)))[:remainder]:
        lengths[i] += 1
    return lengths.tolist()


def plan_runs(rng: np.random.Generator, n_frames: int) -> tuple[list[Run], list[Run]]:
    """The anatomy segments (in order, covering every frame) and the pathology runs of one video."""
    if n_frames < MIN_FRAMES:
        raise VCEError(f"a synthetic video needs at least {MIN_FRAMES} frames (one per anatomy segment)")
    segments: list[Run] = []
    pos = 0
    for name, length in zip(SEQUENCE, _segment_lengths(rng, n_frames), strict=True):
        segments.append(Run(name, pos, pos + length))
        pos += length
    lo = min(PATHOLOGY_RUN[0], max(2, n_frames // 8))
    hi = max(lo, min(PATHOLOGY_RUN[1], n_frames // 4))
    n_runs = max(1, round(n_frames / PATHOLOGY_EVERY * rng.uniform(0.8, 1.25)))
    kinds = np.concatenate([rng.permutation(len(PATHOLOGY)) for _ in range(n_runs // len(PATHOLOGY) + 1)])
    busy = np.zeros(n_frames, dtype=bool)
    runs: list[Run] = []
    for kind in kinds[:n_runs]:
        for _ in range(50):
            length = int(rng.integers(lo, hi + 1))
            start = int(rng.integers(0, n_frames - length + 1))
            # keep 6 frames between pathology runs so their events stay separate
            if not busy[max(0, start - 6) : start + length + 6].any():
                busy[start : start + length] = True
                runs.append(Run(PATHOLOGY[kind], start, start + length))
                break
    runs.sort(key=lambda r: r.start)
    return segments, runs


def labels_from_runs(n_frames: int, segments: list[Run], runs: list[Run]) -> np.ndarray:
    """[T, 17] uint8 labels: each frame's region (+ landmark) and its pathology, if any."""
    y = np.zeros((n_frames, NUM_LABELS), dtype=np.uint8)
    for seg in segments:
        y[seg.start : seg.stop, LABEL_INDEX[seg.label]] = 1
        if seg.label in LANDMARKS:
            y[seg.start : seg.stop, LABEL_INDEX[LANDMARKS[seg.label]]] = 1
    for run in runs:
        y[run.start : run.stop, LABEL_INDEX[run.label]] = 1
    return y


# --- textures and sprites --------------------------------------------------------------------------

_REGION_RGB = {
    "mouth": (236, 196, 186),
    "esophagus": (222, 150, 156),
    "stomach": (200, 92, 62),
    "small intestine": (222, 168, 72),
    "colon": (184, 192, 212),  # bluish-pale: kept well apart from the mouth's warm pale hue
}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1] of shape [size, size] from a cells x cells random grid."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).clip(-1.0, 1.0)


def _region_texture(rng: np.random.Generator, region: str, size: int) -> np.ndarray:
    """A float32 RGB texture [size, size, 3] in 0..255 with the region's hue and pattern."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s = size / 256.0
    shade = 0.12 * _smooth_noise(rng, size, 6) + 0.05 * _smooth_noise(rng, size, 24)
    if region == "mouth":  # pale, with large soft white blobs
        blobs = np.zeros((size, size), np.float32)
        for _ in range(int(10 * (size / 512) ** 2) + 4):
            c = rng.uniform(0, size, 2).astype(int)
            cv2.circle(blobs, (int(c[0]), int(c[1])), int(rng.uniform(18, 40) * s), 1.0, -1)
        pattern = 0.35 * cv2.GaussianBlur(blobs, (0, 0), 6 * s)
    elif region == "esophagus":  # longitudinal stripes
        phase = 4.0 * _smooth_noise(rng, size, 4)
        pattern = 0.16 * np.sin(xx / (7.0 * s) + phase)
    elif region == "stomach":  # thick wavy rugae
        pattern = 0.22 * np.sin(yy / (9.0 * s) + 3.0 * np.sin(xx / (40.0 * s)))
    elif region == "small intestine":  # fine villi speckle
        speck = rng.uniform(-1.0, 1.0, (size // 3, size // 3)).astype(np.float32)
        pattern = 0.22 * cv2.resize(speck, (size, size), interpolation=cv2.INTER_NEAREST)
        pattern = cv2.GaussianBlur(pattern, (0, 0), 1.0)
    else:  # colon: pale with thin dark vessels
        vessels = np.zeros((size, size), np.float32)
        for _ in range(int(12 * (size / 512) ** 2) + 6):
            heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.35, 24))
            steps = 6 * s * np.stack([np.cos(heading), np.sin(heading)], 1)
            pts = np.cumsum(steps, axis=0) + rng.uniform(0, size, 2)
            cv2.polylines(vessels, [pts.astype(np.int32)], False, 1.0, max(1, int(2 * s)))
        pattern = -0.3 * cv2.GaussianBlur(vessels, (0, 0), 1.2)
    gain = 1.0 + shade + pattern
    base = np.array(_REGION_RGB[region], np.float32) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
    return gain[..., None] * base


@dataclass
class Sprite:
    """An RGB patch and its alpha (both float32), pasted at a drifting position."""

    rgb: np.ndarray
    alpha: np.ndarray


def _sprite_canvas(radius: int) -> tuple[np.ndarray, np.ndarray, int]:
    side = 2 * radius + 1
    return np.zeros((side, side, 3), np.float32), np.zeros((side, side), np.float32), radius


def _blob(rng: np.random.Generator, c: int, r: float, points: int = 14) -> np.ndarray:
    ang = np.sort(rng.uniform(0, 2 * np.pi, points))
    rad = r * rng.uniform(0.7, 1.15, points)
    return np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1).astype(np.int32)


def make_sprite(rng: np.random.Generator, label: str, size: int) -> Sprite:
    """The label's shape: landmarks and pathologies each have a distinct colour and form."""
    s = size / 256.0 * (1.6 if label in LANDMARKS else 1.8)  # large, easy to spot
    r = int(48 * s)
    rgb, alpha, c = _sprite_canvas(r)
    # landmark colours are unrealistic on purpose: each must stand apart from every region and
    # pathology, or a small model learns "end of the region" instead of the landmark itself
    if label == "z-line":  # a thick jagged cyan band across the view
        xs = np.linspace(0, 2 * r, 9)
        ys = c + rng.uniform(-10, 10, 9) * s
        pts = np.stack([xs, ys], 1).astype(np.int32)
        cv2.polylines(alpha, [pts], False, 1.0, int(14 * s))
        rgb[:] = (60, 220, 230)
    elif label == "pylorus":  # a dark round opening in a deep blue ring
        cv2.circle(alpha, (c, c), int(34 * s), 1.0, -1)
        cv2.circle(rgb, (c, c), int(34 * s), (40, 60, 190), -1)
        cv2.circle(rgb, (c, c), int(20 * s), (25, 10, 10), -1)
    elif label == "ileocecal valve":  # two thick teal lips around a dark slit
        cv2.ellipse(alpha, (c, c), (int(40 * s), int(24 * s)), 0, 0, 360, 1.0, -1)
        cv2.ellipse(rgb, (c, c), (int(40 * s), int(24 * s)), 0, 0, 360, (20, 170, 120), -1)
        cv2.line(rgb, (c - int(30 * s), c), (c + int(30 * s), c), (40, 20, 10), max(2, int(5 * s)))
    elif label == "active bleeding":  # bright red irregular blob with a trailing streak
        cv2.fillPoly(alpha, [_blob(rng, c, 30 * s)], 1.0)
        cv2.line(alpha, (c, c), (c + int(rng.uniform(-20, 20) * s), 2 * r), 1.0, int(10 * s))
        rgb[:] = (235, 10, 15)
    elif label == "blood":  # a large dark-red pool
        cv2.ellipse(alpha, (c, c), (int(44 * s), int(30 * s)), rng.uniform(0, 180), 0, 360, 1.0, -1)
        rgb[:] = (105, 5, 15)
    elif label == "hematin":  # clumps of coffee-ground brown
        for _ in range(int(rng.integers(6, 10))):
            p = (c + rng.uniform(-34, 34, 2) * s).astype(int)
            cv2.circle(alpha, (int(p[0]), int(p[1])), int(rng.uniform(7, 11) * s), 1.0, -1)
        rgb[:] = (92, 52, 14)
    elif label == "angiectasia":  # cherry-red spot with radiating spider vessels
        for a in rng.uniform(0, 2 * np.pi, 8):
            end = (int(c + 40 * s * np.cos(a)), int(c + 40 * s * np.sin(a)))
            cv2.line(alpha, (c, c), end, 1.0, max(2, int(3 * s)))
        cv2.circle(alpha, (c, c), int(13 * s), 1.0, -1)
        rgb[:] = (255, 45, 120)
    elif label == "erosion":  # a few small pale yellow-green patches
        for _ in range(4):
            p = (c + rng.uniform(-30, 30, 2) * s).astype(int)
            cv2.circle(alpha, (int(p[0]), int(p[1])), int(10 * s), 1.0, -1)
        rgb[:] = (200, 240, 120)
    elif label == "erythema":  # a diffuse violet flush (kept apart from angiectasia's pink)
        cv2.circle(alpha, (c, c), int(36 * s), 0.85, -1)
        alpha[:] = cv2.GaussianBlur(alpha, (0, 0), 8 * s)
        rgb[:] = (150, 40, 225)
    elif label == "lymphangioectasis":  # a cluster of white dots
        for _ in range(int(rng.integers(22, 32))):
            p = (c + rng.normal(0, 16, 2) * s).astype(int)
            cv2.circle(alpha, (int(p[0]), int(p[1])), max(2, int(3.5 * s)), 1.0, -1)
        rgb[:] = (255, 255, 250)
    elif label == "polyp":  # a shaded dome with a highlight and a dark outline
        yy, xx = np.mgrid[0 : 2 * r + 1, 0 : 2 * r + 1].astype(np.float32) - c
        dome = np.clip(1.0 - (xx**2 + yy**2) / (34 * s) ** 2, 0.0, 1.0)
        cv2.circle(alpha, (c, c), int(34 * s), 1.0, -1)
        rgb[:] = np.array((120, 150, 60), np.float32) * (0.6 + 0.6 * np.sqrt(dome))[..., None]
        cv2.circle(rgb, (c - int(10 * s), c - int(10 * s)), int(6 * s), (250, 250, 240), -1)
        cv2.circle(rgb, (c, c), int(34 * s), (50, 40, 20), max(2, int(3 * s)))
    elif label == "ulcer":  # white fibrin base inside a thick red rim
        outline = _blob(rng, c, 32 * s, 10)
        cv2.fillPoly(alpha, [outline], 1.0)
        cv2.fillPoly(rgb, [outline], (190, 20, 20))
        cv2.ellipse(rgb, (c, c), (int(20 * s), int(16 * s)), 0, 0, 360, (245, 245, 225), -1)
    else:
        raise VCEError(f"no synthetic pattern for label {label!r}")
    if label not in ("erythema",):
        alpha = cv2.GaussianBlur(alpha, (0, 0), 1.2 * s)
    return Sprite(rgb, alpha)


def _paste(frame: np.ndarray, sprite: Sprite, cx: float, cy: float) -> None:
    """Alpha-blend ``sprite`` onto ``frame`` (in place) centred at (cx, cy), clipped to the frame."""
    h, w = frame.shape[:2]
    r = sprite.alpha.shape[0] // 2
    x0, y0 = round(float(cx)) - r, round(float(cy)) - r
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(w, x0 + 2 * r + 1), min(h, y0 + 2 * r + 1)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    a = sprite.alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0, None]
    rgb = sprite.rgb[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    roi = frame[fy0:fy1, fx0:fx1]
    roi += a * (rgb - roi)


def _vignette(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2) / (size / 2)
    v = np.clip(1.08 - 0.55 * d**2, 0.0, 1.0)
    v[d > 0.98] *= 0.15  # the dark corners outside the capsule's round field of view
    return v[..., None].astype(np.float32)


# --- video generation ------------------------------------------------------------------------------


def _drift(rng: np.random.Generator, n_frames: int, span: int) -> np.ndarray:
    """[T, 2] slowly drifting camera offsets within [0, span] (random-walk velocity, reflected)."""
    pos = np.empty((n_frames, 2), np.float64)
    p = rng.uniform(0, span, 2)
    v = rng.normal(0, 1.0, 2)
    for t in range(n_frames):
        v = 0.9 * v + rng.normal(0, 0.6, 2)
        v = np.clip(v, -4.0, 4.0)
        p = p + v
        for k in range(2):
            if p[k] < 0 or p[k] > span:
                v[k] = -v[k]
                p[k] = np.clip(p[k], 0, span)
        pos[t] = p
    return pos


@dataclass
class VideoPlan:
    """Everything that determines a synthetic video: its runs, labels and rendering parameters."""

    n_frames: int
    size: int
    segments: list[Run]
    runs: list[Run]
    labels: np.ndarray  # [T, 17] uint8


def iter_video(
    rng: np.random.Generator, n_frames: int, size: int = DEFAULT_SIZE
) -> tuple[VideoPlan, Iterator[np.ndarray]]:
    """Plan a video and return (plan, a lazy iterator over its RGB uint8 frames [size, size, 3]).

    Streaming keeps memory flat for long videos. The iterator draws from ``rng``: consume it fully
    before using ``rng`` again if you need determinism.
    """
    if size < 64:
        raise VCEError(f"synthetic frames must be at least 64 px (got {size})")
    segments, runs = plan_runs(rng, n_frames)
    plan = VideoPlan(n_frames, size, segments, runs, labels_from_runs(n_frames, segments, runs))
    margin = size // 2
    big = size + 2 * margin
    textures = {name: _region_texture(rng, name, big) for name in _REGION_RGB}
    offsets = _drift(rng, n_frames, 2 * margin)
    overlays: list[tuple[Run, Sprite, np.ndarray]] = []
    for run in [s for s in segments if s.label in LANDMARKS] + runs:
        # landmarks start on the left, pathologies on the right, so a pathology inside a landmark's
        # frames does not hide it (the drift moves both together; flips in training mix the sides)
        x = rng.uniform(0.25, 0.4) if run.label in LANDMARKS else rng.uniform(0.6, 0.75)
        anchor = np.array([x, rng.uniform(0.3, 0.7)]) * size
        overlays.append((run, make_sprite(rng, run.label, size), anchor - offsets[run.start]))
    region_of = np.empty(n_frames, dtype=object)
    for seg in segments:
        region_of[seg.start : seg.stop] = LANDMARKS.get(seg.label, seg.label)
    flicker = rng.normal(1.0, 0.03, n_frames).astype(np.float32)
    noise_seed = int(rng.integers(0, 2**63 - 1))

    def frames() -> Iterator[np.ndarray]:
        vignette = np.repeat(_vignette(size), 3, axis=2)
        noise_rng = np.random.default_rng(noise_seed)
        # sensor noise: a small bank of grey noise images, one picked per frame (cheap, no repetition pattern)
        bank = np.repeat(noise_rng.normal(0.0, 3.0, (8, size, size, 1)).astype(np.float32), 3, axis=3)
        picks = noise_rng.integers(0, len(bank), n_frames)
        for t in range(n_frames):
            ox, oy = offsets[t].astype(int)
            frame = textures[region_of[t]][oy : oy + size, ox : ox + size].copy()
            for run, sprite, anchor in overlays:
                if run.start <= t < run.stop:
                    cx, cy = np.clip(anchor + offsets[t], 0.15 * size, 0.85 * size)
                    _paste(frame, sprite, cx, cy)
            frame = cv2.multiply(frame, vignette, scale=float(flicker[t]))
            cv2.add(frame, bank[picks[t]], dst=frame)
            np.clip(frame, 0, 255, out=frame)
            yield frame.astype(np.uint8)

    return plan, frames()


def generate_video(
    rng: np.random.Generator, n_frames: int, size: int = DEFAULT_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic video: (frames uint8 [T, size, size, 3] RGB, labels uint8 [T, 17] 0/1)."""
    plan, frames = iter_video(rng, n_frames, size)
    out = np.empty((n_frames, size, size, 3), np.uint8)
    for t, frame in enumerate(frames):
        out[t] = frame
    return out, plan.labels


# --- writing a dataset -----------------------------------------------------------------------------


def video_id(index: int) -> str:
    return f"synth_{index:03d}"


def video_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of video ``index``: independent of how many videos are written."""
    return np.random.default_rng([int(seed), int(index)])


#: frame formats: fast PNG (Huffman only: ~3x faster than the default, files ~15% larger), and
#: JPEG at quality 95 (~10x faster to write and ~3x to read than that PNG, ~4x smaller; lossy:
#: mean |error| ~2 of 255, below the frames' own sensor noise)
class ImageFormat(StrEnum):
    """Frame files of the synthetic data (``--format``): lossless PNG or JPEG at quality 95."""

    PNG = "png"
    JPG = "jpg"


IMAGE_FORMATS: dict[str, list[int]] = {
    ImageFormat.PNG.value: [
        cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY
    ],
    ImageFormat.JPG.value: [cv2.IMWRITE_JPEG_QUALITY, 95],
}  # fmt: skip


def _write_frame(path: Path, bgr: np.ndarray) -> None:
    if not cv2.imwrite(str(path), bgr, IMAGE_FORMATS[path.suffix[1:]]):
        raise VCEError(f"{path}: cannot write the frame (disk full or folder not writable?)")


def write_dataset(
    out: str | os.PathLike[str],
    videos: int,
    frames: int,
    seed: int,
    mp4: bool = False,
    size: int = DEFAULT_SIZE,
    *,
    fps: float = 10.0,
    overwrite: bool = False,
    progress: bool = False,
    image_format: str = "png",
) -> list[str]:
    """Write ``videos`` synthetic videos in the Galar layout under ``out``; returns the video ids.

    ``out/frames/<video>/frame_XXXXXX.png`` (or ``.jpg`` with ``image_format="jpg"``; frame numbers
    from 0), ``out/labels/<video>.csv``
    (``frame`` + the 17 labels), with ``mp4`` also ``out/videos/<video>.mp4`` ('mp4v', ``fps``), and
    ``out/synth.json`` describing the runs. Each video's frame folder is written beside its final
    place and renamed into it, so an interrupted run never leaves a half-written video folder.
    """
    if image_format not in IMAGE_FORMATS:
        raise VCEError(f"--format must be one of {', '.join(IMAGE_FORMATS)} (got {image_format!r})")
    if videos < 1 or frames < MIN_FRAMES:
        raise VCEError(f"need --videos >= 1 and --frames >= {MIN_FRAMES} (got {videos} and {frames})")
    root = Path(out)
    ids = [video_id(i) for i in range(videos)]
    frame_root, label_root, video_root = root / "frames", root / "labels", root / "videos"
    if not overwrite:
        clash = [p for i in ids for p in (frame_root / i, label_root / f"{i}.csv") if p.exists()]
        if clash:
            raise VCEError(f"{clash[0]} already exists; choose an empty OUT folder or pass --overwrite")
    try:
        for d in (frame_root, label_root) + ((video_root,) if mp4 else ()):
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VCEError(f"cannot create {root}: {exc.strerror or exc}") from exc
    description: dict[str, object] = {
        "generator": "vce.train.synth",
        "seed": seed,
        "size": size,
        "videos": {},
    }
    bar = None
    if progress:
        bar = LiveBar("writing synthetic videos", videos * frames)
    try:
        for index, vid in enumerate(ids):
            plan, frame_iter = iter_video(video_rng(seed, index), frames, size)
            tmp = frame_root / f".{vid}.partial"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            writer = _open_mp4(video_root / f".{vid}.partial.mp4", fps, size) if mp4 else None
            try:
                with ThreadPoolExecutor(max_workers=2) as pool:  # cv2 releases the GIL while encoding
                    pending: list[Future[None]] = []
                    for t, frame in enumerate(frame_iter):
                        bgr = np.ascontiguousarray(frame[..., ::-1])
                        pending.append(pool.submit(_write_frame, tmp / f"frame_{t:06d}.{image_format}", bgr))
                        if writer is not None:
                            writer.write(bgr)
                        if len(pending) >= 16:
                            for job in pending:
                                job.result()
                            pending.clear()
                        if bar is not None:
                            bar.advance()
                    for job in pending:
                        job.result()
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if writer is not None:
                    writer.release()
                    (video_root / f".{vid}.partial.mp4").unlink(missing_ok=True)
                raise
            final = frame_root / vid
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            if writer is not None:
                writer.release()
                os.replace(video_root / f".{vid}.partial.mp4", video_root / f"{vid}.mp4")
            write_label_csv(label_root / f"{vid}.csv", np.arange(frames), plan.labels)
            description["videos"][vid] = {  # type: ignore[index]
                "frames": frames,
                "segments": [[s.label, s.start, s.stop - 1] for s in plan.segments],
                "pathologies": [[r.label, r.start, r.stop - 1] for r in plan.runs],
            }
    finally:
        if bar is not None:
            bar.stop()
    write_json(root / "synth.json", description)
    return ids


def _open_mp4(path: Path, fps: float, size: int) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise VCEError(f"{path}: OpenCV cannot write MP4 ('mp4v') here; run without --mp4")
    return writer
