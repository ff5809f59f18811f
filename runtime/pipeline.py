"""Frames to probabilities: background decoding and preprocessing, batching, stride, resume.

Reader threads (``parallel_videos`` of them, one video each, started in input order) cut their
videos into *units* (the frames up to the next ``batch`` frames to infer). A thread pool decodes
(frame folders) and preprocesses each unit with the toolkit's one preprocessing (Pillow releases
the GIL, so threads scale); the futures go through one bounded queue, so at most a few units per
reader are in flight and memory stays bounded whatever the video length. The caller's thread runs
the backend on the units as they come (each video's in order) and yields each video's result in
input order. A video decoder is not held to one thread either: FFmpeg (inside OpenCV) decodes with
its own threads (``decoder_threads``), which gives the same frames as one thread.

A graph that takes uint8 (``Runner.input_dtype``; ``vce-export onnx --input uint8``) gets the
uint8 RGB crops as they are: the normalisation runs on the accelerator, and 4x fewer bytes go to it.

Resume: each video's progress is saved atomically in ``partial_dir/<video>.npz`` (every
``checkpoint_seconds`` and when the video ends), keyed by the model hash, the preprocessing, the
stride and the input's fingerprint; a run with another model or input starts that video over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from vce.runtime.atomic import atomic_path
from vce.runtime.backends.base import Runner
from vce.runtime.errors import VCEError
from vce.runtime.labels import NUM_LABELS
from vce.runtime.preprocess import BIOMEDCLIP, PreprocessSpec, model_input, resize_crops
from vce.runtime.sources import FolderSource, Source, VideoSource, read_image


class Fill(StrEnum):
    """How ``--stride`` fills the frames between two inferred ones: repeat or interpolate."""

    HOLD = "hold"
    LINEAR = "linear"


PARTIAL_VERSION = 1


@dataclass(kw_only=True)
class VideoOrigin:
    """What every per-video result says of its video: its source, the frames that did not decode and
    what an interrupted run had computed (:class:`VideoProbs`, ``vce.runtime.run.VideoSummary``)."""

    video: str
    source: str
    kind: str
    corrupt: list[int] = field(default_factory=list)  # frame numbers skipped as corrupt
    missing_at_end: int = 0  # frames the video header announced that never decoded
    resumed: bool = False  # some or all of it came from a previous, interrupted run
    resumed_frames: int = 0  # frames whose results an earlier, interrupted run computed

    @property
    def n_corrupt(self) -> int:
        return len(self.corrupt) + self.missing_at_end


@dataclass(kw_only=True)
class VideoProbs(VideoOrigin):
    """One video's per-frame probabilities, frames in index order (corrupt frames excluded)."""

    frames: np.ndarray  # int64 [T]: frame numbers of every decodable frame
    probs: np.ndarray  # float32 [T, 17]: inferred, or filled from inferred neighbours (stride)
    inferred: np.ndarray  # bool [T]: True where the model ran on the frame


#: ``--parallel-videos`` default: two videos decode at once (a second decoder keeps the workers busy
#: while one video starts or ends); more only helps many short videos on many cores
DEFAULT_PARALLEL_VIDEOS = 2


@dataclass
class VideoFailed:
    """A source that gave no probabilities (``infer_sources(skip_failed=True)``), and why."""

    source: Source
    reason: str


@dataclass
class PipelineOptions:
    batch: int = 8
    stride: int = 1
    fill: Fill = "linear"
    workers: int = 2
    prefetch: int = 4
    checkpoint_seconds: float = 15.0
    parallel_videos: int = DEFAULT_PARALLEL_VIDEOS
    #: FFmpeg threads per video decoder (0: one for small frames, one per CPU for large ones)
    decoder_threads: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise VCEError(f"--batch must be at least 1, got {self.batch}")
        if self.stride < 1:
            raise VCEError(f"--stride must be at least 1, got {self.stride}")
        if self.fill not in tuple(Fill):
            raise VCEError(f"fill must be 'hold' or 'linear', got {self.fill!r}")
        if self.parallel_videos < 1:
            raise VCEError(f"--parallel-videos must be at least 1, got {self.parallel_videos}")
        if self.decoder_threads < 0:
            raise VCEError(f"decoder threads must be 0 (automatic) or more, got {self.decoder_threads}")
        self.workers = max(1, self.workers)
        self.prefetch = max(1, self.prefetch)


