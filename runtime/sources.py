"""Inputs of ``vce-run``: video files, frame folders, and directories holding several of them.

A :class:`Source` yields :class:`FrameSlot` items in decode order: the frame number, and the
image (BGR uint8, as OpenCV decodes) or ``None`` when that frame is corrupt. Frames from a folder
are numbered by the number in their file name; video frames by their 0-based decode index.

Corrupt frames are never dropped silently: a slot with ``image=None`` is yielded for each, and a
video that decodes fewer frames than its header announces reports the missing ones through
:attr:`VideoSource.missing_at_end`. A source where every frame is corrupt is an error.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# FFmpeg (inside OpenCV) prints decoder noise on stderr for broken files; errors are ours to report.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2
import numpy as np

from vce.runtime.errors import VCEError
from vce.runtime.formats.framefolder import (
    IMAGE_SUFFIXES,
    SIDECAR_SUFFIXES,
    FrameFile,
    is_frame_folder,
    list_frames,
    natural_key,
)
from vce.runtime.formats.imageheader import MAX_IMAGE_BYTES, check_image_size, image_dimensions

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"})
#: videos with frames up to this many pixels decode on one thread by default: FFmpeg's frame
#: threads cost more than they save there (measured, H.264 on 2 cores: 224² 3,050 frames/s on one
#: thread against 1,600 threaded, 336² 1,760 against 1,470; 1080p 66 against 92)
SMALL_FRAME_PIXELS = 640 * 480
#: consecutive failed decodes after which a video is considered to end there
MAX_CONSECUTIVE_FAILURES = 64


@dataclass(frozen=True)
class FrameSlot:
    """One decode position: its frame number and its image (BGR uint8), or None if corrupt.

    ``image`` is also None for a frame that was decoded but not kept (``want`` in
    :meth:`Source.slots` said no) or not decoded yet (``path`` set); ``corrupt`` tells them apart.
    """

    position: int
    frame: int
    image: np.ndarray | None
    corrupt: bool = False
    #: for frame folders read with ``decode=False``: the file to decode later (in a worker)
    path: Path | None = None


class Source:
    """A video or a frame folder, identified by ``video_id`` (the file or folder name)."""

    kind: str = "source"
    #: frames per second when known (a video's container says; a frame folder does not)
    fps: float | None = None

    def __init__(self, path: Path, video_id: str) -> None:
        self.path = path
        self.video_id = video_id
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def length_hint(self) -> int:
        """The expected number of decode positions (exact for folders, the header's for videos)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes whenever the input changes (used to refuse resuming from another input); cached."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        raise NotImplementedError

    def slots(self, start: int = 0, want: Callable[[int], bool] | None = None) -> Iterator[FrameSlot]:
        """Yield decode positions from ``start`` on; ``want(position)`` decides which images are kept."""
        raise NotImplementedError


class FolderSource(Source):
    """A folder of frames (Galar / RARE-VISION layouts), natural order, numbers from file names."""

    kind = "frames"

    def __init__(self, path: Path, video_id: str | None = None) -> None:
        super().__init__(path, video_id or path.name)
        self.files: list[FrameFile] = list_frames(path)

    def length_hint(self) -> int:
        return len(self.files)

    def _compute_fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            st = f.path.stat()
            h.update(f"{f.path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def slots(
        self, start: int = 0, want: Callable[[int], bool] | None = None, *, decode: bool = True
    ) -> Iterator[FrameSlot]:
        """With ``decode=False`` nothing is read: each slot carries its ``path`` (see :func:`read_image`)."""
        for i in range(start, len(self.files)):
            path = self.files[i].path
            if not decode:
                yield FrameSlot(i, self.files[i].frame, None, path=path)
                continue
            image = read_image(path)
            yield FrameSlot(i, self.files[i].frame, image, corrupt=image is None)


class VideoSource(Source):
    """A video file decoded with OpenCV; frame number = 0-based decode position."""

    kind = "video"

    def __init__(self, path: Path, video_id: str | None = None) -> None:
        super().__init__(path, video_id or path.stem)
        if not path.is_file():
            raise VCEError(f"{path}: no such video file")
        if path.stat().st_size == 0:
            raise VCEError(f"{path}: the video file is empty (0 bytes)")
        cap = self._open()
        self._header_frames = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        #: the container's frame rate (None when it does not say, or says nonsense)
        self.fps: float | None = fps if 0.0 < fps < 1000.0 else None
        self.frame_size = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
        cap.release()
        #: frames the header announces that the decoder never produced (set after a full pass)
        self.missing_at_end = 0

    def decoder_threads(self, threads: int = 0) -> int:
        """FFmpeg threads to decode with: ``threads`` if > 0; else 1 for frames up to
        :data:`SMALL_FRAME_PIXELS`, and OpenCV's default (0: one per CPU) for larger ones."""
        if threads > 0:
            return threads
        width, height = self.frame_size
        return 1 if 0 < width * height <= SMALL_FRAME_PIXELS else 0

    def _open(self, threads: int = 0) -> cv2.VideoCapture:
        """Open with OpenCV; ``threads``: FFmpeg decoding threads (0: OpenCV's default, one per CPU)."""
        params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY, params)
        if not cap.isOpened():
            raise VCEError(
                f"{self.path}: unreadable or corrupt video (OpenCV cannot open it); "
                "check the file, or extract its frames into a folder"
            )
        return cap

    def length_hint(self) -> int:
        return self._header_frames

    def _compute_fingerprint(self) -> str:
        st = self.path.stat()
        h = hashlib.sha256(f"{self.path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        with open(self.path, "rb") as fh:  # the first and last MiB: cheap, catches re-encodes
            h.update(fh.read(1 << 20))
            if st.st_size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
        return h.hexdigest()

    def slots(
        self, start: int = 0, want: Callable[[int], bool] | None = None, *, threads: int = 0
    ) -> Iterator[FrameSlot]:
        """Decode from the start (positions before ``start`` are only grabbed, not kept).

        ``threads``: FFmpeg's decoding threads (0: :meth:`decoder_threads` decides). FFmpeg's
        frame and slice threading return the same frames, in the same order, as one thread.
        """
        cap = self._open(self.decoder_threads(threads))
        try:
            pos = 0
            failures = 0
            while True:
                ok = cap.grab()
                if not ok:
                    # past the header's count (or no count): the end; before it: a corrupt frame
                    if pos >= self._header_frames or failures >= MAX_CONSECUTIVE_FAILURES:
                        break
                    failures += 1
                    if pos >= start:
                        yield FrameSlot(pos, pos, None, corrupt=True)
                    pos += 1
                    continue
                failures = 0
                if pos >= start:
                    image = None
                    if want is None or want(pos):
                        ok, image = cap.retrieve()
                        if not ok or image is None or image.ndim != 3:
                            yield FrameSlot(pos, pos, None, corrupt=True)
                            pos += 1
                            continue
                    yield FrameSlot(pos, pos, image)
                pos += 1
            # frames the header announced but the decoder never produced (dropped inside FFmpeg
            # or lost at the end): counted as corrupt, never silently ignored
            self.missing_at_end = max(self._header_frames - pos, 0)
        finally:
            cap.release()


def read_image(path: Path) -> np.ndarray | None:
    """Decode one image file (BGR uint8 HxWx3), or None if it is missing, empty or not decodable.

    An image whose header declares more than MAX_IMAGE_PIXELS (or a file over MAX_IMAGE_BYTES) is a
    VCEError naming it, raised before decoding (see vce.runtime.formats.imageheader)."""
    try:
        nbytes = path.stat().st_size
        if nbytes > MAX_IMAGE_BYTES:
            raise VCEError(f"{path}: {nbytes} bytes, more than the {MAX_IMAGE_BYTES} an image frame may have")
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    return decode_image(data, path)


def decode_image(data: bytes | bytearray | memoryview | np.ndarray, name: object) -> np.ndarray | None:
    """:func:`read_image` for an encoded image held in memory (a frame of a stream); ``name`` names
    it in errors. The same checks: the byte limit, then the header's size before decoding."""
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        return None
    if buf.size > MAX_IMAGE_BYTES:
        raise VCEError(f"{name}: {buf.size} bytes, more than the {MAX_IMAGE_BYTES} an image frame may have")
    size = image_dimensions(memoryview(buf))
    if size is None:
        return None  # not a PNG/JPEG/BMP/TIFF/WebP whose size can be read: not decoded
    check_image_size(name, *size)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        return None
    return image


def _classify_file(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in SIDECAR_SUFFIXES:
        return "sidecar"
    return "other"


@dataclass(frozen=True)
class Problem:
    """An input that cannot be run, and why (one line, naming the file)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"input": self.path, "reason": self.reason}


class _Found:
    """Collects sources and problems; ``strict`` raises at the first problem instead."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.sources: list[Source] = []
        self.problems: list[Problem] = []

    def problem(self, path: Path, reason: str) -> None:
        if self.strict:
            raise VCEError(reason)
        self.problems.append(Problem(str(path), reason))

    def add(self, path: Path, make: Callable[[Path], Source]) -> None:
        try:
            self.sources.append(make(path))
        except VCEError as exc:
            self.problem(path, str(exc))
        except OSError as exc:
            self.problem(path, f"{path}: cannot read it ({exc.strerror or exc}); check its permissions")


def _open_into(found: _Found, p: Path) -> None:
    try:
        _open_checked(found, p)
    except OSError as exc:
        found.problem(p, f"{p}: cannot read it ({exc.strerror or exc}); check its permissions")


def _open_checked(found: _Found, p: Path) -> None:
    if not p.exists():
        found.problem(p, f"{p}: no such file or folder; pass a video, a frame folder or a folder of them")
        return
    if p.is_file():
        if _classify_file(p) != "video":
            found.problem(
                p,
                f"{p}: not a video file (videos are {', '.join(sorted(VIDEO_SUFFIXES))}); "
                "for frames pass their folder",
            )
            return
        found.add(p, VideoSource)
        return
    if is_frame_folder(p):
        found.add(p, FolderSource)
        return
    before = len(found.sources) + len(found.problems)
    for child in sorted(p.iterdir(), key=lambda c: natural_key(c.name)):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if is_frame_folder(child):
                found.add(child, FolderSource)
            continue
        kind = _classify_file(child)
        if kind == "video":
            found.add(child, VideoSource)
        elif kind == "other":
            found.problem(
                child,
                f"{child}: neither a video nor a frame folder; move it out of {p} "
                f"(videos are {', '.join(sorted(VIDEO_SUFFIXES))})",
            )
    if len(found.sources) + len(found.problems) == before:
        found.problem(p, f"{p}: no videos and no frame folders in this folder")


def open_source(path: str | os.PathLike[str]) -> list[Source]:
    """One INPUT argument -> its sources: a video, a frame folder, or a directory of them.

    Raises at the first input that cannot be run (see :func:`check_inputs` to collect them all).
    """
    found = _Found(strict=True)
    _open_into(found, Path(path))
    return found.sources


def check_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, strict: bool = False
) -> tuple[list[Source], list[Problem]]:
    """Every INPUT argument -> its sources sorted by video id, and every input that cannot be run.

    Each video and frame folder is opened up front (a video's container and header, a folder's
    file list), so a zero-byte, unreadable or misnamed file is found before any inference. A second
    source with an id already taken is a problem (the first one keeps it). ``strict``: raise at the
    first problem instead.
    """
    if not inputs:
        raise VCEError("no input: pass one or more videos, frame folders or folders of them")
    found = _Found(strict)
    for item in inputs:
        _open_into(found, Path(item))
    sources: dict[str, Source] = {}
    for src in found.sources:
        if src.video_id in sources:
            found.problem(
                src.path,
                f"{src.path}: video id {src.video_id!r} is taken by {sources[src.video_id].path}; "
                "video ids (file or folder names) must be unique: rename one",
            )
            continue
        sources[src.video_id] = src
    return [sources[k] for k in sorted(sources)], found.problems


def discover(inputs: Sequence[str | os.PathLike[str]]) -> list[Source]:
    """All INPUT arguments -> their sources sorted by video id; the first bad input is an error."""
    return check_inputs(inputs, strict=True)[0]
