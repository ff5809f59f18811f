"""Live sources for ``vce-run --follow``: frames as a recorder produces them (torch-free).

Each source is iterated like an offline source and yields :class:`~vce.runtime.sources.FrameSlot`
items (``position`` = arrival index, ``frame`` = frame number, ``image`` BGR uint8 or ``None`` with
``corrupt=True``) as the frames arrive, in increasing frame number, until its end condition; then
``ended_by`` says why. ``stop()`` (from another thread, e.g. on Ctrl-C) ends the iteration at the
next poll. Waiting never spins: polls back off from ``poll[0]`` to ``poll[1]`` seconds.

- :class:`LiveFolderSource`: a frame folder a recorder is still writing. Frame files, numbers and
  order follow the offline rules (``vce.runtime.formats.framefolder``); other files (a recorder's temporary
  files) are ignored. A file is read once it is complete: PNG, JPEG, BMP and WebP when their
  end/size marker is there, other formats when their size has not changed for ``settle`` seconds;
  then decoded with ``sources.read_image``. A file that does not decode within
  ``corrupt_timeout`` seconds of first being seen is yielded as corrupt. Later frames wait behind an
  incomplete one, so the order stays the offline order. A file that appears with a frame number
  at or below one already yielded is *late*: skipped, listed in ``late`` and reported once through
  ``warn``. Ends when the marker file :data:`END_MARKER` (``.vce-end``, hidden, so offline runs on
  the same folder ignore it) appears and every file before it is read, or after ``idle_timeout``
  seconds without a new frame.
- :class:`LiveStreamSource`: anything OpenCV opens: a device index (``0``), a video file that is
  still being written (read with FFmpeg's ``follow`` option, so its end is ``idle_timeout`` seconds
  without new data; needs a streamable container such as MJPEG AVI, MKV or MPEG-TS, not MP4), an
  RTSP/HTTP URL. Frame numbers are decode positions.
- :class:`StdinSource`: the *vce frame stream* on standard input, for any recorder software:
  each frame is a 4-byte big-endian length followed by that many bytes of one encoded image
  (PNG, JPEG, any format ``read_image`` decodes); a length of 0 ends the stream, and so does EOF
  at a frame boundary. Frame numbers are 0, 1, 2... A stream that stops inside a frame raises one
  clear :class:`VCEError` after every complete frame has been yielded. Each frame is decoded from
  memory by ``sources.decode_image``, with the checks ``read_image`` applies to a file.
  :func:`write_frame` and :func:`write_end` write the format.

Every source takes ``start_after``: frames numbered at or below it were read by an interrupted
``vce-run --follow`` that this run resumes; they are passed over without being decoded (a folder's
files are not read, a stream's frames are grabbed but not decoded, stdin's bytes are dropped).
"""

from __future__ import annotations

import os
import re
import select
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2

from vce.runtime.errors import VCEError
from vce.runtime.formats.framefolder import IMAGE_SUFFIXES, frame_number, natural_key
from vce.runtime.sources import FrameSlot, decode_image, read_image

END_MARKER = ".vce-end"
#: the longest frame the stdin format accepts (anything longer is not this format)
MAX_FRAME_BYTES = 64 << 20
Warn = Callable[[str], None]


class _Poller:
    """Sleeps between polls with exponential backoff; ``stop()`` wakes it at once."""

    def __init__(self, poll: tuple[float, float]) -> None:
        self.low, self.high = poll
        self.delay = self.low
        self.stopped = threading.Event()

    def active(self) -> None:
        self.delay = self.low

    def wait(self) -> None:
        self.stopped.wait(self.delay)
        self.delay = min(self.delay * 2, self.high)


# --- frame folder being written ------------------------------------------------------------------

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def file_complete(path: Path, size: int) -> bool | None:
    """Whether an image file is completely written, from its own end/size marker; None if its
    format has none (PNG: the IEND chunk; JPEG: the EOI marker; BMP and WebP: the size in the header)."""
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as fh:
            if suffix == ".png":
                if size < len(_PNG_END):
                    return False
                fh.seek(size - len(_PNG_END))
                return fh.read(len(_PNG_END)) == _PNG_END
            if suffix in (".jpg", ".jpeg"):
                if size < 4:
                    return False
                fh.seek(size - 2)
                return fh.read(2) == b"\xff\xd9"
            if suffix == ".bmp":
                head = fh.read(6)
                return len(head) == 6 and struct.unpack("<I", head[2:6])[0] <= size
            if suffix == ".webp":
                head = fh.read(8)
                return len(head) == 8 and struct.unpack("<I", head[4:8])[0] + 8 <= size
    except OSError:
        return False
    return None


