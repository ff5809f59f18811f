"""The loop of ``vce-run --follow``: arrivals -> batches -> the model -> post-processing -> events.

A reader thread (:class:`Reader`) iterates the live source (``vce.runtime.live.sources``), which decodes
each frame as it arrives, and hands the frames to the main thread through a queue. The main thread
(:func:`run_loop`, :class:`LiveState`) takes the frames that wait, chooses which to infer
(:class:`~vce.runtime.live.keepup.LagPolicy` under ``--max-lag``, the ``--stride`` rule), converts them
to the model's input (:func:`model_input`, the one place), runs the backend on them in one batch
(up to ``--batch``; a single frame when only one waits), fills the skipped frames
(:class:`~vce.runtime.live.keepup.FillBuffer`) and feeds the probabilities to the toolkit's one
post-processing (:class:`~vce.runtime.online.OnlinePostprocessor`). When nothing waits it blocks
on the queue: no spinning.

Every decided frame is appended to the resume log (``vce.runtime.live.log``), which is synced before
an event is written to ``events.jsonl``; ``status.json`` is replaced after each batch (at most every
``status_every`` seconds) and every ``heartbeat`` seconds while the loop waits for frames.

Delay. Post-processing emits an event at most ``D + 1`` frames after its last frame
(``vce.runtime.online.delay_bound_frames``; 11 for the defaults). A live event waits in addition
for the frames not yet post-processed when it would be final: the inference backlog (frames that
arrived during the current batch, at most about ``--max-lag`` once frames are skipped) and, with
``--fill linear``, the gap of skipped frames before the next inferred one (a skipped frame reaches
post-processing with the next inferred frame). Each events.jsonl line says how long its event
waited: ``delay_frames`` (frames that had arrived after the event's last frame when the line was
written), ``post_frames`` (of those, the frames post-processing had seen: at most ``D + 1``) and
``delay_s`` (seconds since the event's last frame arrived).
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vce.runtime.backends.base import Runner
from vce.runtime.errors import MissingDependencyError, VCEError
from vce.runtime.formats.timeline import timeline_names
from vce.runtime.labels import NUM_LABELS
from vce.runtime.live.keepup import FillBuffer, LagPolicy
from vce.runtime.live.log import CORRUPT, INFERRED, SKIPPED, FrameLog
from vce.runtime.live.sources import LiveFolderSource, LiveStreamSource, StdinSource
from vce.runtime.live.status import EventLog, RateMeter, status_snapshot, write_status
from vce.runtime.online import OnlinePostprocessor, delay_bound_frames, order_events, settle_lag
from vce.runtime.pipeline import VideoProbs, checked_probs, fill_probs
from vce.runtime.postprocess import Event, PostprocessConfig
from vce.runtime.preprocess import PreprocessSpec, resize_crops
from vce.runtime.preprocess import model_input as crops_to_input
from vce.runtime.run import RunOptions, missing_frames
from vce.runtime.sources import FrameSlot

STATUS_JSON = "status.json"
LiveSource = LiveFolderSource | LiveStreamSource | StdinSource
Notify = Callable[[str], None]
OnEvent = Callable[[str, Event, dict[str, Any]], None]


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


def model_input(images: list[np.ndarray], spec: PreprocessSpec, dtype: Any = np.float32) -> np.ndarray:
    """Decoded frames (BGR uint8) -> the runner's input (``dtype``: its input type, uint8 for a uint8
    graph): the one place live mode converts them."""
    return crops_to_input(resize_crops(images, spec, bgr=True), spec, dtype)


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


class LiveState:
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
        on_event: OnEvent | None,
        warn: Notify,
    ) -> None:
        self.video, self.out, self.runner, self.spec = video, out, runner, spec
        self.thresholds, self.config, self.opts, self.live = thresholds, config, opts, live
        self.frame_log, self.event_log, self.logged = frame_log, event_log, already_logged
        self.fps, self.on_event, self.warn = fps, on_event, warn
        #: what the runner takes: float32 [N,3,S,S], or uint8 crops for a uint8 graph
        self.input_dtype = np.dtype(getattr(runner, "input_dtype", np.float32))
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
        dtype = self.input_dtype
        if all(a.x is None for a in chosen):
            return model_input([a.image for a in chosen if a.image is not None], self.spec, dtype)
        return np.stack(
            [a.x if a.x is not None else model_input([a.image], self.spec, dtype)[0] for a in chosen]
        )  # type: ignore[list-item]

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
        vp = video_probs(self.frame_log.read(), self.video, "", "", self.opts, self.resumed_frames)
        if vp is None:
            return
        try:
            from vce.runtime.lazy import require

            require("matplotlib", "timeline plots")
            from vce.runtime.atomic import atomic_path
            from vce.runtime.formats.timeline import plot_timeline

            with atomic_path(self.out / self.timeline_name) as tmp:
                plot_timeline(
                    tmp, self.video, vp.frames, vp.probs, order_events(self.events, self.config.grouping),
                    self.thresholds, missing=missing_frames(vp), fps=self.fps,
                )  # fmt: skip
        except MissingDependencyError as exc:
            self.live.timeline_every = None
            self.warn(f"timeline refresh skipped: {exc}")


def video_probs(
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


class Reader:
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


def bound_line(config: PostprocessConfig, fps: float | None, lv: FollowOptions) -> str:
    d = delay_bound_frames(config)
    seconds = f" = {d / fps:.2f} s at {fps:g} frames/s" if fps else " (pass --fps for seconds)"
    lag = "never skips" if not lv.max_lag else f"at most {lv.max_lag} waiting frames (--max-lag)"
    return (
        f"delay bound: an event is final at most {d} frames after its last frame{seconds} "
        f"(median {config.median}, min run {config.min_run}, max gap {config.max_gap}, grouping "
        f"{config.grouping}), plus the inference backlog: {lag}"
    )


def run_loop(
    state: LiveState, src: LiveSource, spec: PreprocessSpec, lv: FollowOptions, say: Notify
) -> str | None:
    """Until the source has ended and every frame is decided; returns the source's error, if any."""

    def prepare(slot: FrameSlot) -> np.ndarray | None:
        if slot.corrupt or slot.image is None:
            return None
        return model_input([slot.image], spec, state.input_dtype)[0]

    reader = Reader(src, prepare if lv.prepare == "reader" else None)
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
                        say(bound_line(state.config, state.fps, lv))
                    state.arrive(slot, when, x)
            idle = not state.step(final=done)
            if done and not state.pending:
                return problem
            state.status("running", force=idle)
            state.refresh_timeline()
    finally:
        src.stop()
        reader.thread.join(timeout=10)
