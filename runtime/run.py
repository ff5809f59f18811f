"""``vce-run`` as a Python function: inputs + bundle -> events.json, frames.csv, timelines.

:func:`run` infers and post-processes; :func:`rerun_from_probs` only post-processes saved
probabilities (``--from-probs``). Both return a :class:`RunResult` and write their outputs
all-or-nothing: every output goes to a temporary file first and they are renamed into place
together at the end, so a crash or Ctrl-C never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vce.runtime.atomic import atomic_path
from vce.runtime.backends.base import create_runner
from vce.runtime.backends.select import Choice, choose_backend
from vce.runtime.bundle import Bundle
from vce.runtime.errors import MissingDependencyError, VCEError
from vce.runtime.eventjson import write_events_json
from vce.runtime.framescsv import VideoFrames, read_frames_csv, write_frames_csv
from vce.runtime.jsonfile import read_json
from vce.runtime.labels import LABELS
from vce.runtime.pipeline import (
    DEFAULT_PARALLEL_VIDEOS,
    Fill,
    PipelineOptions,
    VideoProbs,
    clear_partials,
    infer_sources,
    load_finished,
    video_key,
)
from vce.runtime.postprocess import PAPER, Event, Grouping, PostprocessConfig, postprocess, thresholds_array
from vce.runtime.sources import Source, discover

PARTIAL_DIR = ".partial"
EVENTS_JSON = "events.json"
FRAMES_CSV = "frames.csv"


@dataclass
class PostOptions:
    """Post-processing overrides; None keeps the bundle's calibrated value."""

    thresholds: float | str | os.PathLike[str] | None = None
    median: int | None = None
    min_run: int | None = None
    max_gap: int | None = None
    grouping: Grouping | None = None


@dataclass
class RunOptions:
    backend: str = "auto"
    graph: str | None = None
    batch: int = 8
    stride: int = 1
    fill: Fill = "linear"  # measured: better event agreement than hold at K >= 5 (bench_runtime stride)
    workers: int | None = None  # preprocessing threads (default: min(4, CPUs))
    parallel_videos: int = DEFAULT_PARALLEL_VIDEOS  # videos decoded at once (outputs stay in input order)
    threads: int | None = None  # ONNX Runtime intra-op threads (default: ONNX Runtime's)
    resume: bool = True
    plots: bool = True
    checkpoint_seconds: float = 15.0
    post: PostOptions = field(default_factory=PostOptions)


@dataclass
class VideoSummary:
    video: str
    source: str
    kind: str
    frames: int  # frames with probabilities (corrupt ones excluded)
    inferred: int
    corrupt: list[int]
    missing_at_end: int
    events: int
    resumed: bool = False

    @property
    def n_corrupt(self) -> int:
        return len(self.corrupt) + self.missing_at_end


@dataclass
class RunResult:
    out_dir: Path
    events: dict[str, list[Event]]
    videos: list[VideoSummary]
    thresholds: np.ndarray
    config: PostprocessConfig
    backend: str = ""
    backend_note: str = ""
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(v.frames for v in self.videos)

    @property
    def inferred(self) -> int:
        return sum(v.inferred for v in self.videos)

    @property
    def corrupt(self) -> int:
        return sum(v.n_corrupt for v in self.videos)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def events_per_label(self) -> dict[str, int]:
        counts = dict.fromkeys(LABELS, 0)
        for events in self.events.values():
            for ev in events:
                for name in ev["label"]:
                    counts[name] += 1
        return counts

    def corrupt_message(self) -> str:
        parts = []
        for v in self.videos:
            if v.n_corrupt:
                shown = ", ".join(map(str, v.corrupt[:5])) + (" ..." if len(v.corrupt) > 5 else "")
                what = f"frames {shown}" if v.corrupt else ""
                if v.missing_at_end:
                    what += (
                        ", " if what else ""
                    ) + f"{v.missing_at_end} announced by the header never decoded"
                parts.append(f"{v.video}: {what}")
        return f"{self.corrupt} corrupt frame(s) skipped ({'; '.join(parts)})"


# --- post-processing parameters ------------------------------------------------------------------


