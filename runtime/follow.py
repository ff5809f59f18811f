"""``vce-run --follow``: one examination followed while it is recorded, the offline outputs at the end.

The loop (:func:`follow`): a reader thread iterates the live source (``vce.runtime.live``: a frame
folder being written, a stream OpenCV opens, or the vce frame stream on stdin), which decodes each
frame as it arrives; the main thread takes the frames that wait, chooses which to infer
(:class:`~vce.runtime.keepup.LagPolicy` under ``--max-lag``, the ``--stride`` rule), converts them
to the model's input (:func:`model_input`, the one place), runs the bundle's backend on them in
one batch (up to ``--batch``; a single frame when only one waits), fills the skipped frames
(:class:`~vce.runtime.keepup.FillBuffer`) and feeds the probabilities to the toolkit's one
post-processing (:class:`~vce.runtime.online.OnlinePostprocessor`). When nothing waits it blocks
on the reader's queue: no spinning.

While it runs, ``OUT`` holds:

- ``events.jsonl``: one line per event as soon as it is final (``vce.runtime.livestatus``), with
  ``delay_frames`` (frames that had arrived after the event's last frame when the line was
  written), ``post_frames`` (of those, the frames post-processing had seen: at most the delay bound)
  and ``delay_s`` (seconds since the event's last frame arrived);
- ``status.json``: replaced atomically after each batch (at most every ``status_every`` seconds)
  and every ``heartbeat`` seconds while idle;
- ``.partial/<video>-<hash>.live``: the resume log (``vce.runtime.livelog``);
- with ``timeline_every``, ``<video>_timeline.png`` refreshed every that many minutes.

When the source ends (its end marker, EOF, ``idle_timeout`` seconds without a frame, Ctrl-C or
SIGTERM: the first one stops the source and finishes, a second one aborts), the frames that wait are
inferred (the last frame always is, as offline with ``--stride``), post-processing finishes and
the offline run's own writer (:func:`vce.runtime.run.write_outputs`) writes ``events.json``,
``frames.csv`` (+ provenance sidecar), the timeline and ``run.json``. When no frame was skipped to
keep up, they are byte-identical to ``vce-run`` on the same frames with the same bundle and
settings (the backend must give a frame the same probabilities whatever the batch it is in, as
ONNX Runtime's CPU kernels do for the graphs the tests and benchmarks run). With skipped frames,
``frames.csv`` and ``events.json`` equal the offline outputs with the skipped frames' rows filled
from their inferred neighbours by ``--fill`` (as ``--stride`` fills), and ``run.json`` lists them.

Delay. Post-processing emits an event at most ``D + 1`` frames after its last frame
(``vce.runtime.online.delay_bound_frames``; 11 for the defaults). A live event waits in addition
for the frames not yet post-processed when it would be final: the inference backlog (frames that
arrived during the current batch, at most about ``--max-lag`` once frames are skipped) and, with
``--fill linear``, the gap of skipped frames before the next inferred one (a skipped frame reaches
post-processing with the next inferred frame). ``status.json`` shows that backlog (``behind``).

A source error after frames have arrived (a stream cut inside a frame, the folder removed) ends the
source there: the outputs are written for the frames that arrived and the error is the run's
problem (exit 3). Before any frame it is an error, and nothing stays in ``OUT``.

Resume: ``run.json`` is written first with its signature (the offline mechanism, ``outdir``); a
killed run restarted with the same command re-feeds the log's probabilities to a new
post-processor (the events it gives that ``events.jsonl`` already holds, compared as a set, are not
written again) and reads the source again after the last logged frame: a frame folder or a video
file skips what was read, a frame stream on stdin must be sent again from its first frame (its
first frames are read and dropped). A camera or a URL cannot be read again: such a run starts over
(``--fresh``) or goes to another ``-o``.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import numpy as np

from vce.runtime.atomic import write_json
from vce.runtime.backends.base import Runner
from vce.runtime.backends.select import Choice, choose_backend
from vce.runtime.bundle import Bundle
from vce.runtime.errors import MissingDependencyError, VCEError
from vce.runtime.framescsv import VideoFrames
from vce.runtime.keepup import FillBuffer, LagPolicy
from vce.runtime.labels import NUM_LABELS
from vce.runtime.live import LiveFolderSource, LiveStreamSource, StdinSource
from vce.runtime.livelog import CORRUPT, INFERRED, SKIPPED, FrameLog
from vce.runtime.livestatus import EventLog, RateMeter, read_event_log, status_snapshot, write_status
from vce.runtime.online import OnlinePostprocessor, delay_bound_frames, order_events, settle_lag
from vce.runtime.outdir import RUN_RECORD, OutputFolder, check_separate
from vce.runtime.pipeline import VideoProbs, checked_probs, fill_probs, partial_name
from vce.runtime.postprocess import Event, PostprocessConfig, postprocess
from vce.runtime.preprocess import PreprocessSpec, preprocess
from vce.runtime.run import (
    RunOptions,
    RunResult,
    _collect,
    _finished_record,
    _settings,
    _summary,
    missing_frames,
    open_runner,
    resolve_post,
    run_provenance,
    run_record,
    write_outputs,
)
from vce.runtime.sources import VIDEO_SUFFIXES, FrameSlot
from vce.runtime.timeline import timeline_names

EVENTS_JSONL = "events.jsonl"
STATUS_JSON = "status.json"
LiveSource = LiveFolderSource | LiveStreamSource | StdinSource
Notify = Callable[[str], None]


@dataclass
class FollowOptions:
    """What only a live run has (the rest is :class:`~vce.runtime.run.RunOptions`)."""

    #: end after this many seconds without a new frame (None: only the end marker, EOF or Ctrl-C);
    #: also how long to wait for a source that is not there yet
    idle_timeout: float | None = None
    #: at most this many arrived frames wait for inference; more are thinned (0: never skip)
    max_lag: int = 32
    #: a frame file that does not decode for this long counts as corrupt (frame folders)
    corrupt_timeout: float = 10.0
    #: refresh the timeline PNG every this many minutes (None: only at the end)
    timeline_every: float | None = None
    #: the video id of a stdin stream or a URL (default: ``stdin``, the URL's host and path)
    video_id: str | None = None
    #: where decoded frames become model input: in the reader thread as they arrive, or in the
    #: main thread just before inference (measured by bench/bench_live.py)
    prepare: Literal["reader", "main"] = "main"
    #: let ONNX Runtime's threads spin between runs (measured by bench/bench_live.py: off costs
    #: nothing in frames/s and saves the CPU spinning burns after every single-frame run)
    spin: bool = False
    status_every: float = 0.5
    heartbeat: float = 1.0
    log_sync_seconds: float = 5.0
    poll: tuple[float, float] = (0.02, 0.5)
    #: Ctrl-C / SIGTERM finish the run (only possible in the main thread)
    handle_signals: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_lag, bool) or not isinstance(self.max_lag, int) or self.max_lag < 0:
            raise VCEError(
                f"--max-lag must be a whole number of frames (0: never skip), got {self.max_lag!r}"
            )
        for name in ("idle_timeout", "timeline_every"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise VCEError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")
        if not 0 < self.corrupt_timeout < math.inf:
            raise VCEError(
                f"--corrupt-timeout must be a positive number of seconds, got {self.corrupt_timeout}"
            )


@dataclass
class FollowResult(RunResult):
    """A run's result plus what happened live (also in ``run.json`` under ``live``)."""

    live: dict[str, Any] = field(default_factory=dict)

    @property
    def problem(self) -> str | None:
        """Why the source ended early (a cut stream, a folder removed), if it did."""
        return self.live.get("problem")


