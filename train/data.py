"""Training data: find videos (Galar and RARE-VISION layouts), split by video, stride, cache crops.

Layouts (``DATA`` is the folder given to ``vce-train``):

- Galar / ``vce-train synth``: ``DATA/frames/<video>/frame_XXXXXX.png`` + ``DATA/labels/<video>.csv``
  (a ``frame`` or ``index`` column and label columns).
- RARE-VISION test: ``DATA/<video>/frame_XXXXXX.png`` + ``DATA/<video>.csv`` (or the CSV inside the
  video folder) with a ``frame_file`` column.
- One frame folder (prediction only): ``DATA/frame_XXXXXX.png``.

Frames are decoded and resized/cropped once (``vce.runtime.preprocess.resize_crop``) into a uint8
cache ([N, S, S, 3], in RAM or a memory-mapped file under ``--cache``); augmentations work on
those crops and ``vce.runtime.preprocess.normalise`` makes the model input.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.formats.framefolder import FrameFile, is_frame_folder, list_frames, natural_key
from vce.runtime.formats.labelcsv import read_label_csv
from vce.runtime.preprocess import PreprocessSpec, resize_crop
from vce.train.progress import LiveBar


@dataclass
class VideoSource:
    """One video: its frames in frame order and, when labelled, their labels [T, 17] (0/1)."""

    video: str
    frames: list[FrameFile]
    labels: np.ndarray | None = None

    @property
    def frame_numbers(self) -> np.ndarray:
        return np.array([f.frame for f in self.frames], dtype=np.int64)

    def strided(self, stride: int) -> VideoSource:
        """Every ``stride``-th frame (by position, starting with the first)."""
        if stride < 1:
            raise VCEError(f"stride must be >= 1 (got {stride})")
        labels = None if self.labels is None else self.labels[::stride]
        return VideoSource(self.video, self.frames[::stride], labels)


def _frame_root(data: Path) -> Path:
    frames = data / "frames"
    return frames if frames.is_dir() else data


def _label_csv(data: Path, video: str, folder: Path) -> Path | None:
    for candidate in (data / "labels" / f"{video}.csv", data / f"{video}.csv", folder / f"{video}.csv"):
        if candidate.is_file():
            return candidate
    return None


def _attach_labels(video: str, frames: list[FrameFile], csv_path: Path) -> VideoSource:
    table = read_label_csv(csv_path, video)
    by_number = {f.frame: f for f in frames}
    missing = [int(n) for n in table.frames if int(n) not in by_number]
    if missing:
        folder = frames[0].path.parent
        raise VCEError(
            f"{csv_path}: {len(missing)} labelled frame(s) of video {video} have no image in {folder} "
            f"(first: frame {missing[0]}); restore the frames or remove their rows"
        )
    return VideoSource(video, [by_number[int(n)] for n in table.frames], table.values.astype(np.float32))


def find_videos(
    data: str | os.PathLike[str], *, labels: bool = True, videos: Sequence[str] | None = None
) -> list[VideoSource]:
    """Every video under ``data`` (sorted naturally), with labels when ``labels`` (then required).

    With labels, only labelled frames are kept (unlabelled images are ignored); a labelled frame
    without an image, an unknown label column or an empty video is a VCEError naming the file.
    """
    root = Path(data)
    if not root.is_dir():
        raise VCEError(f"{root}: no such data folder; create one with `vce-train synth {root}`")
    if is_frame_folder(root) and not (root / "frames").is_dir():
        folders = [root]
    else:
        frame_root = _frame_root(root)
        folders = sorted(
            (
                p
                for p in frame_root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and p.name != "labels"
            ),
            key=lambda p: natural_key(p.name),
        )
        if frame_root == root:  # RARE-VISION layout: other folders (videos/, runs...) may sit beside
            folders = [p for p in folders if is_frame_folder(p) or _label_csv(root, p.name, p) is not None]
    if labels:
        label_dir = root / "labels"
        if label_dir.is_dir():
            have = {p.name for p in folders}
            orphans = sorted(
                (f.stem for f in label_dir.glob("*.csv") if f.stem not in have and f.name != "metadata.csv"),
                key=natural_key,
            )
            if orphans:
                raise VCEError(
                    f"{label_dir / (orphans[0] + '.csv')}: labels for video {orphans[0]} but no frame folder "
                    f"{_frame_root(root) / orphans[0]}; add its frames or remove the CSV"
                )
    if videos is not None:
        wanted = set(videos)
        unknown = sorted(wanted - {p.name for p in folders})
        if unknown:
            raise VCEError(f"{root}: no video(s) {unknown}; the videos are {[p.name for p in folders][:10]}")
        folders = [p for p in folders if p.name in wanted]
    if not folders:
        raise VCEError(f"{root}: no videos (expected frames/<video>/frame_XXXXXX.png and labels/<video>.csv)")
    sources: list[VideoSource] = []
    for folder in folders:
        video = folder.name
        try:
            frames = list_frames(folder)
        except VCEError as exc:
            raise VCEError(f"video {video}: {exc}") from exc
        if not labels:
            sources.append(VideoSource(video, frames))
            continue
        csv_path = _label_csv(root, video, folder)
        if csv_path is None:
            raise VCEError(
                f"video {video}: no label CSV (looked for {root / 'labels' / (video + '.csv')} and "
                f"{root / (video + '.csv')}); add it or predict with `vce-train predict`"
            )
        sources.append(_attach_labels(video, frames, csv_path))
    return sources


def split_videos(
    ids: Sequence[str], val_fraction: float, seed: int, val_videos: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """(train ids, validation ids), disjoint. Explicit ``val_videos`` win; otherwise a seeded shuffle
    holds out ``max(1, round(n * val_fraction))`` videos (at least one video is kept for training)."""
    ids = list(ids)
    if val_videos:
        unknown = sorted(set(val_videos) - set(ids))
        if unknown:
            raise VCEError(f"--val-videos {unknown} are not among the videos {ids[:10]}")
        val = [v for v in ids if v in set(val_videos)]
    else:
        if len(ids) < 2:
            raise VCEError(
                f"only {len(ids)} video: frames of one video never go to both training and validation; "
                "add a video (the split is by video)"
            )
        if not 0.0 < val_fraction < 1.0:
            raise VCEError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
        n_val = min(len(ids) - 1, max(1, round(len(ids) * val_fraction)))
        order = np.random.default_rng(seed).permutation(len(ids))
        held = {ids[i] for i in order[:n_val]}
        val = [v for v in ids if v in held]
    train = [v for v in ids if v not in set(val)]
    if not train:
        raise VCEError("every video is a validation video; keep at least one for training")
    return train, val


# --- the decoded-crop cache ------------------------------------------------------------------------


def load_crop(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """Decode one frame (RGB) and resize/crop it to the model's input size (uint8 [S, S, 3])."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VCEError(f"{path}: cannot decode the image (corrupt or not an image); replace or remove it")
    return resize_crop(np.ascontiguousarray(bgr[..., ::-1]), spec)