def load_thresholds(value: float | str | os.PathLike[str]) -> np.ndarray:
    """``--thresholds``: a number for every label, or a JSON file ({label: t}, a list of 17, or a
    manifest-like object with a "thresholds" entry)."""
    if isinstance(value, (int, float)):
        return thresholds_array(float(value))
    text = str(value)
    with contextlib.suppress(ValueError):
        return thresholds_array(float(text))
    path = Path(text)
    if not path.is_file():
        raise VCEError(f"--thresholds {text}: neither a number nor an existing JSON file")
    data = read_json(path)
    if isinstance(data, dict) and "thresholds" in data:
        data = data["thresholds"]
    if isinstance(data, list) and len(data) != len(LABELS):
        raise VCEError(f"{path}: a threshold list needs {len(LABELS)} values, found {len(data)}")
    if not isinstance(data, (dict, list)):
        raise VCEError(f"{path}: expected {{label: threshold}} or a list of {len(LABELS)} thresholds")
    try:
        return thresholds_array(data)
    except (TypeError, ValueError) as exc:
        raise VCEError(f"{path}: thresholds must be numbers ({exc})") from exc
    except VCEError as exc:
        raise VCEError(f"{path}: {exc}") from exc


def resolve_post(bundle: Bundle | None, post: PostOptions) -> tuple[np.ndarray, PostprocessConfig]:
    """The bundle's calibrated thresholds and post-processing, with the user's overrides applied."""
    base = bundle.manifest.postprocess_config() if bundle is not None else PAPER
    if post.thresholds is not None:
        thresholds = load_thresholds(post.thresholds)
    elif bundle is not None:
        thresholds = bundle.manifest.thresholds_array()
    else:
        thresholds = thresholds_array(0.5)
    config = PostprocessConfig(
        median=base.median if post.median is None else post.median,
        min_run=base.min_run if post.min_run is None else post.min_run,
        max_gap=base.max_gap if post.max_gap is None else post.max_gap,
        grouping=base.grouping if post.grouping is None else post.grouping,
    )
    return thresholds, config


# --- outputs -------------------------------------------------------------------------------------