# --- units of work -----------------------------------------------------------------------------


@dataclass
class _Item:
    position: int
    frame: int
    infer: bool
    image: np.ndarray | None = None
    path: Path | None = None
    corrupt: bool = False


@dataclass
class _Unit:
    """What a worker turns into a :class:`_Prepared`."""

    video: str
    items: list[_Item]
    cursor: int  # decode positions consumed once this unit is done


@dataclass
class _Prepared:
    video: str
    seen: np.ndarray  # frame numbers of the decodable frames of the unit
    seen_inferred: np.ndarray  # bool per seen frame
    images: np.ndarray  # float32 [n_inferred, 3, S, S], or uint8 crops [n_inferred, S, S, 3]
    corrupt: list[int]
    cursor: int


@dataclass
class _VideoEnd:
    index: int  # position of the source in the input order
    source: Source
    failed: str = ""  # why the source could not be read (with skip_failed)


def _prepare(unit: _Unit, spec: PreprocessSpec, input_dtype: np.dtype) -> _Prepared:
    images: list[np.ndarray] = []
    seen: list[int] = []
    flags: list[bool] = []
    corrupt: list[int] = []
    for it in unit.items:
        image = it.image
        if not it.corrupt and it.path is not None:
            image = read_image(it.path)  # frame folders decode here, in the worker
            if image is None:
                it.corrupt = True
        if it.corrupt:
            corrupt.append(it.frame)
            continue
        seen.append(it.frame)
        flags.append(it.infer)
        if it.infer:
            assert image is not None
            images.append(image)
    x = model_input(resize_crops(images, spec, bgr=True), spec, input_dtype)
    return _Prepared(unit.video, np.asarray(seen, np.int64), np.asarray(flags, bool), x, corrupt, unit.cursor)


# --- resume state --------------------------------------------------------------------------------


