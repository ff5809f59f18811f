"""``vce-run`` as a Python function: inputs + bundle -> events.json, frames.csv, timelines, run.json.

:func:`run` infers and post-processes; :func:`rerun_from_probs` only post-processes saved
probabilities (``--from-probs``). Both return a :class:`RunResult`. ``run`` is a chain of small
steps that other front ends (live mode) reuse:

1. :func:`check_inputs` opens every input up front; an input that cannot be run is a
   :class:`~vce.runtime.sources.Problem` (``strict``: an error), and the others go on;
2. the bundle, the post-processing (:func:`resolve_post`) and the backend are chosen;
3. :class:`~vce.runtime.outdir.OutputFolder` claims ``-o``: lock, leftovers, run record, and the
   decision new / resume / refuse / overwrite;
4. :func:`infer_videos` runs the model over the sources (a source that turns out to have no
   decodable frame becomes a problem) and post-processes each video as it finishes;
5. :func:`write_outputs` writes everything all-or-nothing: every output goes to a temporary file
   first and they are renamed into place together at the end (``run.json`` last), so a crash or
   Ctrl-C never leaves a half-written output.

Frames that could not be decoded are rows without probabilities in ``frames.csv``
(``vce.runtime.formats.framescsv`` states the rule post-processing applies to them), shaded on the timeline
and counted per video in ``run.json``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from vce.runtime.atomic import atomic_path, write_json
from vce.runtime.backends.base import Runner, create_runner
from vce.runtime.backends.select import Choice, choose_backend
from vce.runtime.bundle import MANIFEST, Bundle, sha256_file, vce_version
from vce.runtime.errors import MissingDependencyError, VCEError
from vce.runtime.formats.eventjson import write_events_json
from vce.runtime.formats.framescsv import VideoFrames, read_frames_csv, write_frames_csv
from vce.runtime.formats.jsonfile import read_json
from vce.runtime.formats.provenance import (
    check_model,
    make_record,
    model_of_bundle,
    read_provenance,
    sidecar_path,
)
from vce.runtime.formats.timeline import preload as preload_plots
from vce.runtime.formats.timeline import timeline_names
from vce.runtime.labels import LABELS
from vce.runtime.outdir import RUN_RECORD, OutputFolder, check_separate, now
from vce.runtime.pipeline import (
    DEFAULT_PARALLEL_VIDEOS,
    Fill,
    PipelineOptions,
    VideoFailed,
    VideoOrigin,
    VideoProbs,
    clear_partials,
    infer_sources,
    load_finished,
    partial_name,
    video_key,
)
from vce.runtime.postprocess import PAPER, Event, Grouping, PostprocessConfig, postprocess, thresholds_array
from vce.runtime.preprocess import PreprocessSpec
from vce.runtime.sources import Problem, Source, check_inputs

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
    strict: bool = False  # stop at the first input that cannot be run (else: run the others)
    overwrite: bool = False  # replace the run an output folder holds
    fps: float | None = None  # frame rate of frame folders (and of videos that do not state one)


@dataclass(kw_only=True)
class VideoSummary(VideoOrigin):
    """A video's line of the run summary: its origin (as its VideoProbs had it) and counts."""

    frames: int  # frames with probabilities (those that could not be decoded excluded)
    inferred: int
    events: int
    fps: float | None = None
    timeline: str = ""

    @classmethod
    def of(cls, vp: VideoProbs, n_events: int, fps: float | None, timeline: str) -> VideoSummary:
        """The summary of ``vp`` (its probabilities are not kept)."""
        origin = {f.name: getattr(vp, f.name) for f in fields(VideoOrigin)}
        origin["corrupt"] = list(vp.corrupt)
        return cls(
            **origin,
            frames=int(vp.frames.size),
            inferred=int(vp.inferred.sum()),
            events=n_events,
            fps=fps,
            timeline=timeline,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "input": self.source,
            "kind": self.kind,
            "frames": self.frames,
            "frames_not_decoded": self.n_corrupt,
            "inferred": self.inferred,
            "events": self.events,
            "resumed_frames": self.resumed_frames,
            "fps": self.fps,
            "timeline": self.timeline or None,
        }


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
    problems: list[Problem] = field(default_factory=list)  # inputs that could not be run

    @property
    def frames(self) -> int:
        return sum(v.frames for v in self.videos)

    @property
    def frames_this_run(self) -> int:
        """Frames this run computed (not those an interrupted run had computed before)."""
        return sum(v.frames - v.resumed_frames for v in self.videos)

    @property
    def inferred(self) -> int:
        return sum(v.inferred for v in self.videos)

    @property
    def corrupt(self) -> int:
        return sum(v.n_corrupt for v in self.videos)

    @property
    def fps(self) -> float:
        """This run's speed: the frames it computed per second (resumed frames excluded)."""
        return self.frames_this_run / self.seconds if self.seconds > 0 else 0.0

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
        return (
            f"{self.corrupt} frame(s) could not be decoded ({'; '.join(parts)}); frames.csv lists them "
            "without probabilities and the timeline shades them"
        )


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