# --- the source ------------------------------------------------------------------------------------


def source_kind(spec: str) -> str:
    """``stdin``, ``stream`` (a device index, a URL, a video file) or ``folder``."""
    if spec == "-":
        return "stdin"
    if spec.isdigit() or "://" in spec or Path(spec).suffix.lower() in VIDEO_SUFFIXES:
        return "stream"
    return "folder"


def open_live_source(spec: str, live: FollowOptions, warn: Notify | None) -> LiveSource:
    """The live source ``--follow SPEC`` names (not opened yet: iterating it waits for it)."""
    kind = source_kind(spec)
    if kind == "stdin":
        return StdinSource(idle_timeout=live.idle_timeout, name=live.video_id or "stdin", poll=live.poll)
    if kind == "stream":
        source: LiveSource = LiveStreamSource(spec, idle_timeout=live.idle_timeout, poll=live.poll, warn=warn)
    else:
        source = LiveFolderSource(
            spec,
            idle_timeout=live.idle_timeout,
            corrupt_timeout=live.corrupt_timeout,
            poll=live.poll,
            warn=warn,
        )
    if live.video_id:
        source.video_id = live.video_id
    return source


def _replayable(source: LiveSource) -> bool:
    """Whether a restarted run can read the source's earlier frames again."""
    return not isinstance(source, LiveStreamSource) or source.path is not None


