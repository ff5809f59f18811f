"""``vce-run``: videos or frame folders -> RARE-VISION events, with a bundle from ``vce-export``.

Exit codes (also in ``vce-run --help`` and the README):

- 0: done; every input ran and every frame decoded (``--allow-corrupt``: frames that could not be
  decoded do not count as a problem);
- 2: nothing done: a user error (bad bundle or option, refused output folder, no input that can
  run), one line on stderr;
- 3: done, with problems: outputs are written for every input that ran; inputs that could not run
  and frames that could not be decoded are listed in the summary and in ``OUT/run.json``;
- 130: interrupted (Ctrl-C); no output written, the same command resumes (``--follow``: the first
  Ctrl-C ends the source and the run finishes with 0 or 3; a second one interrupts);
- 1: an unexpected error (a bug: please report it with ``VCE_DEBUG=1``'s traceback).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vce.runtime.backends.select import Backend, Choice, Graph
from vce.runtime.cliapp import VCETyper, command_argv
from vce.runtime.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, VCEError, run_cli
from vce.runtime.formats.provenance import ALLOW_FLAG
from vce.runtime.live.follow import FollowOptions, follow
from vce.runtime.outdir import RUN_RECORD
from vce.runtime.pipeline import Fill
from vce.runtime.postprocess import Event, Grouping
from vce.runtime.run import PostOptions, RunOptions, RunResult, rerun_from_probs, run
from vce.runtime.sources import Source

EXIT_OK = 0
EXIT_PROBLEMS = 3
EXIT_CORRUPT_FRAMES = EXIT_PROBLEMS  # the name earlier versions used
EXIT_CODES = (
    (EXIT_OK, "done: every input ran, every frame decoded"),
    (EXIT_USER_ERROR, "nothing done: a user error (one line says what to do), or no arguments (this help)"),
    (
        EXIT_PROBLEMS,
        f"done, with problems: inputs that could not run or frames that could not be decoded, "
        f"listed in the summary and OUT/{RUN_RECORD}; the others' outputs are written "
        "(--allow-corrupt: undecodable frames alone exit 0)",
    ),
    (
        EXIT_INTERRUPTED,
        "interrupted: no output written; the same command resumes (--follow: a first Ctrl-C ends the "
        "source and writes the outputs; a second one interrupts)",
    ),
    (1, "an unexpected error: a bug (VCE_DEBUG=1 shows the traceback)"),
)


app = VCETyper()
out_console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def _warn(message: str) -> None:
    err_console.print(f"vce-run: warning: {message}", highlight=False, soft_wrap=True)


def _print_summary(result: RunResult, quiet: bool) -> None:
    if quiet:
        return
    table = Table(title=f"vce-run: {len(result.videos)} video(s)", show_edge=False)
    for col in ("video", "kind", "frames", "inferred", "not decoded", "events"):
        table.add_column(col, justify="left" if col in ("video", "kind") else "right")
    for v in result.videos:
        table.add_row(v.video, v.kind, str(v.frames), str(v.inferred), str(v.n_corrupt), str(v.events))
    out_console.print(table)
    resumed = [v.video for v in result.videos if v.resumed]
    if resumed:
        out_console.print(f"resumed from an interrupted run: {', '.join(resumed)}", highlight=False)
    if result.problems:
        out_console.print(f"{len(result.problems)} input(s) could not run:", highlight=False)
        for p in result.problems:
            out_console.print(f"  {p.reason}", highlight=False, soft_wrap=True)
    counts = {k: n for k, n in result.events_per_label().items() if n}
    per_label = ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"
    out_console.print(f"events per label: {per_label}", highlight=False, soft_wrap=True)
    if result.backend:
        earlier = result.frames - result.frames_this_run
        note = f"; {earlier} more from the interrupted run" if earlier else ""
        out_console.print(
            f"backend: {result.backend}; {result.frames_this_run} frames in {result.seconds:.1f} s = "
            f"{result.fps:.1f} frames/s ({result.inferred} inferred{note})",
            highlight=False,
            soft_wrap=True,
        )
    c = result.config
    out_console.print(
        f"post-processing: median {c.median}, min run {c.min_run}, max gap {c.max_gap}, grouping {c.grouping}",
        highlight=False,
    )
    out_console.print(f"wrote: {', '.join(str(f) for f in result.files)}", highlight=False, soft_wrap=True)


def _finish(result: RunResult, out: Path, allow_corrupt: bool) -> None:
    """Exit 3 (done, with problems) when inputs could not run, or frames could not be decoded."""
    first = f"{len(result.problems)} input(s) could not run" if result.problems else None
    _exit_with_problems(first, result.corrupt, allow_corrupt, f"listed in {out / RUN_RECORD}")


def _exit_with_problems(first: str | None, corrupt: int, allow_corrupt: bool, where: str) -> None:
    """Exit 3 (done, with problems) with one line naming them, if there are any."""
    reasons = [first] if first else []
    if corrupt and not allow_corrupt:
        reasons.append(f"{corrupt} frame(s) could not be decoded (--allow-corrupt exits 0)")
    if reasons:
        err_console.print(
            f"vce-run: done, with problems: {'; '.join(reasons)}; {where} (exit {EXIT_PROBLEMS})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_PROBLEMS)


def _follow(
    source: str,
    bundle: Path,
    out: Path,
    options: RunOptions,
    live: FollowOptions,
    quiet: bool,
    allow_corrupt: bool,
) -> None:
    """``--follow``: info lines on stderr, each event on stdout as it becomes final, the summary at the end."""

    def notify(message: str) -> None:
        if not quiet:
            err_console.print(f"vce-run: {message}", highlight=False, soft_wrap=True)

    def on_event(video: str, event: Event, delay: dict[str, Any]) -> None:
        if quiet:
            return
        waited = (
            ""
            if delay.get("delay_s") is None
            else f" (final {delay['delay_frames']} frames, {delay['delay_s']:.1f} s after its end)"
        )
        labels = ", ".join(event["label"]) or "(none)"
        out_console.print(
            f"event {video} {event['start']}-{event['end']}: {labels}{waited}",
            highlight=False,
            soft_wrap=True,
        )

    try:
        result = follow(source, bundle, out, options, live, notify=notify, on_event=on_event, warn=_warn)
    except KeyboardInterrupt:
        raise VCEError(
            f"interrupted; {out / 'events.jsonl'} keeps the events final so far; run the same command again "
            "to resume",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    _print_summary(result, quiet)
    if not quiet:
        info = result.live
        delay = info["delay"]
        bound = info["delay_bound"]
        seconds = f" = {bound['seconds']} s" if bound["seconds"] is not None else ""
        out_console.print(
            f"live: {info['frames_seen']} frames seen, ended by {info['ended_by']}; {info['skipped']} skipped to "
            f"keep up; event delay median {delay['frames']['median']} / max {delay['frames']['max']} frames "
            f"(bound {bound['frames']}{seconds} plus the inference backlog)",
            highlight=False,
            soft_wrap=True,
        )
    first = f"the source ended early ({result.problem})" if result.problem else None
    _exit_with_problems(first, result.corrupt, allow_corrupt, "the outputs hold every frame that arrived")


def _epilog() -> str:
    return "Exit codes:\n" + "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES)


R = RunOptions  # the defaults of vce-run's options
L = FollowOptions  # the defaults of its --follow options


@app.command(no_args_is_help=True, epilog=_epilog())
def run_command(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Video files, frame folders, or folders holding several of them.", show_default=False
        ),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", "-b", help="Bundle folder (from vce-export).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output folder: new or empty, or one an interrupted run left (required)."
        ),
    ] = None,
    backend: Annotated[
        Backend, typer.Option(help="Inference backend (auto: the first installed one that fits the bundle).")
    ] = Backend(R.backend),
    graph: Annotated[
        Graph | None,
        typer.Option(
            help="Graph to run (default: on ort-cpu the dynamic INT8 graph when it passed its drift check, "
            "else fp32; fp16 on GPU; engine for trt)."
        ),
    ] = None,
    batch: Annotated[int, typer.Option(help="Frames per inference batch.")] = R.batch,
    stride: Annotated[
        int, typer.Option(help="Infer every K-th frame (and the last); the others are filled.")
    ] = R.stride,
    fill: Annotated[
        Fill,
        typer.Option(help="How --stride fills the frames between: linear (interpolate) or hold (repeat)."),
    ] = Fill(R.fill),
    workers: Annotated[
        int | None, typer.Option(help="Decoding/preprocessing threads (default: min(4, CPUs)).")
    ] = R.workers,
    parallel_videos: Annotated[
        int, typer.Option(help="Videos decoded at once (outputs stay in input order).")
    ] = R.parallel_videos,
    threads: Annotated[
        int | None, typer.Option(help="ONNX Runtime threads (default: ONNX Runtime's).")
    ] = R.threads,
    thresholds: Annotated[
        str | None,
        typer.Option(help="Per-class thresholds: a JSON file or one number (default: the bundle's)."),
    ] = None,
    median: Annotated[
        int | None, typer.Option(help="Median filter size (default: the bundle's calibrated one).")
    ] = None,
    min_run: Annotated[
        int | None, typer.Option(help="Drop runs shorter than this (default: the bundle's calibrated one).")
    ] = None,
    max_gap: Annotated[
        int | None, typer.Option(help="Fill gaps up to this length (default: the bundle's calibrated one).")
    ] = None,
    grouping: Annotated[
        Grouping | None, typer.Option(help="tuple or label (default: the bundle's calibrated one).")
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(
            help="Frames per second of frame folders (and of videos whose file does not say), for the "
            "timeline's time axis."
        ),
    ] = R.fps,
    from_probs: Annotated[
        Path | None,
        typer.Option("--from-probs", help="Only post-process the probabilities of a frames.csv (no model)."),
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write <video>_timeline.png.")] = R.plots,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore the results an interrupted run left.")
    ] = not R.resume,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace the run OUT holds (deletes only the files that run wrote)."
        ),
    ] = R.overwrite,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Stop at the first input that cannot run (default: run the others, exit 3)."
        ),
    ] = R.strict,
    allow_corrupt: Annotated[
        bool, typer.Option("--allow-corrupt", help="Exit 0 even if some frames could not be decoded.")
    ] = False,
    allow_other_model: Annotated[
        bool,
        typer.Option(
            ALLOW_FLAG,
            help="--from-probs with --bundle: use probabilities another model made (else refused).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary, no progress bar.")] = False,
    follow_source: Annotated[
        str | None,
        typer.Option(
            "--follow",
            help="Live: follow a frame folder being written, a stream OpenCV opens (device index, growing "
            "video file, URL) or - (frames on stdin: 4-byte big-endian length + one encoded image each); "
            "events.jsonl and status.json grow while it runs, the usual outputs are written at its end.",
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            help="--follow: end after this many seconds without a new frame (and wait this long for the source)."
        ),
    ] = L.idle_timeout,
    max_lag: Annotated[
        int,
        typer.Option(
            help="--follow: at most this many frames wait for inference; older ones are skipped (0: never skip)."
        ),
    ] = L.max_lag,
    corrupt_timeout: Annotated[
        float,
        typer.Option(help="--follow: a frame file that does not decode for this long counts as corrupt."),
    ] = L.corrupt_timeout,
    timeline_every: Annotated[
        float | None,
        typer.Option(
            help="--follow: refresh the timeline PNG every this many minutes (default: at the end)."
        ),
    ] = L.timeline_every,
    video_id: Annotated[
        str | None,
        typer.Option(help="--follow: the video id of a stream (default: the folder or file name, 'stdin')."),
    ] = L.video_id,
) -> None:
    """Classify capsule-endoscopy videos and write RARE-VISION events (events.json), per-frame
    probabilities (frames.csv), a timeline plot per video and the run record (run.json) into OUT."""
    if out is None:
        raise VCEError("--out/-o is required: the folder to write events.json, frames.csv and run.json into")
    post = PostOptions(thresholds, median, min_run, max_gap, None if grouping is None else grouping.value)
    options = RunOptions(
        backend=backend.value, graph=None if graph is None else graph.value, batch=batch, stride=stride,
        fill=fill.value, workers=workers, parallel_videos=parallel_videos, threads=threads, resume=not fresh,
        plots=plots, post=post, strict=strict, overwrite=overwrite, fps=fps,
    )  # fmt: skip
    if follow_source is not None:
        if inputs or from_probs is not None:
            raise VCEError(
                "--follow takes its source as its value: pass no INPUT and no --from-probs with it"
            )
        live = FollowOptions(
            idle_timeout=idle_timeout, max_lag=max_lag, corrupt_timeout=corrupt_timeout,
            timeline_every=timeline_every, video_id=video_id,
        )  # fmt: skip
        # one source: --parallel-videos and --strict do not apply (the run record keeps their defaults)
        options = dataclasses.replace(options, parallel_videos=R.parallel_videos, strict=R.strict)
        _follow(follow_source, _need_bundle(bundle), out, options, live, quiet, allow_corrupt)
    elif from_probs is not None:
        if inputs:
            raise VCEError("--from-probs re-runs the post-processing only: pass no INPUT with it")
        result = rerun_from_probs(
            from_probs, out, bundle_dir=bundle, post=post, plots=plots, warn=_warn, overwrite=overwrite,
            fps=fps, allow_other_model=allow_other_model,
        )  # fmt: skip
        _print_summary(result, quiet)
    else:
        if not inputs:
            raise VCEError("no INPUT: pass videos or frame folders (or --from-probs FRAMES.csv)")
        result = _run_with_progress(inputs, _need_bundle(bundle), out, options, quiet)
        _print_summary(result, quiet)
        _finish(result, out, allow_corrupt)


def run_argv(inputs: list[Path], bundle: Path, out: Path, options: RunOptions) -> list[str]:
    """The ``vce-run`` arguments that run ``inputs`` with ``options`` (values at their default are left
    out), built with the command's own parameters so that a printed command cannot drift."""
    values: dict[str, Any] = {"inputs": list(inputs), "bundle": bundle, "out": out}
    default = RunOptions()
    for field in dataclasses.fields(RunOptions):
        value = getattr(options, field.name)
        if field.name == "post":
            values.update({k: v for k, v in dataclasses.asdict(value).items() if v is not None})
        elif value == getattr(default, field.name):
            continue
        elif field.name == "resume":
            values["fresh"] = not value
        elif field.name == "checkpoint_seconds":
            raise ValueError(f"vce-run has no option for checkpoint_seconds = {value!r}")
        else:
            values[field.name] = value
    return command_argv(app, None, values)