@dataclass
class _Pending:
    name: str
    path: Path
    frame: int
    first_seen: float
    signature: tuple[int, int] = (-1, -1)  # (size, mtime_ns) at the last look
    stable_since: float = 0.0
    failed_decodes: int = 0
    next_try: float = 0.0


class LiveFolderSource:
    """A frame folder that a recorder is still writing (see the module docstring)."""

    kind = "frames"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        idle_timeout: float | None = None,
        corrupt_timeout: float = 10.0,
        settle: float = 0.5,
        poll: tuple[float, float] = (0.02, 0.5),
        warn: Warn | None = None,
        start_after: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.video_id = self.path.name
        self.start_after = start_after
        self.idle_timeout = idle_timeout
        self.corrupt_timeout = corrupt_timeout
        self.settle = settle
        self._poller = _Poller(poll)
        self._warn = warn or (lambda message: None)
        self.late: list[str] = []
        self.ended_by: str | None = None
        self.full_scans = 0

    def stop(self) -> None:
        self._poller.stopped.set()

    def _wait_for_folder(self) -> None:
        start = time.monotonic()
        while not self.path.is_dir():
            if self.path.exists() and not self.path.is_dir():  # (a folder created meanwhile is fine)
                raise VCEError(f"{self.path}: not a folder; --follow takes a frame folder, a stream or -")
            waited = time.monotonic() - start
            if self.idle_timeout is None or waited >= self.idle_timeout:
                raise VCEError(
                    f"{self.path}: no such frame folder"
                    + (f" after waiting {waited:.0f} s" if self.idle_timeout else "")
                    + "; start the recorder first or check the path (--idle-timeout waits for it)"
                )
            if self._poller.stopped.is_set():
                return
            self._poller.wait()

    def __iter__(self) -> Iterator[FrameSlot]:
        self._wait_for_folder()
        known: set[str] = set()
        pending: dict[str, _Pending] = {}
        numbers: dict[int, str] = {}  # frame numbers pending, for duplicate checks
        last_frame: int | None = None
        newest: str | None = None  # the known frame file with the highest number
        position = 0
        now = time.monotonic()
        last_progress = now
        dir_mtime = -1
        last_scan = -float("inf")
        scan_cost = 0.0
        marker_scanned = False

        def add(name: str, now: float) -> bool:
            nonlocal newest
            known.add(name)
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                return False  # hidden, sidecar or a recorder's temporary file
            number = frame_number(name)
            if number is None:
                raise VCEError(
                    f"{self.path / name}: no frame number in the file name (expected e.g. frame_000123.png)"
                )
            if self.start_after is not None and number <= self.start_after:
                if newest is None or number > (frame_number(newest) or -1):
                    newest = name  # read by an earlier, interrupted run: not read again
                return False
            if number in numbers:
                raise VCEError(
                    f"{self.path / name}: frame {number} again (also {numbers[number]}); keep one file per frame"
                )
            if last_frame is not None and number <= last_frame:
                self.late.append(name)
                self._warn(
                    f"{self.path / name}: frame {number} arrived after frame {last_frame} was read; "
                    "skipped (the recorder wrote it out of order)"
                )
                return True
            numbers[number] = name
            pending[name] = _Pending(name, self.path / name, number, now)
            if newest is None or number > (frame_number(newest) or -1):
                newest = name
            return True

        while True:
            if self._poller.stopped.is_set():
                self.ended_by = "stopped"
                return
            now = time.monotonic()
            try:
                mtime = os.stat(self.path).st_mtime_ns
            except OSError as exc:
                raise VCEError(f"{self.path}: the frame folder went away ({exc.strerror or exc})") from exc
            marker = os.path.exists(self.path / END_MARKER)
            found = False
            # the next file name in the recorder's numbering: found without listing the folder
            while newest is not None:
                guess = _next_name(newest)
                if guess is None or guess in known or not os.path.isfile(self.path / guess):
                    break
                found |= add(guess, now)
            # list the folder when it changed, at most every ~20x the cost of a listing (a folder
            # of 100,000s of frames), and once more after the end marker appears
            if (mtime != dir_mtime and now - last_scan >= 20 * scan_cost) or (marker and not marker_scanned):
                t0 = time.monotonic()
                with os.scandir(self.path) as it:
                    entries = [e for e in it if e.name not in known]
                for entry in sorted(entries, key=lambda e: natural_key(e.name)):
                    if entry.is_dir():
                        known.add(entry.name)  # folders are not frames (as offline)
                        continue
                    found |= add(entry.name, now)
                dir_mtime, last_scan = mtime, now
                scan_cost = time.monotonic() - t0
                self.full_scans += 1
                marker_scanned = marker
            for item in sorted(pending.values(), key=lambda p: p.frame):
                slot = self._try_read(item, position, time.monotonic())
                if slot is None:
                    break  # later frames wait behind it: the offline order
                del pending[item.name]
                del numbers[item.frame]
                last_frame = item.frame
                position += 1
                found = True
                yield slot
            now = time.monotonic()
            if found:
                last_progress = now
                self._poller.active()
            if not pending:
                if marker and marker_scanned:
                    self.ended_by = "marker"
                    return
                if self.idle_timeout is not None and now - last_progress >= self.idle_timeout:
                    self.ended_by = "idle"
                    return
            self._poller.wait()

    def _try_read(self, item: _Pending, position: int, now: float) -> FrameSlot | None:
        """The frame's slot once it is complete (or given up on as corrupt); None to wait."""
        if now < item.next_try:
            return None
        try:
            st = os.stat(item.path)
            sig = (st.st_size, st.st_mtime_ns)
        except OSError:
            sig = (-1, -1)  # gone (renamed away?): corrupt once the timeout passes
        if sig != item.signature:
            item.signature, item.stable_since = sig, now
        timed_out = now - item.first_seen >= self.corrupt_timeout
        if not timed_out:
            if sig[0] <= 0:
                return None
            complete = file_complete(item.path, sig[0])
            if complete is False or (complete is None and now - item.stable_since < self.settle):
                return None
        image = read_image(item.path)
        if image is not None:
            return FrameSlot(position, item.frame, image)
        if not timed_out:
            # complete by its marker but not decodable yet: a few more tries, then corrupt
            item.failed_decodes += 1
            if item.failed_decodes < 3:
                item.next_try = now + 0.2
                return None
        self._warn(f"{item.path}: frame {item.frame} cannot be decoded; counted as corrupt")
        return FrameSlot(position, item.frame, None, corrupt=True)