# --- step 1: inputs ------------------------------------------------------------------------------


def require_runnable(
    sources: Sequence[Source] | Sequence[str], problems: Sequence[Problem], warn: Callable[[str], None] | None
) -> None:
    """Nothing to run: one input's reason as the error, or every reason as a warning and one error."""
    if sources:
        return
    if len(problems) == 1:
        raise VCEError(problems[0].reason)
    if warn is not None:
        for p in problems:
            warn(p.reason)
    raise VCEError(f"none of the {len(problems)} inputs can be run (reasons above); nothing written")


# --- step 3: the run record ----------------------------------------------------------------------


def model_setup(
    bundle_dir: str | os.PathLike[str], opts: RunOptions
) -> tuple[Bundle, np.ndarray, PostprocessConfig, Choice, PreprocessSpec, dict[str, Any]]:
    """What a run (offline or ``--follow``) takes from the bundle and the options: the bundle, its
    thresholds and post-processing with the user's overrides, the backend, the preprocessing, and the
    settings recorded in ``run.json``."""
    bundle = Bundle.load(bundle_dir)
    thresholds, config = resolve_post(bundle, opts.post)
    choice = choose_backend(bundle, opts.backend, opts.graph)
    settings = _settings(
        thresholds, config, stride=opts.stride, fill=opts.fill, batch=opts.batch, plots=opts.plots,
        fps=opts.fps, strict=opts.strict,
    )  # fmt: skip
    return bundle, thresholds, config, choice, bundle.manifest.preprocess_spec(), settings


def _settings(thresholds: np.ndarray, config: PostprocessConfig, **more: Any) -> dict[str, Any]:
    return {
        "thresholds": {name: round(float(t), 6) for name, t in zip(LABELS, thresholds, strict=True)},
        "postprocess": config.to_dict(),
        **more,
    }


def run_record(
    command: str,
    inputs: Sequence[str | os.PathLike[str]],
    bundle: Bundle | None,
    choice: Choice | None,
    settings: dict[str, Any],
    problems: Sequence[Problem],
) -> dict[str, Any]:
    """What ran (the record :class:`OutputFolder` writes). ``signature``: what makes two commands
    the same run (inputs, bundle, graph, the settings that change events and probabilities; not
    plots, the time axis or --strict, nor the batch size unless the graph's results depend on it)."""
    bundle_info: dict[str, Any] | None = None
    if bundle is not None:
        bundle_info = {
            "path": str(bundle.root.resolve()),
            "manifest_sha256": sha256_file(bundle.root / MANIFEST),
            "model": model_of_bundle(bundle),
        }
        if choice is not None:
            bundle_info.update(backend=choice.backend, graph=choice.graph, graph_sha256=choice.model_hash)
    signature = {
        "command": command,
        "inputs": sorted(str(Path(i).resolve()) for i in inputs),
        "bundle": bundle_info and bundle_info["path"],
        "graph_sha256": choice.model_hash if choice is not None else None,
        **{k: v for k, v in settings.items() if k not in ("batch", "strict", "plots", "fps")},
    }
    if choice is not None and choice.batch_dependent and "batch" in settings:
        signature["batch"] = settings["batch"]
    return {
        "command": command,
        "vce_version": vce_version(),
        "signature": signature,
        "inputs": [str(i) for i in inputs],
        "bundle": bundle_info,
        "settings": settings,
        "problems": [p.to_dict() for p in problems],
    }


