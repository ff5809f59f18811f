"""``vce-eval`` (temporal mAP, ground truth, frame metrics) and ``vce-calibrate`` (fit, int8)."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vce.calibration.int8 import MODES
from vce.calibration.search import Objective, SearchSpace
from vce.calibration.thresholds import ThresholdsMethod
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli
from vce.runtime.labels import LABELS
from vce.runtime.postprocess import Grouping

eval_app = VCETyper(
    help="RARE-VISION evaluation: the official temporal mAP, ground truth, frame-level metrics."
)
calibrate_app = VCETyper(
    help="Calibrate a bundle: thresholds and post-processing from validation data; INT8 graphs."
)
#: ``vce-calibrate int8 --mode``: one of the INT8 modes, or both
Int8Mode = StrEnum("Int8Mode", [*((m.upper(), m) for m in MODES), ("BOTH", "both")])  # type: ignore[misc]
_SPACE = SearchSpace()  # the defaults of `vce-calibrate fit`'s search


def _listed(values: tuple[object, ...]) -> str:
    return ",".join(map(str, values))


console = Console()
err = Console(stderr=True)


def _warn(prog: str) -> Callable[[str], None]:
    def warn(message: str) -> None:
        err.print(f"{prog}: warning: {message}", markup=False, highlight=False, soft_wrap=True)

    return warn


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise VCEError(f"--{what} takes comma-separated integers, got {text!r}") from exc
    if not values:
        raise VCEError(f"--{what} needs at least one value")
    return values


# ---------------------------------------------------------------------------------------------------
# vce-eval
# ---------------------------------------------------------------------------------------------------


@eval_app.command("score")
def score_command(
    pred: Annotated[Path, typer.Argument(help="predicted events JSON")],
    gt: Annotated[Path, typer.Argument(help="ground-truth events JSON (vce-eval gt)")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Temporal mAP at tIoU 0.5 and 0.95, exactly as the official RareEval evaluator."""
    from vce.calibration.metric import score_files

    result = score_files(pred, gt)
    if as_json:
        print(json.dumps(result.to_dict(), indent=1))
        return
    overall = result.overall
    console.print(f"[bold]mAP@0.5 {overall['mAP@0.5']:.4f}   mAP@0.95 {overall['mAP@0.95']:.4f}[/bold]")
    table = Table("video", "mAP@0.5", "mAP@0.95", title="per video")
    for vid, vals in result.per_video.items():
        table.add_row(vid, f"{vals['mAP@0.5']:.4f}", f"{vals['mAP@0.95']:.4f}")
    console.print(table)
    table = Table("label", "AP@0.5", "AP@0.95", title="per label (mean over videos)")
    for name, vals in result.per_label.items():
        table.add_row(name, f"{vals['mAP@0.5']:.4f}", f"{vals['mAP@0.95']:.4f}")
    console.print(table)
    if result.unscored:
        console.print(
            f"not scored (no labelled ground-truth event, as RareEval): {', '.join(result.unscored)}"
        )