_LAST_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def _next_name(name: str) -> str | None:
    """``frame_000123.png`` -> ``frame_000124.png`` (same padding), None without a number."""
    stem, suffix = os.path.splitext(name)
    m = _LAST_DIGITS.search(stem)
    if m is None:
        return None
    digits = m.group(1)
    nxt = f"{int(digits) + 1:0{len(digits)}d}"
    return f"{stem[: m.start(1)]}{nxt}{stem[m.end(1) :]}{suffix}"


# --- a stream OpenCV opens -------------------------------------------------------------------------


class LiveStreamSource:
    """A device index, a growing video file or a URL, read with OpenCV (see the module docstring)."""

    kind = "video"

    def __init__(
        self,
        spec: str,
        *,
        idle_timeout: float | None = None,
        poll: tuple[float, float] = (0.02, 0.5),
        warn: Warn | None = None,
        start_after: int | None = None,
    ) -> None:
        self.spec = spec
        self.start_after = start_after
        #: the stream's frame rate once it is open (None when it does not say, or says nonsense)
        self.fps: float | None = None
        self.device = int(spec) if spec.isdigit() else None
        self.is_url = "://" in spec
        self.path = None if self.device is not None or self.is_url else Path(spec)
        if self.device is not None:
            self.video_id = f"camera{self.device}"
        elif self.path is not None:
            self.video_id = self.path.stem
        else:
            self.video_id = (
                re.sub(r"[^A-Za-z0-9._-]+", "_", spec.split("://", 1)[1]).strip("_")[:80] or "stream"
            )
        self.idle_timeout = idle_timeout
        self._poller = _Poller(poll)
        self._warn = warn or (lambda message: None)
        self.ended_by: str | None = None

    def stop(self) -> None:
        self._poller.stopped.set()

    def _open(self) -> cv2.VideoCapture:
        if self.device is not None:
            return cv2.VideoCapture(self.device)
        options = []
        if self.path is not None and self.idle_timeout is not None:
            options.append("follow;1")  # FFmpeg's file protocol: wait at the end for more data
        if self.idle_timeout is not None:
            options.append(f"rw_timeout;{int(self.idle_timeout * 1e6)}")
        key = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
        before = os.environ.get(key)
        try:
            if options:
                os.environ[key] = "|".join(options)
            return cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG)
        finally:
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before

    def __iter__(self) -> Iterator[FrameSlot]:
        start = time.monotonic()
        while self.path is not None and not self.path.is_file():
            waited = time.monotonic() - start
            if self.idle_timeout is None or waited >= self.idle_timeout:
                raise VCEError(
                    f"{self.path}: no such video file"
                    + (f" after waiting {waited:.0f} s" if self.idle_timeout else "")
                    + "; start the recorder first or check the path (--idle-timeout waits for it)"
                )
            if self._poller.stopped.is_set():
                self.ended_by = "stopped"
                return
            self._poller.wait()
        cap = self._open()
        if not cap.isOpened():
            raise VCEError(
                f"{self.spec}: OpenCV cannot open this stream; check the device, URL or file "
                "(a growing file needs a streamable container: MJPEG AVI, MKV or MPEG-TS)"
            )
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else None  # the rule of sources.VideoSource
        position = 0
        try:
            while True:
                if self._poller.stopped.is_set():
                    self.ended_by = "stopped"
                    return
                ok = cap.grab()
                if not ok:
                    self.ended_by = "eof"  # end of file, or no data for idle_timeout (rw_timeout)
                    return
                if self.start_after is not None and position <= self.start_after:
                    position += 1  # read by an earlier, interrupted run: not decoded again
                    continue
                ok, image = cap.retrieve()
                if not ok or image is None or image.ndim != 3 or image.shape[2] != 3:
                    yield FrameSlot(position, position, None, corrupt=True)
                else:
                    yield FrameSlot(position, position, image)
                position += 1
        finally:
            cap.release()