def _finished_record(result: RunResult, warnings: Sequence[str]) -> dict[str, Any]:
    return {
        "status": "complete",
        "finished": now(),
        "seconds": round(result.seconds, 3),
        "videos": [v.to_dict() for v in result.videos],
        "problems": [p.to_dict() for p in result.problems],
        "warnings": list(warnings),
    }


# --- step 4: inference + post-processing ----------------------------------------------------------


def missing_frames(vp: VideoProbs) -> np.ndarray:
    """Frame numbers of a video that have no probabilities: corrupt frames, and the frames its
    header announced after the last one decoded (a video's frame number is its decode position)."""
    gone = list(vp.corrupt)
    if vp.missing_at_end:
        last = max([*vp.frames[-1:].tolist(), *vp.corrupt]) + 1
        gone.extend(range(last, last + vp.missing_at_end))
    return np.asarray(gone, dtype=np.int64)


def open_runner(choice: Choice, threads: int | None, *, spin: bool = True) -> Runner:
    """The chosen backend's runner (a context manager); ``threads``: ONNX Runtime's intra-op threads;
    ``spin=False``: its threads sleep between runs (see ``OrtRunner``)."""
    runner_options: dict[str, object] = {}
    if choice.backend != "trt" and threads:
        runner_options["threads"] = threads
    if choice.backend != "trt" and not spin:
        runner_options["spin"] = False
    if choice.backend == "trt":
        runner_options["check"] = False  # choose_backend checked the sidecar already
    return create_runner(choice.backend, choice.model, **runner_options)


def infer_videos(
    sources: Sequence[Source],
    choice: Choice,
    spec: Any,
    pipe: PipelineOptions,
    partial_dir: Path,
    thresholds: np.ndarray,
    config: PostprocessConfig,
    *,
    threads: int | None,
    strict: bool,
    on_frames: Callable[[str, int], None] | None = None,
) -> Iterator[tuple[VideoProbs, list[Event]] | VideoFailed]:
    """Run the chosen backend over ``sources``; yield each video's probabilities and events as it
    finishes, or a :class:`VideoFailed` for a source without a decodable frame (unless ``strict``)."""
    with open_runner(choice, threads) as runner:
        for item in infer_sources(
            sources,
            runner,
            spec=spec,
            options=pipe,
            model_hash=choice.model_hash,
            partial_dir=partial_dir,
            on_frames=on_frames,
            skip_failed=not strict,
        ):
            if isinstance(item, VideoFailed):
                yield item
            else:
                yield item, postprocess(item.probs, item.frames, thresholds, config)


# --- step 5: outputs -----------------------------------------------------------------------------


def write_outputs(
    out_dir: Path,
    events: dict[str, list[Event]],
    videos: Callable[[], Iterator[VideoFrames]],
    thresholds: np.ndarray,
    *,
    plots: bool = True,
    warn: Callable[[str], None] | None = None,
    timelines: dict[str, str] | None = None,
    fps: dict[str, float | None] | None = None,
    provenance: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    extra_files: Sequence[Path] = (),
) -> list[Path]:
    """events.json, frames.csv (+ its provenance sidecar), the timelines and run.json, all renamed
    into place together at the end (run.json last: it lists the others).

    ``videos()`` yields each video's probabilities in video-id order (called once or twice, so a
    long run never holds more than one video in memory). ``provenance``: the sidecar's arguments
    (see :func:`vce.runtime.formats.provenance.make_record`); ``record``: the run record to complete;
    ``extra_files``: outputs written before (``--follow``'s events.jsonl), listed in the record too.
    """
    plot = None
    if plots:
        try:
            from vce.runtime.lazy import require

            require("matplotlib", "timeline plots")
            from vce.runtime.formats.timeline import plot_timeline as plot
        except MissingDependencyError as exc:
            if warn is not None:
                warn(f"timeline plots skipped: {exc}")
    files: list[Path] = []
    with contextlib.ExitStack() as stack:
        record_tmp = stack.enter_context(atomic_path(out_dir / RUN_RECORD)) if record is not None else None
        csv_tmp = stack.enter_context(atomic_path(out_dir / FRAMES_CSV))
        write_frames_csv(csv_tmp, videos())
        files.append(out_dir / FRAMES_CSV)
        if provenance is not None:
            side = sidecar_path(out_dir / FRAMES_CSV)
            side_tmp = stack.enter_context(atomic_path(side))
            write_json(side_tmp, make_record(csv_tmp, name=FRAMES_CSV, **provenance))
            files.append(side)
        if plot is not None:
            names = timelines or timeline_names(events)
            for v in videos():
                target = out_dir / names[v.video]
                tmp = stack.enter_context(atomic_path(target))
                plot(
                    tmp,
                    v.video,
                    v.frames,
                    v.values,
                    events[v.video],
                    thresholds,
                    missing=v.missing,
                    fps=(fps or {}).get(v.video),
                )
                files.append(target)
        tmp = stack.enter_context(atomic_path(out_dir / EVENTS_JSON))
        write_events_json(tmp, events)
        files.append(out_dir / EVENTS_JSON)
        files.extend(extra_files)
        if record is not None and record_tmp is not None:
            record["files"] = sorted(f.name for f in [*files, out_dir / RUN_RECORD])
            write_json(record_tmp, record)
            files.append(out_dir / RUN_RECORD)
    return files