def model_input(images: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Decoded frames (BGR uint8) -> the runner's input: the one place live mode converts them."""
    return preprocess(images, spec, bgr=True)


def live_log_name(video: str) -> str:
    """The resume log's name in ``.partial/``: the offline partial name with the suffix ``.live``."""
    return partial_name(video)[: -len(".npz")] + ".live"


def _ranges(values: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7] -> [[1, 3], [7, 7]] (how run.json lists skipped frames)."""
    out: list[list[int]] = []
    for v in values:
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(float(np.median(values)), 3), "max": round(float(np.max(values)), 3)}


# --- the loop ----------------------------------------------------------------------------------------


@dataclass
class _Arrival:
    position: int  # arrival index (corrupt frames included), continued across a resume
    frame: int
    image: np.ndarray | None
    corrupt: bool
    time: float | None  # monotonic arrival time (None: read back from the log)
    x: np.ndarray | None = None  # the model input, when prepared in the reader


@dataclass
class _Pushed:
    frame: int
    position: int
    time: float | None


_END = object()


class _Live:
    """The state of one followed video: waiting frames, post-processing, logs, counters."""

    def __init__(
        self,
        *,
        video: str,
        out: Path,
        runner: Runner | None,
        spec: PreprocessSpec,
        thresholds: np.ndarray,
        config: PostprocessConfig,
        opts: RunOptions,
        live: FollowOptions,
        frame_log: FrameLog,
        event_log: EventLog,
        already_logged: set[tuple[int, int, tuple[str, ...]]],
        fps: float | None,
        on_event: Callable[[str, Event, dict[str, Any]], None] | None,
        warn: Notify,
    ) -> None:
        self.video, self.out, self.runner, self.spec = video, out, runner, spec
        self.thresholds, self.config, self.opts, self.live = thresholds, config, opts, live
        self.frame_log, self.event_log, self.logged = frame_log, event_log, already_logged
        self.fps, self.on_event, self.warn = fps, on_event, warn
        self.proc = OnlinePostprocessor(thresholds, config)
        self.fill = FillBuffer(opts.fill)
        self.policy = LagPolicy(live.max_lag) if live.max_lag else None
        self.pending: collections.deque[_Arrival] = collections.deque()
        lookback = settle_lag(config) + 1 + 8192 + live.max_lag * opts.stride
        self.pushed: collections.deque[_Pushed] = collections.deque(maxlen=lookback)
        self.decided: list[_Pushed] = []  # decodable frames decided, not yet pushed (in the fill buffer)
        self.events: list[Event] = []
        self.seen = self.inferred = self.skipped = 0
        self.corrupt: list[int] = []
        self.skipped_frames: list[int] = []
        self.newest_frame: int | None = None
        self.resumed_frames = 0
        self.arrivals = RateMeter()
        self.inferences = RateMeter()
        self.delays_frames: list[int] = []
        self.delays_s: list[float] = []
        self.last_status = -math.inf
        self.last_sync = time.monotonic()
        self.ended_by: str | None = None
        self.timeline_name = timeline_names([video])[video]
        self.last_timeline = time.monotonic()

    # --- resume -------------------------------------------------------------------------------------

    def rebuild(self, records: np.ndarray) -> None:
        """Re-feed an interrupted run's log: the same state, the events it had written not again."""
        for rec in records:
            frame, kind = int(rec["frame"]), int(rec["kind"])
            self.seen += 1
            self.newest_frame = frame
            if kind == CORRUPT:
                self.corrupt.append(frame)
                continue
            self.resumed_frames += 1
            self.decided.append(_Pushed(frame, self.seen - 1, None))
            if kind == SKIPPED:
                self.skipped += 1
                self.skipped_frames.append(frame)
                self.fill.add(frame, None)
            else:
                self.inferred += 1
                self._push(*self.fill.add(frame, rec["probs"]))

    # --- arrivals -----------------------------------------------------------------------------------

    def arrive(self, slot: FrameSlot, when: float, x: np.ndarray | None) -> None:
        image = None if x is not None else slot.image  # prepared in the reader: the input is enough
        a = _Arrival(self.seen, slot.frame, image, slot.corrupt, when, x)
        self.seen += 1
        self.newest_frame = slot.frame
        self.arrivals.tick(when)
        self.pending.append(a)

    def _plan(self, final: bool) -> tuple[int, list[int]]:
        """(how many waiting frames are decided now, which of them are inferred: indices)."""
        k = self.opts.stride
        cands = [i for i, a in enumerate(self.pending) if not a.corrupt and a.position % k == 0]
        if final:
            last = next(
                (i for i in range(len(self.pending) - 1, -1, -1) if not self.pending[i].corrupt), None
            )
            if last is not None and (not cands or cands[-1] != last):
                cands.append(last)  # the last frame is always inferred (offline --stride's rule)
            chosen = cands
        elif self.policy is not None and cands:
            keep = set(self.policy.choose([self.pending[i].position for i in cands])[0])
            chosen = [i for i in cands if self.pending[i].position in keep]
        else:
            chosen = cands
        batch = chosen[: self.opts.batch]
        if batch:
            return batch[-1] + 1, batch
        if final:
            return len(self.pending), []
        lead = 0  # corrupt frames at the front are decided at once (they have no row to fill)
        while lead < len(self.pending) and self.pending[lead].corrupt:
            lead += 1
        return lead, []

    def step(self, final: bool) -> bool:
        """Decide and infer the next batch of waiting frames; False when there is nothing to do yet."""
        n, batch = self._plan(final)
        if n == 0:
            return False
        prefix = [self.pending.popleft() for _ in range(n)]
        chosen = [prefix[i] for i in batch]
        probs = np.zeros((0, NUM_LABELS), np.float32)
        if chosen:
            x = self._input(chosen)
            assert self.runner is not None
            frames = np.asarray([a.frame for a in chosen], np.int64)
            probs = checked_probs(self.runner.infer(x), frames, self.video)
            self.inferences.tick(time.monotonic(), len(chosen))
        kinds = np.zeros(n, np.uint8)
        rows = np.zeros((n, NUM_LABELS), np.float32)
        picked = dict(zip(batch, range(len(batch)), strict=True))
        for i, a in enumerate(prefix):
            if a.corrupt:
                kinds[i] = CORRUPT
            elif i in picked:
                kinds[i], rows[i] = INFERRED, probs[picked[i]]
            else:
                kinds[i] = SKIPPED
        self.frame_log.append(np.asarray([a.frame for a in prefix], np.int64), kinds, rows)
        for i, a in enumerate(prefix):
            a.image = a.x = None
            if kinds[i] == CORRUPT:
                self.corrupt.append(a.frame)
                continue
            self.decided.append(_Pushed(a.frame, a.position, a.time))
            if kinds[i] == SKIPPED:
                self.skipped += 1
                self.skipped_frames.append(a.frame)
                self.fill.add(a.frame, None)
            else:
                self.inferred += 1
                self._push(*self.fill.add(a.frame, rows[i]))
        if time.monotonic() - self.last_sync >= self.live.log_sync_seconds:
            self.frame_log.sync()
            self.last_sync = time.monotonic()
        return True

    def _input(self, chosen: list[_Arrival]) -> np.ndarray:
        if all(a.x is None for a in chosen):
            return model_input([a.image for a in chosen if a.image is not None], self.spec)
        return np.stack([a.x if a.x is not None else model_input([a.image], self.spec)[0] for a in chosen])  # type: ignore[list-item]

    # --- post-processing and events -----------------------------------------------------------------

    def _push(self, frames: np.ndarray, probs: np.ndarray, final: bool = False) -> None:
        k = len(frames)
        self.pushed.extend(self.decided[:k])
        del self.decided[:k]
        events = self.proc.push(frames, probs, final=final)
        if events:
            self._emit(events)

    def _emit(self, events: list[Event]) -> None:
        self.frame_log.sync()  # the log never lags behind an event a viewer has seen
        self.last_sync = time.monotonic()
        now_mono, now = time.monotonic(), time.time()
        for ev in events:
            self.events.append(ev)
            key = (ev["start"], ev["end"], tuple(ev["label"]))
            if key in self.logged:
                continue  # written by the interrupted run this one resumes
            self.logged.add(key)
            extra = self._delay(ev, now_mono)
            extra["time"] = round(now, 3)
            self.event_log.write(self.video, ev, extra)
            if self.on_event is not None:
                self.on_event(self.video, ev, extra)

    def _delay(self, ev: Event, now: float) -> dict[str, Any]:
        """How long ``ev`` waited: frames that arrived, and were post-processed, after its last frame."""
        found = next(
            ((back, p) for back, p in enumerate(reversed(self.pushed)) if p.frame <= ev["end"]), None
        )
        if found is None:
            return {"delay_frames": None, "post_frames": None, "delay_s": None}
        post, last = found
        delay = self.seen - 1 - last.position
        seconds = None if last.time is None else round(now - last.time, 3)
        if last.time is not None:
            self.delays_frames.append(delay)
            self.delays_s.append(now - last.time)
        return {"delay_frames": delay, "post_frames": post, "delay_s": seconds}

    def finish(self) -> None:
        """The source has ended and every waiting frame is decided: the last events."""
        frames, probs = self.fill.finish()
        self._push(frames, probs, final=True)

    # --- status and timeline ------------------------------------------------------------------------

    def status(self, state: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_status < self.live.status_every:
            return
        self.last_status = now
        rate = self.arrivals.rate(now) or (self.fps or 0.0)
        snapshot = status_snapshot(
            video=self.video, state=state, seen=self.seen, inferred=self.inferred, skipped=self.skipped,
            corrupt=len(self.corrupt), settled=self.proc.frames_settled, newest_frame=self.newest_frame,
            settled_frame=self.proc.last_settled_frame, labels=self.proc.settled_labels(), fps=rate,
            events=len(self.events), delay_bound_frames=self.proc.delay_bound, now=time.time(),
            inference_fps=self.inferences.rate(now) or None, ended_by=self.ended_by, nominal_fps=self.fps,
        )  # fmt: skip
        write_status(self.out / STATUS_JSON, snapshot)

    def idle_for(self) -> float:
        return max(self.live.heartbeat - (time.monotonic() - self.last_status), 0.01)

    def refresh_timeline(self) -> None:
        every = self.live.timeline_every
        if every is None or not self.opts.plots or time.monotonic() - self.last_timeline < every * 60:
            return
        self.last_timeline = time.monotonic()
        vp = _video_probs(self.frame_log.read(), self.video, "", "", self.opts, self.resumed_frames)
        if vp is None:
            return
        try:
            from vce.runtime.lazy import require

            require("matplotlib", "timeline plots")
            from vce.runtime.atomic import atomic_path
            from vce.runtime.timeline import plot_timeline

            with atomic_path(self.out / self.timeline_name) as tmp:
                plot_timeline(
                    tmp, self.video, vp.frames, vp.probs, order_events(self.events, self.config.grouping),
                    self.thresholds, missing=missing_frames(vp), fps=self.fps,
                )  # fmt: skip
        except MissingDependencyError as exc:
            self.live.timeline_every = None
            self.warn(f"timeline refresh skipped: {exc}")


def _video_probs(
    records: np.ndarray, video: str, source: str, kind: str, opts: RunOptions, resumed_frames: int
) -> VideoProbs | None:
    """The video's probabilities as the offline pipeline builds them (``fill_probs`` over the
    inferred frames); None before any frame was inferred."""
    decodable = records["kind"] != CORRUPT
    flags = records["kind"][decodable] == INFERRED
    if not flags.any():
        return None
    frames = records["frame"][decodable].astype(np.int64)
    full = records["probs"][decodable].astype(np.float32)
    return VideoProbs(
        video=video,
        source=source,
        kind=kind,
        frames=frames,
        probs=fill_probs(full, flags, opts.fill),
        inferred=flags,
        corrupt=sorted(records["frame"][~decodable].astype(int).tolist()),
        resumed=resumed_frames > 0,
        resumed_frames=resumed_frames,
    )


class _Reader:
    """The source iterated in a thread; arrivals, the end and errors go through one queue."""

    def __init__(self, source: LiveSource, prepare: Callable[[FrameSlot], np.ndarray | None] | None) -> None:
        self.source = source
        self.prepare = prepare
        self.queue: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="vce-follow-reader", daemon=True)

    def _run(self) -> None:
        try:
            for slot in self.source:
                x = self.prepare(slot) if self.prepare is not None else None
                self.queue.put((slot, time.monotonic(), x))
            self.queue.put(_END)
        except BaseException as exc:  # handed to the main thread
            self.queue.put(exc)

    def take(self, block: bool, timeout: float) -> Iterator[Any]:
        """Everything queued now (waiting up to ``timeout`` for the first item when ``block``)."""
        try:
            yield self.queue.get(timeout=timeout) if block else self.queue.get_nowait()
            while True:
                yield self.queue.get_nowait()
        except queue.Empty:
            return


@contextlib.contextmanager
def _signals(stop: Callable[[], None], notify: Notify | None, enabled: bool) -> Iterator[None]:
    """Ctrl-C / SIGTERM: the first stops the source (the run finishes), a second one aborts."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    hits = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            raise KeyboardInterrupt
        if notify is not None:
            notify(
                "stopping: finishing the frames that arrived (Ctrl-C again aborts; the same command resumes)"
            )
        stop()

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in before:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


# --- the entry point ---------------------------------------------------------------------------------


def follow(
    source_spec: str,
    bundle_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: RunOptions | None = None,
    live: FollowOptions | None = None,
    *,
    notify: Notify | None = None,
    on_event: Callable[[str, Event, dict[str, Any]], None] | None = None,
    warn: Notify | None = None,
    source: LiveSource | None = None,
) -> FollowResult:
    """Follow one live source with the bundle's model; write the live and final outputs into ``out_dir``.

    ``notify``: information lines (the backend, the delay bound, stopping); ``on_event(video, event,
    delays)``: each event as it is written to events.jsonl; ``source``: a live source already built
    (tests), instead of the one ``source_spec`` names.
    """
    opts = options or RunOptions()
    lv = live or FollowOptions()
    say = notify or (lambda message: None)
    if opts.fps is not None and not 0 < opts.fps < 1e6:
        raise VCEError(f"--fps must be a positive number of frames per second, got {opts.fps}")
    if opts.batch < 1 or opts.stride < 1:
        raise VCEError(f"--batch and --stride must be at least 1, got {opts.batch} and {opts.stride}")
    warnings: list[str] = []

    def warn_(message: str) -> None:
        warnings.append(message)
        if warn is not None:
            warn(message)

    out = Path(out_dir)
    kind = source_kind(source_spec)
    src = source or open_live_source(source_spec, lv, warn_)
    path = getattr(src, "path", None)
    check_separate(out, [path] if path is not None else [], bundle_dir)
    bundle = Bundle.load(bundle_dir)
    thresholds, config = resolve_post(bundle, opts.post)
    choice = choose_backend(bundle, opts.backend, opts.graph)
    spec = bundle.manifest.preprocess_spec()
    settings = _settings(
        thresholds, config, stride=opts.stride, fill=opts.fill, batch=opts.batch, plots=opts.plots,
        fps=opts.fps, strict=opts.strict,
    )  # fmt: skip
    record = run_record("follow", [path] if path is not None else [], bundle, choice, settings, [])
    if path is None:
        record["inputs"] = record["signature"]["inputs"] = [source_spec]
    record["signature"]["video"] = src.video_id
    record["live"] = {
        "source": source_spec,
        "kind": kind,
        "max_lag": lv.max_lag,
        "idle_timeout": lv.idle_timeout,
    }
    run = _Run(src, kind, bundle, choice, spec, thresholds, config, opts, lv, say, on_event, warn_, warnings)
    keep = [live_log_name(src.video_id)]
    with (
        OutputFolder.claim(out, record, overwrite=opts.overwrite, keep_partials=keep) as folder,
        _signals(src.stop, say, lv.handle_signals),
    ):
        return run.claimed(folder)


@dataclass
class _Run:
    """One ``follow`` call once its inputs are checked: what :meth:`claimed` needs."""

    src: LiveSource
    kind: str
    bundle: Bundle
    choice: Choice
    spec: PreprocessSpec
    thresholds: np.ndarray
    config: PostprocessConfig
    opts: RunOptions
    lv: FollowOptions
    say: Notify
    on_event: Callable[[str, Event, dict[str, Any]], None] | None
    warn: Notify
    warnings: list[str]

    def claimed(self, folder: OutputFolder) -> FollowResult:
        """The run inside its claimed output folder: resume or start, follow, write the outputs."""
        src, opts, out = self.src, self.opts, folder.root
        video = src.video_id
        events_path, status_path = out / EVENTS_JSONL, out / STATUS_JSON
        path = getattr(src, "path", None)
        key = {
            "model": self.choice.model_hash,
            "video": video,
            "input": str(Path(path).resolve()) if path is not None else self.kind,
            "stride": opts.stride,
            "fill": opts.fill,
            "preprocess": self.spec.to_dict(),
        }
        resuming = folder.resuming and opts.resume
        folder.partial_dir.mkdir(exist_ok=True)
        log_path = folder.partial_dir / live_log_name(video)
        if not resuming:  # a new run (or --fresh): what an earlier one left is not continued
            for p in (events_path, status_path, log_path):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        frame_log, records = FrameLog.open(log_path, key)
        if len(records) and not _replayable(src):
            frame_log.close()
            raise VCEError(
                f"{out} holds an interrupted run of {video}, and a camera or URL cannot be read again from "
                "its first frame: pass --fresh to start over in this folder, or choose another -o"
            )
        if not len(records):
            with contextlib.suppress(FileNotFoundError):
                events_path.unlink()  # nothing to continue from: start over
        logged = {
            (ev["start"], ev["end"], tuple(ev["label"]))
            for vid, ev in (read_event_log(events_path) if events_path.is_file() else [])
            if vid == video
        }
        event_log = EventLog(events_path)
        folder.record["files"] = sorted({*folder.record.get("files", []), EVENTS_JSONL, STATUS_JSON})
        write_json(out / RUN_RECORD, folder.record)
        state: _Live | None = None
        started = time.perf_counter()
        try:
            with open_runner(self.choice, opts.threads, spin=self.lv.spin) as runner:
                state = _Live(
                    video=video, out=out, runner=runner, spec=self.spec, thresholds=self.thresholds,
                    config=self.config, opts=opts, live=self.lv, frame_log=frame_log, event_log=event_log,
                    already_logged=logged, fps=opts.fps, on_event=self.on_event, warn=self.warn,
                )  # fmt: skip
                self.say(f"backend {self.choice.note or self.choice.describe()}")
                self.say(_bound_line(self.config, opts.fps, self.lv))
                if len(records):
                    state.rebuild(records)
                    src.start_after = int(records["frame"][-1])
                    self.say(
                        f"resuming: {len(records)} frame(s) from the interrupted run; reading on after "
                        f"frame {src.start_after}"
                    )
                state.status("running", force=True)
                problem = _loop(state, src, self.spec, self.lv, self.say)
                state.finish()
                state.ended_by = src.ended_by or ("error" if problem else None)
            result = self.write_final(folder, state, problem, time.perf_counter() - started)
            state.status("finished", force=True)
            return result
        except BaseException as exc:
            src.stop()
            if frame_log.count == 0:  # no frame was logged: leave nothing behind (the record goes too)
                frame_log.remove()
                event_log.close()
                for p in (events_path, status_path):
                    with contextlib.suppress(OSError):
                        p.unlink()
            else:
                with contextlib.suppress(VCEError):
                    frame_log.sync()
                frame_log.close()
                event_log.close()
                if state is not None:
                    interrupted = isinstance(exc, KeyboardInterrupt)
                    state.ended_by = "interrupted" if interrupted else "error"
                    with contextlib.suppress(VCEError, OSError):
                        state.status("interrupted" if interrupted else "failed", force=True)
            raise

    def write_final(
        self, folder: OutputFolder, state: _Live, problem: str | None, seconds: float
    ) -> FollowResult:
        """The offline outputs (the offline writer) and the run record, from the log."""
        out, video, src, opts, config = folder.root, state.video, self.src, self.opts, self.config
        records = state.frame_log.read()
        name = str(getattr(src, "path", None) or getattr(src, "spec", None) or "-")
        if not len(records):
            ended = src.ended_by or "no frames"
            raise VCEError(f"{name}: no frame arrived (the source ended: {ended}); nothing written")
        vp = _video_probs(records, video, name, src.kind, opts, state.resumed_frames)
        if vp is None:
            raise VCEError(
                f"{name}: no decodable frame (all {len(records)} frame(s) are corrupt); nothing written"
            )
        events = order_events(state.events, config.grouping)
        if events != postprocess(vp.probs, vp.frames, self.thresholds, config):  # one post-processing: a bug
            self.warn(
                "the live events differ from the post-processing of the final probabilities (a bug: please report it)"
            )
        fps = state.fps
        names = timeline_names([video]) if opts.plots else {}
        summary = _summary(vp, len(events), fps, names.get(video, ""))
        result = FollowResult(
            out, {video: events}, [summary], self.thresholds, config, self.choice.backend, self.choice.note,
            seconds=seconds,
        )  # fmt: skip
        warn_ = _collect(result, self.warn)
        if result.corrupt:
            warn_(result.corrupt_message())
        if state.skipped:
            warn_(
                f"{state.skipped} frame(s) were skipped to keep up (--max-lag {self.lv.max_lag}) and filled "
                f"from their inferred neighbours (--fill {opts.fill}); run.json lists them"
            )
        if problem:
            warn_(f"the source ended early: {problem}")
        result.warnings[:0] = [w for w in self.warnings if w not in result.warnings]
        bound = delay_bound_frames(config)
        result.live = {
            **folder.record.get("live", {}),
            "ended_by": src.ended_by or ("error" if problem else None),
            "problem": problem,
            "frames_seen": state.seen,
            "skipped": state.skipped,
            "skipped_frames": _ranges(state.skipped_frames),
            "late_frames": list(getattr(src, "late", [])),
            "delay_bound": {"frames": bound, "seconds": round(bound / fps, 3) if fps else None},
            "delay": {
                "frames": _stats([float(d) for d in state.delays_frames]),
                "seconds": _stats(state.delays_s),
            },
        }

        def videos() -> Iterator[VideoFrames]:
            yield VideoFrames(video, vp.frames, vp.probs, missing_frames(vp))

        final = {**folder.record, **_finished_record(result, result.warnings), "live": result.live}
        result.files = write_outputs(
            out, {video: events}, videos, self.thresholds, plots=opts.plots, warn=warn_, timelines=names,
            fps={video: fps}, provenance=run_provenance(self.bundle, self.choice, {video: fps}, {video: events}),
            record=final, extra_files=[out / EVENTS_JSONL, out / STATUS_JSON],
        )  # fmt: skip
        folder.drop_superseded(result.files)
        state.event_log.close()
        state.frame_log.remove()
        with contextlib.suppress(OSError):
            folder.partial_dir.rmdir()
        return result


def _bound_line(config: PostprocessConfig, fps: float | None, lv: FollowOptions) -> str:
    d = delay_bound_frames(config)
    seconds = f" = {d / fps:.2f} s at {fps:g} frames/s" if fps else " (pass --fps for seconds)"
    lag = "never skips" if not lv.max_lag else f"at most {lv.max_lag} waiting frames (--max-lag)"
    return (
        f"delay bound: an event is final at most {d} frames after its last frame{seconds} "
        f"(median {config.median}, min run {config.min_run}, max gap {config.max_gap}, grouping "
        f"{config.grouping}), plus the inference backlog: {lag}"
    )


def _loop(state: _Live, src: LiveSource, spec: PreprocessSpec, lv: FollowOptions, say: Notify) -> str | None:
    """Until the source has ended and every frame is decided; returns the source's error, if any."""

    def prepare(slot: FrameSlot) -> np.ndarray | None:
        if slot.corrupt or slot.image is None:
            return None
        return model_input([slot.image], spec)[0]

    reader = _Reader(src, prepare if lv.prepare == "reader" else None)
    problem: str | None = None
    done = False
    idle = False
    reader.thread.start()
    try:
        while True:
            for item in reader.take(block=idle and not done, timeout=state.idle_for()):
                if item is _END:
                    done = True
                elif isinstance(item, BaseException):
                    if not isinstance(item, VCEError) or state.seen == 0:
                        raise item
                    problem, done = str(item), True
                else:
                    slot, when, x = item
                    if state.fps is None and getattr(src, "fps", None):
                        state.fps = src.fps  # type: ignore[union-attr]
                        say(_bound_line(state.config, state.fps, lv))
                    state.arrive(slot, when, x)
            idle = not state.step(final=done)
            if done and not state.pending:
                return problem
            state.status("running", force=idle)
            state.refresh_timeline()
    finally:
        src.stop()
        reader.thread.join(timeout=10)
