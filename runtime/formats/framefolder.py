"""Frame folders (Galar and RARE-VISION layouts): list images in natural order with frame numbers."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vce.runtime.errors import VCEError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
#: files that may sit beside the frames (label CSVs, notes) and are not frames
SIDECAR_SUFFIXES = frozenset({".csv", ".json", ".txt", ".md", ".yaml", ".yml", ".xml"})
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in _DIGITS.split(name)]


def frame_number(name: str) -> int | None:
    """The frame index in a file name: its last group of digits (``frame_000123.PNG`` -> 123)."""
    found = _DIGITS.findall(Path(name).stem)
    return int(found[-1]) if found else None


@dataclass(frozen=True)
class FrameFile:
    frame: int
    path: Path


def is_frame_folder(path: str | os.PathLike[str]) -> bool:
    """A folder that directly contains at least one image file."""
    p = Path(path)
    return p.is_dir() and any(c.suffix.lower() in IMAGE_SUFFIXES and c.is_file() for c in p.iterdir())


def list_frames(folder: str | os.PathLike[str]) -> list[FrameFile]:
    """Image files of a frame folder in natural order, with their frame numbers.

    Hidden files and sidecars (.csv, .json, .txt...) are ignored; any other non-image file, a file
    name without a number, or two files with the same frame number is an error naming the file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise VCEError(f"{root}: no such frame folder")
    frames: list[FrameFile] = []
    seen: dict[int, Path] = {}
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        suffix = entry.suffix.lower()
        if suffix in SIDECAR_SUFFIXES:
            continue
        if suffix not in IMAGE_SUFFIXES:
            raise VCEError(
                f"{entry}: not an image file in a frame folder; move it out "
                f"(frames are {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        number = frame_number(entry.name)
        if number is None:
            raise VCEError(f"{entry}: no frame number in the file name (expected e.g. frame_000123.png)")
        if number in seen:
            raise VCEError(
                f"{entry}: frame {number} again (also {seen[number].name}); keep one file per frame"
            )
        seen[number] = entry
        frames.append(FrameFile(number, entry))
    frames.sort(key=lambda f: f.frame)
    if not frames:
        raise VCEError(f"{root}: no image frames in this folder")
    return frames