def _safe_name(video: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", video)[:80]
    return f"{slug}-{hashlib.sha256(video.encode()).hexdigest()[:8]}.npz"


#: every name :func:`_safe_name` gives, and its ``.live`` twin (``vce-run --follow``'s log): how a
#: run recognises partial files vce wrote
PARTIAL_NAME = re.compile(r"[A-Za-z0-9._-]{0,80}-[0-9a-f]{8}\.(?:npz|live)")


def partial_name(video: str) -> str:
    """The partial file name of ``video`` inside the partial folder."""
    return _safe_name(video)


@dataclass
class _State:
    """Progress of one video (what a partial file holds)."""

    key: dict[str, Any]
    seen: list[np.ndarray] = field(default_factory=list)
    seen_inferred: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    corrupt: list[int] = field(default_factory=list)
    cursor: int = 0
    done: bool = False
    missing_at_end: int = 0
    resumed: bool = False
    loaded: int = 0  # frames read back from the partial file

    def add(self, p: _Prepared, probs: np.ndarray) -> None:
        self.seen.append(p.seen)
        self.seen_inferred.append(p.seen_inferred)
        self.probs.append(probs.astype(np.float32, copy=False))
        self.corrupt.extend(p.corrupt)
        self.cursor = p.cursor

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seen = np.concatenate(self.seen) if self.seen else np.zeros(0, np.int64)
        flags = np.concatenate(self.seen_inferred) if self.seen_inferred else np.zeros(0, bool)
        probs = np.concatenate(self.probs) if self.probs else np.zeros((0, NUM_LABELS), np.float32)
        # keep one array each, so a long video does not hold thousands of small ones
        self.seen, self.seen_inferred, self.probs = [seen], [flags], [probs]
        return seen, flags, probs

    def save(self, path: Path) -> None:
        seen, flags, probs = self.arrays()
        meta = {
            "version": PARTIAL_VERSION,
            "key": self.key,
            "cursor": self.cursor,
            "done": self.done,
            "missing_at_end": self.missing_at_end,
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                meta=np.array(json.dumps(meta)),
                seen=seen,
                seen_inferred=flags,
                probs=probs,
                corrupt=np.asarray(self.corrupt, np.int64),
            )

    @classmethod
    def load(cls, path: Path, key: dict[str, Any]) -> _State | None:
        """The saved state if it exists and was made with the same ``key``; else None."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("version") != PARTIAL_VERSION or meta.get("key") != key:
                    return None
                state = cls(key, cursor=int(meta["cursor"]), done=bool(meta["done"]), resumed=True)
                state.missing_at_end = int(meta.get("missing_at_end", 0))
                state.seen = [data["seen"].astype(np.int64)]
                state.seen_inferred = [data["seen_inferred"].astype(bool)]
                state.probs = [data["probs"].astype(np.float32)]
                state.corrupt = [int(v) for v in data["corrupt"]]
                state.loaded = int(state.seen[0].size)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None  # unreadable partial: start this video over
        return state


def fill_probs(probs: np.ndarray, inferred: np.ndarray, how: Fill = "hold") -> np.ndarray:
    """Give every frame probabilities from the inferred ones (rows where ``inferred``).

    ``probs`` [T, C] holds valid values only on inferred rows. ``hold``: each frame takes the last
    inferred frame at or before it (frames before the first inferred take the first); ``linear``:
    per-class linear interpolation over row positions, held flat beyond the ends.
    """
    idx = np.flatnonzero(inferred)
    if idx.size == 0:
        raise VCEError("no frame was inferred; nothing to fill from")
    if idx.size == len(inferred):
        return probs
    pos = np.arange(len(inferred))
    if how == "hold":
        src = np.searchsorted(idx, pos, side="right") - 1
        return probs[idx[np.maximum(src, 0)]]
    out = np.empty_like(probs)
    for c in range(probs.shape[1]):
        out[:, c] = np.interp(pos, idx, probs[idx, c])
    return out


def _finish(source: Source, state: _State, fill: Fill) -> VideoProbs:
    seen, flags, probs_inferred = state.arrays()
    if seen.size == 0 or not flags.any():
        n_bad = len(state.corrupt) + state.missing_at_end
        what = f"all {n_bad} frame(s) are corrupt" if n_bad else "it has zero frames"
        raise VCEError(f"{source.path}: no decodable frame ({what}); check the video or frame folder")
    if flags.all():
        full = probs_inferred
    else:
        full = np.zeros((seen.size, NUM_LABELS), np.float32)
        full[flags] = probs_inferred
    return VideoProbs(
        video=source.video_id,
        source=str(source.path),
        kind=source.kind,
        frames=seen,
        probs=fill_probs(full, flags, fill),
        inferred=flags,
        corrupt=sorted(state.corrupt),
        missing_at_end=state.missing_at_end,
        resumed=state.resumed,
        resumed_frames=state.loaded,
    )


# --- the pipeline ----------------------------------------------------------------------------------


def _probs_of(out: dict[str, np.ndarray]) -> np.ndarray:
    if "probs" in out:
        return np.asarray(out["probs"], dtype=np.float32)
    if "logits" in out:
        return (1.0 / (1.0 + np.exp(-np.asarray(out["logits"], dtype=np.float64)))).astype(np.float32)
    raise VCEError(f"the model returns {sorted(out)}; expected a 'probs' or 'logits' output")


def checked_probs(out: dict[str, np.ndarray], frames: np.ndarray, video: str) -> np.ndarray:
    """The probabilities [N, 17] a runner returned for the frames ``frames`` [N] of ``video``,
    checked: the shape, finite, within [0, 1] (else one VCEError saying what to do)."""
    probs = _probs_of(out)
    n = len(frames)
    if probs.shape != (n, NUM_LABELS):
        raise VCEError(
            f"the model returned probabilities of shape {probs.shape} for a batch of {n}; "
            f"expected [N, {NUM_LABELS}]"
        )
    if not np.all(np.isfinite(probs)):
        bad = np.asarray(frames)[~np.isfinite(probs).all(axis=1)]
        raise VCEError(
            f"video {video}: the model produced NaN/Inf probabilities (frames "
            f"{', '.join(map(str, bad[:5].tolist()))}...); the graph or engine is broken: "
            "try --graph fp32 or another --backend"
        )
    if n and (probs.min() < 0.0 or probs.max() > 1.0):
        raise VCEError(
            f"video {video}: the model produced probabilities outside [0, 1] (min "
            f"{probs.min():.3g}, max {probs.max():.3g}); its 'probs' output is not a probability: "
            "re-export the bundle"
        )
    return probs


class _Stop(Exception):
    pass


def infer_sources(
    sources: Sequence[Source],
    runner: Runner,
    *,
    spec: PreprocessSpec = BIOMEDCLIP,
    options: PipelineOptions | None = None,
    model_hash: str = "",
    partial_dir: Path | None = None,
    on_frames: Callable[[str, int], None] | None = None,
    skip_failed: bool = False,
) -> Iterator[VideoProbs | VideoFailed]:
    """Run ``runner`` over every source; yield one :class:`VideoProbs` per source, in input order.

    Up to ``options.parallel_videos`` sources decode at once; their batches reach the runner as
    they are ready, each source's in order. ``on_frames(video, n)`` is called as decode positions
    are processed (for progress bars). With ``partial_dir``, progress is saved there and a matching
    earlier partial is resumed; a video that finishes before an earlier one waits on disk there.
    ``skip_failed``: a source that cannot be read or has no decodable frame yields a
    :class:`VideoFailed` and the others go on (else its error stops the run).
    """
    opts = options or PipelineOptions()
    input_dtype = np.dtype(getattr(runner, "input_dtype", np.float32))
    keys = {s.video_id: video_key(s, model_hash, spec, opts.stride) for s in sources}
    states: dict[str, _State] = {}
    if partial_dir is not None:
        for s in sources:
            st = _State.load(partial_dir / _safe_name(s.video_id), keys[s.video_id])
            if st is not None:
                states[s.video_id] = st
    resumed_done = {vid for vid, st in states.items() if st.done}
    starts = {vid: st.cursor for vid, st in states.items()}
    n_readers = min(opts.parallel_videos, max(1, len(sources)))
    work: queue.Queue[Future[_Prepared] | _VideoEnd | BaseException] = queue.Queue(opts.prefetch * n_readers)
    stop = threading.Event()
    slots = threading.Semaphore(n_readers)
    pool = ThreadPoolExecutor(opts.workers, thread_name_prefix="vce-prep")

    def put(item: Future[_Prepared] | _VideoEnd | BaseException) -> None:
        while not stop.is_set():
            try:
                work.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    def submit(unit: _Unit) -> None:
        put(pool.submit(_prepare, unit, spec, input_dtype))

    def read(index: int, source: Source) -> None:
        try:
            failed = ""
            if source.video_id not in resumed_done:
                try:
                    _read_source(source, starts.get(source.video_id, 0), opts, submit)
                except VCEError as exc:
                    if not skip_failed:
                        raise
                    failed = str(exc)
            put(_VideoEnd(index, source, failed))
        except _Stop:
            return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            with contextlib.suppress(_Stop):
                put(exc)
        finally:
            slots.release()

    def launch() -> None:
        """Start one reader per source, in input order, at most ``n_readers`` at a time."""
        for index, source in enumerate(sources):
            while not slots.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            threading.Thread(
                target=read, args=(index, source), name=f"vce-reader-{index}", daemon=True
            ).start()

    launcher = threading.Thread(target=launch, name="vce-launcher", daemon=True)
    launcher.start()
    last_save: dict[str, float] = {}
    # done, waiting for an earlier video: in memory, or (with partial_dir) on disk: (source, resumed,
    # frames an interrupted run had computed)
    finished: dict[int, VideoProbs | VideoFailed | tuple[Source, bool, int]] = {}
    next_out = 0
    try:
        while next_out < len(sources):
            if next_out in finished:
                done = finished.pop(next_out)
                if isinstance(done, tuple):  # it waited in its partial file
                    assert partial_dir is not None
                    source, resumed, resumed_frames = done
                    done = load_finished(partial_dir, source, keys[source.video_id], opts.fill)
                    done.resumed, done.resumed_frames = resumed, resumed_frames
                next_out += 1
                yield done
                continue
            item = work.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _VideoEnd):
                source = item.source
                st = states.setdefault(source.video_id, _State(keys[source.video_id]))
                try:
                    if item.failed:
                        raise VCEError(item.failed)
                    if not st.done and isinstance(source, VideoSource):
                        st.missing_at_end = source.missing_at_end
                    result = _finish(source, st, opts.fill)  # raises on a video without frames
                except VCEError as exc:
                    if not skip_failed:
                        raise
                    del states[source.video_id]
                    if partial_dir is not None:
                        clear_partials(partial_dir, [source.video_id], keep_dir=True)
                    finished[item.index] = VideoFailed(source, str(exc))
                    continue
                if not st.done:
                    st.done = True
                    if partial_dir is not None:
                        st.save(partial_dir / _safe_name(source.video_id))
                elif on_frames is not None:
                    on_frames(source.video_id, source.length_hint())
                del states[source.video_id]  # only unfinished videos' arrays stay in memory
                keep_on_disk = partial_dir is not None and item.index != next_out
                finished[item.index] = (
                    (source, result.resumed, result.resumed_frames) if keep_on_disk else result
                )
                continue
            prepared = item.result()
            st = states.setdefault(prepared.video, _State(keys[prepared.video]))
            before = st.cursor
            probs = np.zeros((0, NUM_LABELS), np.float32)
            if prepared.images.shape[0]:
                inferred = prepared.seen[prepared.seen_inferred]
                probs = checked_probs(runner.infer(prepared.images), inferred, prepared.video)
            st.add(prepared, probs)
            if on_frames is not None:
                on_frames(prepared.video, prepared.cursor - before)
            if partial_dir is not None:
                now = time.monotonic()
                if now - last_save.setdefault(prepared.video, now) >= opts.checkpoint_seconds:
                    st.save(partial_dir / _safe_name(prepared.video))
                    last_save[prepared.video] = now
    except BaseException:
        # Ctrl-C or an error: keep what the finished batches computed, so the next run resumes
        if partial_dir is not None:
            for video, st in states.items():
                if not st.done and st.cursor > 0:
                    with contextlib.suppress(OSError, VCEError):
                        st.save(partial_dir / _safe_name(video))
        raise
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                work.get_nowait()
        pool.shutdown(wait=True, cancel_futures=True)
        launcher.join(timeout=5)


def _read_source(source: Source, start: int, opts: PipelineOptions, submit: Callable[[_Unit], None]) -> None:
    """Cut one source into units (``opts.batch`` frames to infer each) and submit them."""
    k = opts.stride
    n_hint = source.length_hint()
    if isinstance(source, FolderSource):
        last = n_hint - 1
        slots = source.slots(start, decode=False)
    else:
        last = -1  # unknown until the end: keep the images of the frames near the header's end
        want: Callable[[int], bool] = lambda pos: pos % k == 0 or (n_hint > 0 and pos >= n_hint - 1)  # noqa: E731
        if isinstance(source, VideoSource):
            slots = source.slots(start, want=want, threads=opts.decoder_threads)
        else:
            slots = source.slots(start, want=want)
    pending: list[_Item] = []
    n_infer = 0
    for slot in slots:
        infer = not slot.corrupt and (slot.position % k == 0 or slot.position == last)
        if not slot.corrupt and pending and not pending[-1].infer:
            pending[-1].image = None  # a held tail image is only needed if it turns out to be last
        pending.append(_Item(slot.position, slot.frame, infer, slot.image, slot.path, slot.corrupt))
        n_infer += infer
        if n_infer == opts.batch:
            submit(_Unit(source.video_id, pending, slot.position + 1))
            pending, n_infer = [], 0
    if k > 1 and isinstance(source, VideoSource):
        tail = next((it for it in reversed(pending) if not it.corrupt), None)
        if tail is not None and not tail.infer and tail.image is not None:
            tail.infer = True  # the last frame is always inferred
    if pending:
        submit(_Unit(source.video_id, pending, pending[-1].position + 1))


def video_key(source: Source, model_hash: str, spec: PreprocessSpec, stride: int) -> dict[str, Any]:
    """What a partial must match to be resumed: model, input, preprocessing and stride."""
    return {
        "model": model_hash,
        "input": source.fingerprint(),
        "stride": stride,
        "preprocess": spec.to_dict(),
    }


def load_finished(partial_dir: Path, source: Source, key: dict[str, Any], fill: Fill = "hold") -> VideoProbs:
    """A finished video's probabilities, read back from its partial file."""
    st = _State.load(partial_dir / _safe_name(source.video_id), key)
    if st is None or not st.done:
        raise VCEError(f"{partial_dir}: the results of video {source.video_id} are gone; run again")
    return _finish(source, st, fill)


def clear_partials(partial_dir: Path, videos: Sequence[str], *, keep_dir: bool = False) -> None:
    """Remove the partial files of ``videos`` (and the folder once empty, unless ``keep_dir``)."""
    for video in videos:
        with contextlib.suppress(OSError):
            (partial_dir / _safe_name(video)).unlink()
    if not keep_dir:
        with contextlib.suppress(OSError):
            partial_dir.rmdir()