def check_writable(out_dir: Path) -> None:
    """Fail early (before any inference) if ``out_dir`` cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".vce-write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise VCEError(
            f"cannot write to the output folder {out_dir}: {exc.strerror or exc}; choose a writable -o folder"
        ) from exc


def _timeline_name(video: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in video) + "_timeline.png"


def write_outputs(
    out_dir: Path,
    events: dict[str, list[Event]],
    videos: Callable[[], Iterator[VideoFrames]],
    thresholds: np.ndarray,
    *,
    plots: bool = True,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """events.json, frames.csv and the timelines, all renamed into place together at the end.

    ``videos()`` yields each video's probabilities in video-id order (called once or twice, so a
    long run never holds more than one video in memory).
    """
    plot = None
    if plots:
        try:
            from vce.runtime.lazy import require

            require("matplotlib", "timeline plots")
            from vce.runtime.timeline import plot_timeline as plot
        except MissingDependencyError as exc:
            if warn is not None:
                warn(f"timeline plots skipped: {exc}")
    files: list[Path] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out_dir / FRAMES_CSV))
        write_frames_csv(tmp, videos())
        files.append(out_dir / FRAMES_CSV)
        if plot is not None:
            for v in videos():
                target = out_dir / _timeline_name(v.video)
                tmp = stack.enter_context(atomic_path(target))
                plot(tmp, v.video, v.frames, v.values, events[v.video], thresholds)
                files.append(target)
        tmp = stack.enter_context(atomic_path(out_dir / EVENTS_JSON))
        write_events_json(tmp, events)
        files.append(out_dir / EVENTS_JSON)
    return files


# --- the two entry points ------------------------------------------------------------------------


def _summary(vp: VideoProbs, n_events: int) -> VideoSummary:
    return VideoSummary(
        vp.video,
        vp.source,
        vp.kind,
        int(vp.frames.size),
        int(vp.inferred.sum()),
        list(vp.corrupt),
        vp.missing_at_end,
        n_events,
        vp.resumed,
    )


def run(
    inputs: Sequence[str | os.PathLike[str]],
    bundle_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: RunOptions | None = None,
    *,
    on_start: Callable[[Choice, list[Source]], None] | None = None,
    on_frames: Callable[[str, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> RunResult:
    """Infer every input with the bundle's model and write the outputs into ``out_dir``."""
    opts = options or RunOptions()
    pipe = PipelineOptions(
        batch=opts.batch,
        stride=opts.stride,
        fill=opts.fill,
        workers=opts.workers or min(4, os.cpu_count() or 1),
        parallel_videos=opts.parallel_videos,
        checkpoint_seconds=opts.checkpoint_seconds,
    )
    sources = discover(inputs)
    bundle = Bundle.load(bundle_dir)
    thresholds, config = resolve_post(bundle, opts.post)
    choice = choose_backend(bundle, opts.backend, opts.graph)
    spec = bundle.manifest.preprocess_spec()
    out = Path(out_dir)
    check_writable(out)
    partial_dir = out / PARTIAL_DIR
    if not opts.resume:
        clear_partials(partial_dir, [s.video_id for s in sources])
    partial_dir.mkdir(exist_ok=True)
    runner_options: dict[str, object] = {}
    if choice.backend != "trt" and opts.threads:
        runner_options["threads"] = opts.threads
    if choice.backend == "trt":
        runner_options["check"] = False  # choose_backend checked the sidecar already
    if on_start is not None:
        on_start(choice, sources)
    events: dict[str, list[Event]] = {}
    summaries: list[VideoSummary] = []
    started = time.perf_counter()
    try:
        with create_runner(choice.backend, choice.model, **runner_options) as runner:
            for vp in infer_sources(
                sources,
                runner,
                spec=spec,
                options=pipe,
                model_hash=choice.model_hash,
                partial_dir=partial_dir,
                on_frames=on_frames,
            ):
                events[vp.video] = postprocess(vp.probs, vp.frames, thresholds, config)
                summaries.append(_summary(vp, len(events[vp.video])))
    except BaseException:
        with contextlib.suppress(OSError):
            partial_dir.rmdir()  # only when empty: what a failed run computed stays, to resume
        raise
    seconds = time.perf_counter() - started
    keys = {s.video_id: video_key(s, choice.model_hash, spec, opts.stride) for s in sources}

    def videos() -> Iterator[VideoFrames]:
        for s in sources:
            vp = load_finished(partial_dir, s, keys[s.video_id], opts.fill)
            yield VideoFrames(vp.video, vp.frames, vp.probs)

    result = RunResult(
        out, events, summaries, thresholds, config, choice.backend, choice.note, seconds=seconds
    )
    result.files = write_outputs(
        out, events, videos, thresholds, plots=opts.plots, warn=_collect(result, warn)
    )
    clear_partials(partial_dir, [s.video_id for s in sources])
    return result


def _collect(result: RunResult, warn: Callable[[str], None] | None) -> Callable[[str], None]:
    def _warn(message: str) -> None:
        result.warnings.append(message)
        if warn is not None:
            warn(message)

    return _warn


def rerun_from_probs(
    frames_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    bundle_dir: str | os.PathLike[str] | None = None,
    post: PostOptions | None = None,
    plots: bool = True,
    warn: Callable[[str], None] | None = None,
) -> RunResult:
    """Only the post-processing, on probabilities saved in a frames.csv (``--from-probs``)."""
    probs = read_frames_csv(frames_csv)
    if not probs:
        raise VCEError(f"{frames_csv}: no rows; nothing to post-process")
    bundle = Bundle.load(bundle_dir, verify=False) if bundle_dir is not None else None
    post = post or PostOptions()
    thresholds, config = resolve_post(bundle, post)
    out = Path(out_dir)
    check_writable(out)
    started = time.perf_counter()
    events = {vid: postprocess(v.values, v.frames, thresholds, config) for vid, v in probs.items()}
    summaries = [
        VideoSummary(vid, str(frames_csv), "probs", int(v.frames.size), 0, [], 0, len(events[vid]))
        for vid, v in sorted(probs.items())
    ]
    result = RunResult(out, events, summaries, thresholds, config, seconds=time.perf_counter() - started)
    if bundle is None and post.thresholds is None:
        _collect(result, warn)("no --bundle and no --thresholds: every threshold is 0.5")

    def videos() -> Iterator[VideoFrames]:
        for vid in sorted(probs):
            yield probs[vid]

    result.files = write_outputs(out, events, videos, thresholds, plots=plots, warn=_collect(result, warn))
    return result