@eval_app.command("gt")
def gt_command(
    labels_dir: Annotated[Path, typer.Argument(help="folder of Galar label CSVs (<video>.csv)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="ground-truth JSON to write")],
) -> None:
    """Ground-truth events from label CSVs, built as the challenge builds them (tuple grouping)."""
    from vce.calibration.groundtruth import build_ground_truth

    path = build_ground_truth(labels_dir, output)
    console.print(f"wrote {path}")


@eval_app.command("frames")
def frames_command(
    frames_csv: Annotated[Path, typer.Argument(help="per-frame probabilities CSV (video, frame, 17 labels)")],
    labels_dir: Annotated[Path, typer.Argument(help="folder of label CSVs")],
    bundle: Annotated[Path | None, typer.Option(help="take the thresholds from this bundle")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="one threshold for every label (default: the paper's)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    allow_other_model: Annotated[
        bool,
        typer.Option(
            "--allow-other-model",
            help="with --bundle: score probabilities that another model made (else refused)",
        ),
    ] = False,
) -> None:
    """Frame-level AP, AUC and F1/precision/recall at the thresholds, per label and macro."""
    from vce.calibration.frame_metrics import frame_metrics
    from vce.calibration.probs import read_probabilities
    from vce.runtime.bundle import Bundle
    from vce.runtime.formats.framescsv import align
    from vce.runtime.formats.labelcsv import read_labels_dir
    from vce.runtime.formats.provenance import check_model
    from vce.runtime.postprocess import PAPER_THRESHOLDS, thresholds_array

    if bundle is not None and threshold is not None:
        raise VCEError("give --bundle or --threshold, not both")
    if bundle is not None:
        loaded = Bundle.load(bundle, verify=False)
        for message in check_model(frames_csv, loaded, allow_other_model=allow_other_model):
            _warn("vce-eval")(message)
        th = loaded.manifest.thresholds_array()
    elif threshold is not None:
        th = thresholds_array(threshold)
    else:
        th = thresholds_array(PAPER_THRESHOLDS)
    rows = align(read_probabilities(frames_csv), read_labels_dir(labels_dir))
    probs = np.concatenate([r[2] for r in rows])
    labels = np.concatenate([r[3] for r in rows])
    m = frame_metrics(probs, labels, th)
    if as_json:
        print(json.dumps(m.to_dict(), indent=1))
        return

    def f(x: float) -> str:
        return "n/a" if not np.isfinite(x) else f"{x:.4f}"

    table = Table(
        "label", "support", "threshold", "AP", "AUC", "F1", "precision", "recall", title=f"{m.frames} frames"
    )
    for c, name in enumerate(LABELS):
        table.add_row(
            name, str(int(m.support[c])), f"{m.thresholds[c]:.2f}", f(m.ap[c]), f(m.auc[c]), f(m.f1[c]),
            f(m.precision[c]), f(m.recall[c]),
        )  # fmt: skip
    macro = m.macro()
    table.add_row(
        "macro",
        "",
        "",
        f(macro["ap"]),
        f(macro["auc"]),
        f(macro["f1"]),
        f(macro["precision"]),
        f(macro["recall"]),
    )
    console.print(table)


# ---------------------------------------------------------------------------------------------------
# vce-calibrate
# ---------------------------------------------------------------------------------------------------


@calibrate_app.command("fit")
def fit_command(
    frames_csv: Annotated[Path, typer.Argument(help="validation probabilities (per-frame CSV)")],
    labels: Annotated[Path, typer.Option(help="folder of the validation label CSVs")],
    bundle: Annotated[Path, typer.Option(help="bundle whose manifest receives the result")],
    thresholds: Annotated[
        ThresholdsMethod,
        typer.Option(help="paper (F1 grid), temporal (per-label temporal AP), keep (the bundle's)"),
    ] = ThresholdsMethod.PAPER,
    objective: Annotated[Objective, typer.Option(help="map50, map95 or mean (of the two)")] = Objective.MAP50,
    folds: Annotated[int, typer.Option(help="leave-videos-out folds (0: no cross-validation)")] = 5,
    seed: Annotated[int, typer.Option(help="seed of the fold assignment")] = 0,
    medians: Annotated[str, typer.Option(help="median sizes to try")] = _listed(_SPACE.medians),
    min_runs: Annotated[str, typer.Option(help="minimum run lengths to try")] = _listed(_SPACE.min_runs),
    max_gaps: Annotated[str, typer.Option(help="maximum gaps to fill to try")] = _listed(_SPACE.max_gaps),
    groupings: Annotated[str, typer.Option(help=f"groupings to try: {_listed(tuple(Grouping))}")] = _listed(
        _SPACE.groupings
    ),
    plot: Annotated[Path | None, typer.Option(help="plot file (default BUNDLE/calibration.png)")] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="do not draw the plot")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report only; leave the bundle unchanged")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the calibration record as JSON")] = False,
    allow_other_model: Annotated[
        bool,
        typer.Option(
            "--allow-other-model",
            help="calibrate on probabilities that another model than the bundle's made (else refused)",
        ),
    ] = False,
) -> None:
    """Fit thresholds and post-processing for the best validation temporal mAP; write them into the bundle."""
    from vce.calibration.calibrate import fit_bundle, label_losses, summary_rows

    space = SearchSpace(
        _ints(medians, "medians"),
        _ints(min_runs, "min-runs"),
        _ints(max_gaps, "max-gaps"),
        tuple(g.strip() for g in groupings.split(",") if g.strip()),
    )
    plot_arg: str | Path | None = None if no_plot else (plot or (None if dry_run else "default"))
    with Progress(
        TextColumn("calibrating"), BarColumn(), TextColumn("{task.completed}/{task.total} video passes"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("fit", total=None)
        result = fit_bundle(
            frames_csv, labels, bundle, method=thresholds.value, objective=objective.value, space=space, folds=folds,
            seed=seed, plot=plot_arg, dry_run=dry_run,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            allow_other_model=allow_other_model, warn=_warn("vce-calibrate"),
        )  # fmt: skip
    warning = result.regression()
    if warning:
        action = "(dry run: bundle unchanged)" if dry_run else "(written anyway; --dry-run to only report)"
        err.print(
            f"vce-calibrate: warning: {warning} {action}", markup=False, highlight=False, soft_wrap=True
        )
    if as_json:
        print(json.dumps(result.to_manifest(str(frames_csv)), indent=1))
        return
    table = Table(
        "label", "threshold", "AP@0.5", "AP@0.95", "frame F1", title="before -> after (validation, in sample)"
    )
    for row in summary_rows(result):
        table.add_row(*row)
    b, a = result.overall(result.ap_before), result.overall(result.ap_after)
    table.add_row(
        "mean",
        "",
        f"{b['mAP@0.5']:.3f} -> {a['mAP@0.5']:.3f}",
        f"{b['mAP@0.95']:.3f} -> {a['mAP@0.95']:.3f}",
        "",
    )
    console.print(table)
    for line in label_losses(result):
        console.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"post-processing: {result.before.config.to_dict()} -> {result.after.config.to_dict()}")
    if result.folds:
        console.print(
            f"{len(result.folds)}-fold leave-videos-out {result.objective}: held-out {result.cv_score:.4f} "
            f"(before: {result.cv_before:.4f})"
        )
    console.print(
        f"{len(result.videos)} videos, {result.frames} frames, {result.seconds:.1f} s"
        + ("" if dry_run else f"; bundle {bundle} updated")
    )


@calibrate_app.command("int8")
def int8_command(
    bundle: Annotated[Path, typer.Argument(help="bundle with an fp32 graph")],
    frames: Annotated[Path | None, typer.Option(help="frame folder to calibrate on")] = None,
    video: Annotated[Path | None, typer.Option(help="video file to calibrate on")] = None,
    mode: Annotated[Int8Mode, typer.Option(help="static (QDQ), dynamic, or both")] = Int8Mode.BOTH,
    count: Annotated[int, typer.Option(help="frames to read (half calibrate, half check drift)")] = 128,
    max_prob_drift: Annotated[float, typer.Option(help="tolerated max |delta prob| against fp32")] = 0.05,
    max_event_change: Annotated[
        float, typer.Option(help="tolerated fraction of events changed after post-processing")
    ] = 0.05,
    force: Annotated[
        bool, typer.Option("--force", help="add graphs beyond tolerance (drift recorded)")
    ] = False,
    quantize_attention: Annotated[
        bool, typer.Option("--quantize-attention", help="also quantize attention's activation matmuls")
    ] = False,
) -> None:
    """INT8 graphs (explicit QDQ and/or dynamic) of the bundle's fp32 graph, audited and drift-checked."""
    from vce.calibration.int8 import Tolerance, quantize_bundle

    modes = list(MODES) if mode == Int8Mode.BOTH else [mode.value]
    reports = quantize_bundle(
        bundle, frames_dir=frames, video=video, modes=modes, count=count,
        tolerance=Tolerance(max_prob_drift, max_event_change), force=force, attention=quantize_attention,
        log=lambda msg: err.print(msg),
    )  # fmt: skip
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0))
    table.add_column("result", no_wrap=True)
    table.add_column("graph", no_wrap=True)  # the file name in full, however narrow the terminal
    for col in ("Δprob", "flips", "events", "changed", "mAP@.5", "img/s"):
        table.add_column(col, justify="right", no_wrap=True)
    failed = []
    for r in reports:
        d = r.drift
        status = "added" if r.added and not r.exceeded else ("forced" if r.added else "NOT ADDED")
        table.add_row(
            status, r.file, f"{d.max_abs_prob:.4f}", str(d.decisions_flipped), f"{d.events_fp32}→{d.events_int8}",
            f"{d.events_changed} ({d.events_changed_fraction:.0%})", f"{d.agreement_map50:.3f}",
            f"{d.fp32_images_per_s:.0f}→{d.int8_images_per_s:.0f}",
        )  # fmt: skip
        if r.exceeded:
            failed.append(f"{r.file}: " + "; ".join(r.exceeded))
    console.print(table)
    console.print(
        "[dim]INT8 against fp32 on the check frames. Δprob: max |probability difference|; flips: frame x "
        "label decisions that differ; events: fp32→int8 counts; changed: events not in both (share); "
        "mAP@.5: the INT8 events scored against the fp32 events; img/s: fp32→int8 on this machine; "
        "forced: beyond tolerance, added by --force.[/]"
    )
    if failed and not force:
        raise VCEError(
            "INT8 drift beyond tolerance, graph not added to the bundle: "
            + " | ".join(failed)
            + " (raise --max-prob-drift/--max-event-change, calibrate on more representative frames, or --force)"
        )


def eval_main() -> None:
    run_cli(eval_app, "vce-eval")


def calibrate_main() -> None:
    run_cli(calibrate_app, "vce-calibrate")