def run_provenance(
    bundle: Bundle, choice: Choice, fps: dict[str, float | None], events: dict[str, list[Event]]
) -> dict[str, Any]:
    """The frames.csv sidecar's arguments for a run of ``bundle``'s graph (see :func:`write_outputs`)."""
    return {
        "made_by": "vce-run",
        "model": model_of_bundle(bundle),
        "graph": {"role": choice.graph, "sha256": choice.model_hash},
        "fps": {v: f for v, f in fps.items() if v in events and f},
    }


def _collect(result: RunResult, warn: Callable[[str], None] | None) -> Callable[[str], None]:
    def _warn(message: str) -> None:
        result.warnings.append(message)
        if warn is not None:
            warn(message)

    return _warn


# --- the two entry points ------------------------------------------------------------------------


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
    """Infer every input with the bundle's model and write the outputs into ``out_dir``.

    Inputs that cannot be run are listed in ``RunResult.problems`` (and run.json) while the others
    run; with ``options.strict`` the first one is an error instead.
    """
    opts = options or RunOptions()
    if opts.fps is not None and not 0 < opts.fps < 1e6:
        raise VCEError(f"--fps must be a positive number of frames per second, got {opts.fps}")
    pipe = PipelineOptions(
        batch=opts.batch,
        stride=opts.stride,
        fill=opts.fill,
        workers=opts.workers or min(4, os.cpu_count() or 1),
        parallel_videos=opts.parallel_videos,
        checkpoint_seconds=opts.checkpoint_seconds,
    )
    out = Path(out_dir)
    check_separate(out, inputs, bundle_dir)
    sources, problems = check_inputs(inputs, strict=opts.strict)  # 1. every input, up front
    require_runnable(sources, problems, warn)
    bundle, thresholds, config, choice, spec, settings = model_setup(bundle_dir, opts)  # 2. model, post
    if opts.plots:
        preload_plots()  # matplotlib imports in the background while the model runs
    record = run_record("run", inputs, bundle, choice, settings, problems)
    ids = [s.video_id for s in sources]
    fps = {s.video_id: s.fps or opts.fps for s in sources}
    with OutputFolder.claim(
        out, record, overwrite=opts.overwrite, keep_partials=[partial_name(v) for v in ids]
    ) as folder:  # 3. the output folder
        partial_dir = folder.partial_dir
        if not opts.resume:
            clear_partials(partial_dir, ids, keep_dir=True)
        partial_dir.mkdir(exist_ok=True)
        if on_start is not None:
            on_start(choice, sources)
        events: dict[str, list[Event]] = {}
        summaries: list[VideoSummary] = []
        problems = list(problems)
        names = timeline_names(ids) if opts.plots else {}
        started = time.perf_counter()
        for item in infer_videos(  # 4. inference and post-processing
            sources, choice, spec, pipe, partial_dir, thresholds, config,
            threads=opts.threads, strict=opts.strict, on_frames=on_frames,
        ):  # fmt: skip
            if isinstance(item, VideoFailed):
                problems.append(Problem(str(item.source.path), item.reason))
                continue
            vp, video_events = item
            events[vp.video] = video_events
            summaries.append(VideoSummary.of(vp, len(video_events), fps[vp.video], names.get(vp.video, "")))
        seconds = time.perf_counter() - started
        if not summaries:
            require_runnable([], problems, warn)
        done = [s for s in sources if s.video_id in events]
        keys = {s.video_id: video_key(s, choice.model_hash, spec, opts.stride) for s in done}

        def videos() -> Iterator[VideoFrames]:
            for s in done:
                vp = load_finished(partial_dir, s, keys[s.video_id], opts.fill)
                yield VideoFrames(vp.video, vp.frames, vp.probs, missing_frames(vp))

        result = RunResult(
            out, events, summaries, thresholds, config, choice.backend, choice.note, seconds=seconds,
            problems=problems,
        )  # fmt: skip
        warn_ = _collect(result, warn)
        if result.corrupt:
            warn_(result.corrupt_message())
        provenance = run_provenance(bundle, choice, fps, events)
        final = {**folder.record, **_finished_record(result, result.warnings)}
        result.files = write_outputs(  # 5. every output at once
            out, events, videos, thresholds, plots=opts.plots, warn=warn_, timelines=names, fps=fps,
            provenance=provenance, record=final,
        )  # fmt: skip
        folder.drop_superseded(result.files)
        clear_partials(partial_dir, ids)
    return result