def _need_bundle(bundle: Path | None) -> Path:
    if bundle is None:
        raise VCEError("--bundle is required to run a model (make one with `vce-export onnx`)")
    return bundle


def _run_with_progress(
    inputs: list[Path], bundle: Path, out: Path, options: RunOptions, quiet: bool
) -> RunResult:
    """Run the model over ``inputs`` with a progress bar on stderr (a terminal, not ``--quiet``)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]} frames/s"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=quiet or not err_console.is_terminal,
    )
    task = None

    def on_start(choice: Choice, sources: list[Source]) -> None:
        nonlocal task
        if not quiet:
            err_console.print(
                f"vce-run: backend {choice.note or choice.describe()}", highlight=False, soft_wrap=True
            )
        task = progress.add_task("inference", total=sum(s.length_hint() for s in sources) or None, fps="-")

    def on_frames(video: str, n: int) -> None:
        if task is not None:
            progress.advance(task, n)
            t = progress.tasks[0]
            speed = t.speed
            progress.update(task, description=video, fps=f"{speed:.1f}" if speed else "-")

    try:
        with progress:
            return run(inputs, bundle, out, options, on_start=on_start, on_frames=on_frames, warn=_warn)
    except KeyboardInterrupt:  # click would swallow it; say how to go on instead
        raise VCEError(
            f"interrupted; no output was written, run the same command again to resume from {out / '.partial'}",
            exit_code=EXIT_INTERRUPTED,
        ) from None


def main() -> None:
    run_cli(app, "vce-run")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
