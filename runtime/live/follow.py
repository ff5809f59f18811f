"""``vce-run --follow``: one examination followed while it is recorded, the offline outputs at the end.

:func:`follow` checks the source, bundle and settings as an offline run does, claims ``OUT``
(``vce.runtime.outdir``: lock, run record, resume by signature), runs the loop
(``vce.runtime.live.loop``) and, when the source ends, writes the offline outputs with the offline
run's own writer. While it runs, ``OUT`` holds:

- ``events.jsonl``: one line per event as soon as it is final (``vce.runtime.live.status``), with how
  long it waited (see ``vce.runtime.live.loop``);
- ``status.json``: replaced atomically after each batch and every second while idle;
- ``.partial/<video>-<hash>.live``: the resume log (``vce.runtime.live.log``);
- with ``timeline_every``, ``<video>_timeline.png`` refreshed every that many minutes.

When the source ends (its end marker, EOF, ``idle_timeout`` seconds without a frame, Ctrl-C or
SIGTERM: the first one stops the source and the run finishes, a second one aborts), the frames
that wait are inferred (the last frame always is, as offline with ``--stride``), post-processing
finishes and :func:`vce.runtime.run.write_outputs` writes ``events.json``, ``frames.csv`` (+
provenance sidecar), the timeline and ``run.json`` (with a ``live`` section). When no frame was
skipped to keep up, they are byte-identical to ``vce-run`` on the same frames with the same bundle
and settings, provided the graph gives a frame the same probabilities whatever the batch it is in:
true of ONNX Runtime's CPU kernels for the fp32 graphs the tests and benchmarks run (checked bit for
bit), not of the dynamic INT8 graph, which quantizes each batch's activations with one scale (a
warning says so; ``--graph fp32`` or ``int8`` avoids it). With skipped frames,
``frames.csv`` and ``events.json`` equal the same inference with the skipped frames' rows filled
from their inferred neighbours by ``--fill`` (as ``--stride`` fills), and ``run.json`` lists them.

A source error after frames have arrived (a stream cut inside a frame, the folder removed) ends the
source there: the outputs are written for the frames that arrived and the error is the run's
problem (exit 3). Before any frame it is an error, and nothing stays in ``OUT``.

Resume: ``run.json`` is written first with its signature (the offline mechanism); a killed run
restarted with the same command re-feeds the log's probabilities to a new post-processor (the
events it gives that ``events.jsonl`` already holds, compared as a set, are not written again) and
reads the source again after the last logged frame: a frame folder or a video file skips what was
read, a frame stream on stdin must be sent again from its first frame (its first frames are read
and dropped). A camera or a URL cannot be read again: such a run starts over (``--fresh``) or goes
to another ``-o``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from vce.runtime.atomic import write_json
from vce.runtime.backends.select import Choice
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import VideoFrames
from vce.runtime.formats.timeline import timeline_names
from vce.runtime.live.log import FrameLog
from vce.runtime.live.loop import (
    STATUS_JSON,
    FollowOptions,
    LiveSource,
    LiveState,
    Notify,
    OnEvent,
    bound_line,
    model_input,
    run_loop,
    video_probs,
)
from vce.runtime.live.sources import LiveFolderSource, LiveStreamSource, StdinSource
from vce.runtime.live.status import EventLog, read_event_log
from vce.runtime.online import delay_bound_frames, order_events
from vce.runtime.outdir import RUN_RECORD, OutputFolder, check_separate
from vce.runtime.pipeline import partial_name
from vce.runtime.postprocess import PostprocessConfig, postprocess
from vce.runtime.preprocess import PreprocessSpec
from vce.runtime.run import (
    RunOptions,
    RunResult,
    VideoSummary,
    _collect,
    _finished_record,
    missing_frames,
    model_setup,
    open_runner,
    run_provenance,
    run_record,
    write_outputs,
)
from vce.runtime.sources import VIDEO_SUFFIXES

__all__ = ["FollowOptions", "FollowResult", "follow", "model_input", "open_live_source", "source_kind"]

EVENTS_JSONL = "events.jsonl"


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
    on_event: OnEvent | None = None,
    warn: Notify | None = None,
) -> FollowResult:
    """Follow one live source with the bundle's model; write the live and final outputs into ``out_dir``.

    ``notify``: information lines (the backend, the delay bound, stopping); ``on_event(video, event,
    delays)``: each event as it is written to events.jsonl.
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
    src = open_live_source(source_spec, lv, warn_)
    path = getattr(src, "path", None)
    check_separate(out, [path] if path is not None else [], bundle_dir)
    bundle, thresholds, config, choice, spec, settings = model_setup(bundle_dir, opts)
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
    if choice.graph == "int8-dynamic":
        warn_(
            "the dynamic INT8 graph quantizes each batch as a whole, so a frame's probabilities depend "
            "slightly on the frames inferred with it: live batches differ from an offline run's, and so "
            "may the outputs; --graph fp32 (or int8) gives the offline outputs exactly"
        )
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
    on_event: OnEvent | None
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
        state: LiveState | None = None
        started = time.perf_counter()
        try:
            with open_runner(self.choice, opts.threads, spin=self.lv.spin) as runner:
                state = LiveState(
                    video=video, out=out, runner=runner, spec=self.spec, thresholds=self.thresholds,
                    config=self.config, opts=opts, live=self.lv, frame_log=frame_log, event_log=event_log,
                    already_logged=logged, fps=opts.fps, on_event=self.on_event, warn=self.warn,
                )  # fmt: skip
                self.say(f"backend {self.choice.note or self.choice.describe()}")
                self.say(bound_line(self.config, opts.fps, self.lv))
                if len(records):
                    state.rebuild(records)
                    src.start_after = int(records["frame"][-1])
                    self.say(
                        f"resuming: {len(records)} frame(s) from the interrupted run; reading on after "
                        f"frame {src.start_after}"
                    )
                state.status("running", force=True)
                problem = run_loop(state, src, self.spec, self.lv, self.say)
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
        self, folder: OutputFolder, state: LiveState, problem: str | None, seconds: float
    ) -> FollowResult:
        """The offline outputs (the offline writer) and the run record, from the log."""
        out, video, src, opts, config = folder.root, state.video, self.src, self.opts, self.config
        records = state.frame_log.read()
        name = str(getattr(src, "path", None) or getattr(src, "spec", None) or "-")
        if not len(records):
            ended = src.ended_by or "no frames"
            raise VCEError(f"{name}: no frame arrived (the source ended: {ended}); nothing written")
        vp = video_probs(records, video, name, src.kind, opts, state.resumed_frames)
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
        summary = VideoSummary.of(vp, len(events), fps, names.get(video, ""))
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
