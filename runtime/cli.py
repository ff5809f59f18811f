"""``vce-run``: videos or frame folders -> RARE-VISION events, with a bundle from ``vce-export``.

Exit codes: 0 done; 2 a user error (one line, nothing written); 3 done, but corrupt frames were
skipped (all outputs written; ``--allow-corrupt`` exits 0); 130 interrupted (a later run resumes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vce.runtime.backends.base import BACKENDS
from vce.runtime.backends.select import GRAPHS, Choice
from vce.runtime.errors import EXIT_INTERRUPTED, VCEError, run_cli
from vce.runtime.pipeline import DEFAULT_PARALLEL_VIDEOS
from vce.runtime.run import PostOptions, RunOptions, RunResult, rerun_from_probs, run
from vce.runtime.sources import Source

EXIT_CORRUPT_FRAMES = 3

app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True, add_completion=False)
out_console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def _warn(message: str) -> None:
    err_console.print(f"vce-run: warning: {message}", highlight=False, soft_wrap=True)


def _print_summary(result: RunResult, quiet: bool) -> None:
    if quiet:
        return
    table = Table(title=f"vce-run: {len(result.videos)} video(s)", show_edge=False)
    for col in ("video", "kind", "frames", "inferred", "corrupt", "events"):
        table.add_column(col, justify="left" if col in ("video", "kind") else "right")
    for v in result.videos:
        table.add_row(
            v.video,
            v.kind,
            str(v.frames),
            str(v.inferred),
            str(v.n_corrupt),
            str(v.events),
        )
    out_console.print(table)
    resumed = [v.video for v in result.videos if v.resumed]
    if resumed:
        out_console.print(f"resumed from an interrupted run: {', '.join(resumed)}", highlight=False)
    counts = {k: n for k, n in result.events_per_label().items() if n}
    per_label = ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"
    out_console.print(f"events per label: {per_label}", highlight=False, soft_wrap=True)
    if result.backend:
        out_console.print(
            f"backend: {result.backend}; {result.frames} frames in {result.seconds:.1f} s = "
            f"{result.fps:.1f} frames/s ({result.inferred} inferred)",
            highlight=False,
        )
    c = result.config
    out_console.print(
        f"post-processing: median {c.median}, min run {c.min_run}, max gap {c.max_gap}, grouping {c.grouping}",
        highlight=False,
    )
    out_console.print(f"wrote: {', '.join(str(f) for f in result.files)}", highlight=False, soft_wrap=True)


@app.command()
def main_command(
    inputs: list[Path] = typer.Argument(
        None, help="Video files, frame folders, or folders holding several of them.", show_default=False
    ),
    bundle: Path | None = typer.Option(None, "--bundle", "-b", help="Bundle folder (from vce-export)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    backend: str = typer.Option("auto", help=f"auto or one of: {', '.join(BACKENDS)}."),
    graph: str | None = typer.Option(
        None,
        help=f"Graph to run: {', '.join(GRAPHS)} (default: on ort-cpu the dynamic INT8 graph when it passed its drift check, else fp32; fp16 on GPU; engine for trt).",
    ),
    batch: int = typer.Option(8, help="Frames per inference batch."),
    stride: int = typer.Option(1, help="Infer every K-th frame (and the last); the others are filled."),
    fill: str = typer.Option(
        "linear", help="How --stride fills the frames between: linear (interpolate) or hold (repeat)."
    ),
    workers: int | None = typer.Option(None, help="Decoding/preprocessing threads (default: min(4, CPUs))."),
    parallel_videos: int = typer.Option(
        DEFAULT_PARALLEL_VIDEOS, help="Videos decoded at once (outputs stay in input order)."
    ),
    threads: int | None = typer.Option(None, help="ONNX Runtime threads (default: ONNX Runtime's)."),
    thresholds: str | None = typer.Option(
        None, help="Per-class thresholds: a JSON file or one number (default: the bundle's)."
    ),
    median: int | None = typer.Option(None, help="Median filter size (default: the bundle's, 7)."),
    min_run: int | None = typer.Option(None, help="Drop runs shorter than this (default: the bundle's, 3)."),
    max_gap: int | None = typer.Option(None, help="Fill gaps up to this length (default: the bundle's, 5)."),
    grouping: str | None = typer.Option(None, help="tuple or label (default: the bundle's, tuple)."),
    from_probs: Path | None = typer.Option(
        None, "--from-probs", help="Only post-process the probabilities of a frames.csv (no model)."
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write <video>_timeline.png."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore the results an interrupted run left."),
    allow_corrupt: bool = typer.Option(
        False, "--allow-corrupt", help="Exit 0 even if corrupt frames were skipped."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary, no progress bar."),
) -> None:
    """Classify capsule-endoscopy videos and write RARE-VISION events (events.json), per-frame
    probabilities (frames.csv) and a timeline plot per video into OUT."""
    if grouping is not None and grouping not in ("tuple", "label"):
        raise VCEError(f"--grouping must be tuple or label, got {grouping!r}")
    if fill not in ("hold", "linear"):
        raise VCEError(f"--fill must be hold or linear, got {fill!r}")
    post = PostOptions(thresholds, median, min_run, max_gap, grouping)  # type: ignore[arg-type]
    if from_probs is not None:
        if inputs:
            raise VCEError("--from-probs re-runs the post-processing only: pass no INPUT with it")
        result = rerun_from_probs(from_probs, out, bundle_dir=bundle, post=post, plots=plots, warn=_warn)
        _print_summary(result, quiet)
        return
    if not inputs:
        raise VCEError("no INPUT: pass videos or frame folders (or --from-probs FRAMES.csv)")
    if bundle is None:
        raise VCEError("--bundle is required to run a model (make one with `vce-export onnx`)")
    options = RunOptions(
        backend=backend,
        graph=graph,
        batch=batch,
        stride=stride,
        fill=fill,  # type: ignore[arg-type]
        workers=workers,
        parallel_videos=parallel_videos,
        threads=threads,
        resume=not fresh,
        plots=plots,
        post=post,
    )
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
            result = run(inputs, bundle, out, options, on_start=on_start, on_frames=on_frames, warn=_warn)
    except KeyboardInterrupt:  # click would swallow it; say how to go on instead
        raise VCEError(
            f"interrupted; no output was written, run the same command again to resume from {out / '.partial'}",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    _print_summary(result, quiet)
    if result.corrupt:
        message = f"{result.corrupt_message()}; outputs written to {out}"
        if allow_corrupt:
            _warn(message)
            return
        raise VCEError(message + " (exit 3; --allow-corrupt exits 0)", exit_code=EXIT_CORRUPT_FRAMES)


def main() -> None:
    run_cli(app, "vce-run")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