def rerun_from_probs(
    frames_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    bundle_dir: str | os.PathLike[str] | None = None,
    post: PostOptions | None = None,
    plots: bool = True,
    warn: Callable[[str], None] | None = None,
    overwrite: bool = False,
    fps: float | None = None,
    allow_other_model: bool = False,
) -> RunResult:
    """Only the post-processing, on probabilities saved in a frames.csv (``--from-probs``).

    With a bundle, the CSV's provenance must name the bundle's model (``allow_other_model``: a
    warning instead). Frame rates come from the CSV's sidecar, else ``fps``.
    """
    if fps is not None and not 0 < fps < 1e6:
        raise VCEError(f"--fps must be a positive number of frames per second, got {fps}")
    out = Path(out_dir)
    check_separate(out, [frames_csv], bundle_dir)
    probs = read_frames_csv(frames_csv)
    if not probs:
        raise VCEError(f"{frames_csv}: no rows; nothing to post-process")
    bundle = Bundle.load(bundle_dir, verify=False) if bundle_dir is not None else None
    post = post or PostOptions()
    thresholds, config = resolve_post(bundle, post)
    pending = check_model(frames_csv, bundle, allow_other_model=allow_other_model) if bundle else []
    prov, _ = read_provenance(frames_csv)
    rates = {vid: (prov.fps.get(vid) if prov else None) or fps for vid in probs}
    settings = _settings(thresholds, config, plots=plots, fps=fps)
    record = run_record("from-probs", [frames_csv], bundle, None, settings, [])
    record["signature"]["csv_sha256"] = sha256_file(frames_csv)
    with OutputFolder.claim(out, record, overwrite=overwrite) as folder:
        started = time.perf_counter()
        events = {vid: postprocess(v.values, v.frames, thresholds, config) for vid, v in probs.items()}
        names = timeline_names(probs) if plots else {}
        summaries = [
            VideoSummary(
                video=vid, source=str(frames_csv), kind="probs", corrupt=v.missing.tolist(),
                frames=int(v.frames.size), inferred=0, events=len(events[vid]), fps=rates[vid],
                timeline=names.get(vid, ""),
            )
            for vid, v in sorted(probs.items())
        ]  # fmt: skip
        result = RunResult(out, events, summaries, thresholds, config, seconds=time.perf_counter() - started)
        warn_ = _collect(result, warn)
        for message in pending:
            warn_(message)
        if bundle is None and post.thresholds is None:
            warn_("no --bundle and no --thresholds: every threshold is 0.5")

        def videos() -> Iterator[VideoFrames]:
            for vid in sorted(probs):
                yield probs[vid]

        provenance = {
            "made_by": "vce-run --from-probs",
            "model": {"weights_sha256": prov.weights_sha256} if prov else None,
            "graph": {"role": prov.graph_role, "sha256": prov.graph_sha256}
            if prov and prov.graph_sha256
            else None,
            "fps": {v: f for v, f in rates.items() if f},
        }
        final = {**folder.record, **_finished_record(result, result.warnings)}
        result.files = write_outputs(
            out, events, videos, thresholds, plots=plots, warn=warn_, timelines=names, fps=rates,
            provenance=provenance, record=final,
        )  # fmt: skip
        folder.drop_superseded(result.files)
    return result