def _cache_key(paths: Sequence[Path], spec: PreprocessSpec) -> str:
    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def build_crops(
    paths: Sequence[Path],
    spec: PreprocessSpec,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    description: str = "decoding frames",
    threads: int | None = None,
) -> np.ndarray:
    """uint8 [N, S, S, 3] crops of ``paths``: in RAM, or memory-mapped from ``cache_dir``.

    A cache file is named by a hash of the paths, sizes, modification times and the preprocessing,
    so a changed frame or spec rebuilds it; it is written beside its final name and renamed.
    """
    s = spec.image_size
    shape = (len(paths), s, s, 3)
    target: Path | None = None
    if cache_dir is not None:
        folder = Path(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"crops-{_cache_key(paths, spec)}.u8"
        if target.is_file() and target.stat().st_size == int(np.prod(shape)):
            return np.memmap(target, dtype=np.uint8, mode="r", shape=shape)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        out: np.ndarray = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    else:
        out = np.empty(shape, dtype=np.uint8)
    workers = threads or min(4, os.cpu_count() or 1)
    bar = LiveBar(description, len(paths)) if progress and len(paths) else None
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, crop in enumerate(pool.map(lambda p: load_crop(p, spec), paths)):
                out[i] = crop
                if bar is not None:
                    bar.advance()
    except BaseException:
        if target is not None:
            del out
            Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.stop()
    if target is not None:
        assert isinstance(out, np.memmap)
        out.flush()
        del out
        os.replace(tmp, target)
        write_json(
            target.with_suffix(".json"), {"frames": len(paths), "shape": list(shape), "spec": spec.to_dict()}
        )
        return np.memmap(target, dtype=np.uint8, mode="r", shape=shape)
    return out


@dataclass
class FrameSet:
    """A flat set of frames from several videos: where each came from, its labels and crops."""

    videos: list[str]  # per frame
    frames: np.ndarray  # [N] frame numbers
    labels: np.ndarray  # [N, 17] float32 (zeros when unlabelled)
    paths: list[Path]
    crops: np.ndarray | None = None  # [N, S, S, 3] uint8 once built

    @classmethod
    def from_sources(cls, sources: Sequence[VideoSource]) -> FrameSet:
        videos: list[str] = []
        frames: list[int] = []
        paths: list[Path] = []
        labels: list[np.ndarray] = []
        for src in sources:
            videos += [src.video] * len(src.frames)
            frames += [f.frame for f in src.frames]
            paths += [f.path for f in src.frames]
            lab = src.labels if src.labels is not None else np.zeros((len(src.frames), 17), np.float32)
            labels.append(np.asarray(lab, dtype=np.float32))
        y = np.concatenate(labels) if labels else np.zeros((0, 17), np.float32)
        return cls(videos, np.asarray(frames, dtype=np.int64), y, paths)

    def __len__(self) -> int:
        return len(self.paths)

    def load(
        self,
        spec: PreprocessSpec,
        *,
        cache_dir: str | None = None,
        progress: bool = False,
        description: str = "",
    ) -> FrameSet:
        self.crops = build_crops(
            self.paths,
            spec,
            cache_dir=cache_dir,
            progress=progress,
            description=description or "decoding frames",
        )
        return self

    def by_video(self) -> list[tuple[str, np.ndarray]]:
        """[(video, row indices)] in first-appearance order."""
        order: dict[str, list[int]] = {}
        for i, v in enumerate(self.videos):
            order.setdefault(v, []).append(i)
        return [(v, np.asarray(rows, dtype=np.int64)) for v, rows in order.items()]