# --- the vce frame stream on stdin ----------------------------------------------------------------

_LENGTH = struct.Struct(">I")


def write_frame(out: BinaryIO, data: bytes) -> None:
    """Write one encoded image in the vce frame stream format (4-byte big-endian length, bytes)."""
    if not 0 < len(data) <= MAX_FRAME_BYTES:
        raise VCEError(f"a frame must be 1 to {MAX_FRAME_BYTES} bytes, got {len(data)}")
    out.write(_LENGTH.pack(len(data)))
    out.write(data)


def write_end(out: BinaryIO) -> None:
    """End the vce frame stream (a zero length)."""
    out.write(_LENGTH.pack(0))


class StdinSource:
    """The vce frame stream on a binary stream (standard input by default)."""

    kind = "stream"

    def __init__(
        self,
        stream: BinaryIO | None = None,
        *,
        idle_timeout: float | None = None,
        name: str = "stdin",
        poll: tuple[float, float] = (0.02, 0.5),
        start_after: int | None = None,
    ) -> None:
        import sys

        self.stream = stream if stream is not None else sys.stdin.buffer
        self.video_id = name
        self.start_after = start_after
        self.idle_timeout = idle_timeout
        self._poller = _Poller(poll)
        self.ended_by: str | None = None
        try:
            self._fd: int | None = self.stream.fileno()
        except (OSError, AttributeError, ValueError):
            self._fd = None  # an in-memory stream: plain reads

    def stop(self) -> None:
        self._poller.stopped.set()

    def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at EOF, on ``stop()`` or after ``idle_timeout`` without data."""
        if self._fd is None:
            return self.stream.read(n)
        chunks: list[bytes] = []
        got = 0
        last_data = time.monotonic()
        while got < n:
            if self._poller.stopped.is_set():
                break
            ready, _, _ = select.select([self._fd], [], [], self._poller.delay)
            if not ready:
                if self.idle_timeout is not None and time.monotonic() - last_data >= self.idle_timeout:
                    self.ended_by = "idle"
                    break
                self._poller.delay = min(self._poller.delay * 2, self._poller.high)
                continue
            chunk = os.read(self._fd, n - got)
            if not chunk:
                break  # EOF
            chunks.append(chunk)
            got += len(chunk)
            last_data = time.monotonic()
            self._poller.active()
        return b"".join(chunks)

    def __iter__(self) -> Iterator[FrameSlot]:
        position = 0
        while True:
            head = self._read(_LENGTH.size)
            if self._poller.stopped.is_set():
                self.ended_by = "stopped"
                return
            if not head:
                self.ended_by = self.ended_by or ("stopped" if self._poller.stopped.is_set() else "eof")
                return
            if len(head) < _LENGTH.size:
                raise self._cut(position, len(head), _LENGTH.size, "length")
            (n,) = _LENGTH.unpack(head)
            if n == 0:
                self.ended_by = "marker"
                return
            if n > MAX_FRAME_BYTES:
                raise VCEError(
                    f"{self.video_id}: frame {position} announces {n} bytes (more than {MAX_FRAME_BYTES}); "
                    "this is not the vce frame stream (4-byte big-endian length + one encoded image)"
                )
            data = self._read(n)
            if self._poller.stopped.is_set():
                self.ended_by = "stopped"
                return
            if len(data) < n:
                raise self._cut(position, len(data), n, "image")
            if self.start_after is None or position > self.start_after:
                # decoded exactly as frame files are (the same checks as sources.read_image)
                image = decode_image(data, f"{self.video_id}: frame {position}")
                yield FrameSlot(position, position, image, corrupt=image is None)
            position += 1

    def _cut(self, position: int, got: int, want: int, what: str) -> VCEError:
        why = f"no data for {self.idle_timeout} s" if self.ended_by == "idle" else "the stream ended"
        self.ended_by = "cut"
        return VCEError(
            f"{self.video_id}: {why} in the middle of frame {position} ({got} of {want} {what} bytes); "
            f"the {position} complete frame(s) before it are kept"
        )
