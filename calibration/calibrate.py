"""``vce-calibrate fit``: thresholds and post-processing from validation probabilities, into a bundle.

The procedure (thresholds, then the post-processing with the best validation temporal mAP) is
cross-validated over videos: for each fold it is fitted on the other videos and scored on the
held-out ones, so the reported estimate is not measured on the frames it was fitted to. The values
written to the bundle are then fitted on all validation videos.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vce.calibration.frame_metrics import f1_counts
from vce.calibration.groundtruth import ground_truth
from vce.calibration.probs import read_probabilities
from vce.calibration.search import (
    SearchSpace,
    Video,
    best_config,
    config_scores,
    config_table,
    objective_weights,
    prepare_videos,
    video_config_aps,
    video_folds,
)
from vce.calibration.thresholds import METHODS, paper_grid_thresholds, temporal_thresholds
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import VideoFrames, align
from vce.runtime.formats.labelcsv import read_labels_dir
from vce.runtime.formats.provenance import check_model
from vce.runtime.labels import LABELS
from vce.runtime.lazy import require
from vce.runtime.manifest_schema import MANIFEST, check_file_name
from vce.runtime.postprocess import PostprocessConfig

Progress = Callable[[int], None]


@dataclass
class Fitted:
    """One fitted procedure: thresholds [17] and a post-processing configuration."""

    thresholds: np.ndarray
    config: PostprocessConfig


@dataclass
class CalibrationResult:
    method: str
    objective: str
    before: Fitted
    after: Fitted
    ap_before: np.ndarray  # [videos, 17, 2] at tIoU 0.5 / 0.95
    ap_after: np.ndarray  # in-sample
    f1_before: np.ndarray  # [17] frame F1
    f1_after: np.ndarray
    videos: list[str]
    frames: int
    space: SearchSpace
    folds: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: each half of the change alone, in sample (to say why a label lost): the new thresholds with
    #: the old post-processing, the old thresholds with the new post-processing
    ap_thresholds_only: np.ndarray | None = None
    ap_postprocess_only: np.ndarray | None = None
    gt_events: np.ndarray | None = None  # [videos, 17] ground-truth events per video and label

    def overall(self, ap: np.ndarray) -> dict[str, float]:
        m = ap.mean(axis=1).mean(axis=0)
        return {"mAP@0.5": float(m[0]), "mAP@0.95": float(m[1])}

    @property
    def cv_score(self) -> float | None:
        """Held-out objective, pooled over every video of every fold (None without CV)."""
        if not self.folds:
            return None
        vals = [s for f in self.folds for s in f["heldout_after"]]
        return float(np.mean(vals))

    @property
    def cv_before(self) -> float | None:
        if not self.folds:
            return None
        return float(np.mean([s for f in self.folds for s in f["heldout_before"]]))

    def regression(self) -> str | None:
        """A warning when the fitted values score below the bundle's current ones (on held-out videos
        when cross-validated, else in sample), else None."""
        if self.cv_score is not None and self.cv_before is not None:
            after, before, where = self.cv_score, self.cv_before, "held-out videos"
        else:
            after = float(per_video_objective(self.ap_after, self.objective).mean())
            before = float(per_video_objective(self.ap_before, self.objective).mean())
            where = "the validation videos"
        if after >= before:
            return None
        return (
            f"the calibrated values score {after:.4f} {self.objective} on {where}, below the bundle's "
            f"current {before:.4f}"
        )

    def to_manifest(self, source: str) -> dict[str, Any]:
        per_label = {
            name: {
                "threshold_before": float(self.before.thresholds[c]),
                "threshold_after": float(self.after.thresholds[c]),
                "ap50_before": float(self.ap_before[:, c, 0].mean()),
                "ap50_after": float(self.ap_after[:, c, 0].mean()),
                "ap95_before": float(self.ap_before[:, c, 1].mean()),
                "ap95_after": float(self.ap_after[:, c, 1].mean()),
                "f1_before": float(self.f1_before[c]),
                "f1_after": float(self.f1_after[c]),
            }
            for c, name in enumerate(LABELS)
        }
        return {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "thresholds_method": self.method,
            "objective": self.objective,
            "videos": len(self.videos),
            "frames": self.frames,
            "search_space": self.space.to_dict(),
            "before": {
                "thresholds": dict(zip(LABELS, map(float, self.before.thresholds), strict=True)),
                "postprocess": self.before.config.to_dict(),
                **self.overall(self.ap_before),
            },
            "after_in_sample": self.overall(self.ap_after),
            "cross_validation": {
                "folds": len(self.folds),
                "objective_heldout": self.cv_score,
                "objective_heldout_before": self.cv_before,
                "per_fold": [
                    {k: v for k, v in f.items() if k not in ("heldout_after", "heldout_before")}
                    for f in self.folds
                ],
            },
            "per_label": per_label,
            "seconds": round(self.seconds, 2),
        }


def fit_thresholds(videos: Sequence[Video], method: str, current: np.ndarray) -> np.ndarray:
    """Frame-level thresholds: the bundle's (``keep``) or the paper's F1 grid (``paper``, ``temporal``)."""
    if method == "keep":
        return np.asarray(current, dtype=np.float64).copy()
    if method not in METHODS:
        raise VCEError(f"unknown thresholds method {method!r}; choose one of {', '.join(METHODS)}")
    probs = np.concatenate([v.probs for v in videos])
    labels = np.concatenate([v.labels for v in videos])
    return paper_grid_thresholds(probs, labels)


def _search(
    videos: Sequence[Video],
    thresholds: np.ndarray,
    objective: str,
    space: SearchSpace,
    current: Fitted,
    progress: Progress | None,
) -> tuple[Fitted, np.ndarray, float]:
    configs = space.configs(first=current.config)
    table = config_table(videos, thresholds, configs, progress=progress)
    scores = config_scores(table, objective)
    best = best_config(scores)
    return Fitted(thresholds, configs[best]), table[best], float(scores[best])


def fit_procedure(
    videos: Sequence[Video],
    method: str,
    objective: str,
    space: SearchSpace,
    current: Fitted,
    progress: Progress | None = None,
) -> tuple[Fitted, np.ndarray]:
    """Thresholds, then the best configuration of ``space`` (the current one leads, so ties keep it).

    ``temporal``: from the F1-grid thresholds and their best configuration, each label's threshold
    is refitted for its temporal AP under that smoothing, and the configuration searched again;
    the refinement is kept only if it scores at least as well on ``videos``.
    """
    fitted, aps, best = _search(
        videos, fit_thresholds(videos, method, current.thresholds), objective, space, current, progress
    )
    if method == "temporal":
        cfg = fitted.config
        label_cfg = PostprocessConfig(cfg.median, cfg.min_run, cfg.max_gap, "label")
        refined = temporal_thresholds(
            videos, label_cfg, objective, fallback=fitted.thresholds, progress=progress
        )
        fitted2, aps2, best2 = _search(videos, refined, objective, space, fitted, progress)
        if best2 >= best:
            return fitted2, aps2
    return fitted, aps


def per_video_objective(ap: np.ndarray, objective: str) -> np.ndarray:
    """[videos, 17, 2] APs -> [videos] objective values."""
    return ap.mean(axis=1) @ objective_weights(objective)


def score(videos: Sequence[Video], fitted: Fitted) -> np.ndarray:
    """APs [videos, 17, 2] of a fitted procedure."""
    return np.stack([video_config_aps(v, fitted.thresholds, [fitted.config])[0] for v in videos])


def calibrate(
    probs: Mapping[str, VideoFrames],
    labels: Mapping[str, VideoFrames],
    current: Fitted,
    *,
    method: str = "paper",
    objective: str = "map50",
    space: SearchSpace | None = None,
    folds: int = 5,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> CalibrationResult:
    """Fit thresholds and post-processing on validation videos; cross-validate the procedure.

    ``progress(done, total)`` is called as videos are processed.
    """
    t0 = time.perf_counter()
    space = space or SearchSpace()
    objective_weights(objective)  # validates the name
    if method not in METHODS:
        raise VCEError(f"unknown thresholds method {method!r}; choose one of {', '.join(METHODS)}")
    if folds < 0 or folds == 1:
        raise VCEError(f"--folds must be 0 (no cross-validation) or at least 2, got {folds}")
    videos = prepare_videos(align(probs, labels), ground_truth(labels))
    if not videos:
        raise VCEError("no validation video has a labelled ground-truth event; nothing to calibrate on")
    n = len(videos)
    splits = video_folds(n, folds, seed) if folds else []
    per_fit = n * (3 if method == "temporal" else 1)
    total = per_fit * (len(splits) + 1)
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total)

    fold_records: list[dict[str, Any]] = []
    for k, test in enumerate(splits):
        train = np.setdiff1d(np.arange(n), test)
        fitted, _ = fit_procedure([videos[i] for i in train], method, objective, space, current, tick)
        heldout = [videos[i] for i in test]
        fold_records.append(
            {
                "fold": k,
                "heldout_videos": [v.video for v in heldout],
                "thresholds": dict(zip(LABELS, map(float, fitted.thresholds), strict=True)),
                "postprocess": fitted.config.to_dict(),
                "heldout_after": per_video_objective(score(heldout, fitted), objective).tolist(),
                "heldout_before": per_video_objective(score(heldout, current), objective).tolist(),
            }
        )
        f = fold_records[-1]
        f["objective_after"] = float(np.mean(f["heldout_after"]))
        f["objective_before"] = float(np.mean(f["heldout_before"]))
    after, ap_after = fit_procedure(videos, method, objective, space, current, tick)
    ap_before = score(videos, current)
    ap_thresholds_only = score(videos, Fitted(after.thresholds, current.config))
    ap_postprocess_only = score(videos, Fitted(current.thresholds, after.config))
    all_probs = np.concatenate([v.probs for v in videos])
    all_labels = np.concatenate([v.labels for v in videos])
    return CalibrationResult(
        method=method,
        objective=objective,
        before=current,
        after=after,
        ap_before=ap_before,
        ap_after=ap_after,
        f1_before=f1_counts(all_probs, all_labels, current.thresholds)["f1"],
        f1_after=f1_counts(all_probs, all_labels, after.thresholds)["f1"],
        videos=[v.video for v in videos],
        frames=int(all_probs.shape[0]),
        space=space,
        folds=fold_records,
        seconds=time.perf_counter() - t0,
        ap_thresholds_only=ap_thresholds_only,
        ap_postprocess_only=ap_postprocess_only,
        gt_events=np.stack([v.gt.counts for v in videos]),
    )


def _inside(bundle: Bundle, path: Path) -> bool:
    root = bundle.root.resolve()
    target = path.resolve()
    return target == root or root in target.parents


def plot_target(bundle: Bundle, plot: str | os.PathLike[str] | None, dry_run: bool) -> Path | None:
    """Where the plot goes (``"default"``: BUNDLE/calibration.png); VCEError if it may not go there.

    With ``dry_run`` nothing may be written inside the bundle. Inside the bundle the plot is a plain
    ``.png`` name, new or an earlier calibration plot: it never replaces a file of the bundle.
    """
    if plot is None:
        return None
    path = bundle.root / "calibration.png" if plot == "default" else Path(plot)
    if not _inside(bundle, path):
        return path
    if dry_run:
        raise VCEError(
            f"--plot {path} is inside the bundle, which --dry-run leaves unchanged; write the plot "
            "elsewhere (--plot OTHER.png) or drop --dry-run"
        )
    entry = bundle.manifest.files.get(path.name)
    replaces = (path.exists() or path.is_symlink()) and (
        entry is None or entry.get("role") != "calibration-plot" or path.is_symlink()
    )
    if (
        path.parent.resolve() != bundle.root.resolve()
        or path.suffix != ".png"
        or path.name == MANIFEST
        or replaces
    ):
        raise VCEError(
            f"--plot {path}: inside the bundle the plot must be a new .png file (or the earlier "
            "calibration plot), never another bundle file; choose another name"
        )
    check_file_name(path.name, "--plot")
    return path


def write_to_bundle(bundle: Bundle, result: CalibrationResult, source: str, plot: Path | None = None) -> None:
    """Thresholds, post-processing and the calibration record into the manifest, saved last and atomically.

    A plot inside the bundle is listed with its hash for the record (role ``calibration-plot``, a
    file vce-run never reads: it does not have to match for the bundle to load), so a crash between
    the plot and the manifest leaves a loadable bundle."""
    m = bundle.manifest
    m.thresholds = dict(zip(LABELS, map(float, result.after.thresholds), strict=True))
    m.postprocess = result.after.config.to_dict()
    record = result.to_manifest(source)
    if plot is not None and plot.parent.resolve() == bundle.root.resolve():
        bundle.add_file(plot.name, "calibration-plot")
        record["plot"] = plot.name
    m.calibration = {**m.calibration, "fit": record}
    bundle.save()


def summary_rows(result: CalibrationResult) -> list[list[str]]:
    """Per-label rows: label, threshold before -> after, AP@0.5 before -> after, F1 before -> after."""
    rows = []
    for c, name in enumerate(LABELS):
        rows.append(
            [
                name,
                f"{result.before.thresholds[c]:.2f} -> {result.after.thresholds[c]:.2f}",
                f"{result.ap_before[:, c, 0].mean():.3f} -> {result.ap_after[:, c, 0].mean():.3f}",
                f"{result.ap_before[:, c, 1].mean():.3f} -> {result.ap_after[:, c, 1].mean():.3f}",
                f"{result.f1_before[c]:.3f} -> {result.f1_after[c]:.3f}",
            ]
        )
    return rows


def label_losses(result: CalibrationResult) -> list[str]:
    """One line per label whose in-sample AP@0.5 fell, saying what cost it; then why that can happen.

    Each half of the change is scored alone (new thresholds with the old post-processing, and the
    reverse), and videos without the label are counted apart: RareEval scores such a video 1 when
    nothing is predicted for the label and 0 as soon as one event is, so a lower threshold that
    makes a label appear at all can halve its AP while its frame F1 rises.
    """
    before = result.ap_before[:, :, 0]
    after = result.ap_after[:, :, 0]
    lines = []
    for c, name in enumerate(LABELS):
        b, a = float(before[:, c].mean()), float(after[:, c].mean())
        if not a < b - 1e-9:
            continue
        t0, t1 = result.before.thresholds[c], result.after.thresholds[c]
        parts = [f"{name}: AP@0.5 {b:.3f} -> {a:.3f}"]
        if result.gt_events is not None:
            absent = result.gt_events[:, c] == 0
            new_events = int((absent & (before[:, c] == 1.0) & (after[:, c] == 0.0)).sum())
            if new_events:
                parts.append(
                    f"events now predicted on {new_events} of the {int(absent.sum())} video(s) without it "
                    "(each scores 0 instead of 1)"
                )
        if result.ap_thresholds_only is not None and result.ap_postprocess_only is not None:
            parts.append(
                f"threshold {t0:.2f} -> {t1:.2f} alone: {result.ap_thresholds_only[:, c, 0].mean():.3f}, "
                f"post-processing alone: {result.ap_postprocess_only[:, c, 0].mean():.3f}"
            )
        lines.append("; ".join(parts))
    if lines:
        lines.append(
            "why a label can lose: each threshold maximises that label's frame F1, not its temporal AP, "
            f"and the post-processing is one setting for every label, chosen for the mean ({result.objective}); "
            "--thresholds temporal fits each threshold for its temporal AP instead"
        )
    return lines


def save_plot(result: CalibrationResult, path: str | os.PathLike[str]) -> Path:
    """Bar chart of per-label temporal AP@0.5 before/after and the held-out fold scores (PNG, atomic)."""
    matplotlib = require("matplotlib", "the calibration plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "the calibration plot")
    from vce.runtime.atomic import atomic_path

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [4, 1]})
    x = np.arange(len(LABELS))
    ax1.bar(x - 0.2, result.ap_before[:, :, 0].mean(axis=0), 0.4, label="before")
    ax1.bar(x + 0.2, result.ap_after[:, :, 0].mean(axis=0), 0.4, label="after (in sample)")
    ax1.set_xticks(x, LABELS, rotation=60, ha="right")
    ax1.set_ylabel("temporal AP@0.5 (mean over videos)")
    ax1.set_ylim(0, 1.05)
    ax1.legend()
    ax1.set_title(
        f"thresholds: {result.method}, post-processing: {result.after.config.to_dict()}", fontsize=9
    )
    if result.folds:
        ax2.plot([f["objective_before"] for f in result.folds], "o-", label="before")
        ax2.plot([f["objective_after"] for f in result.folds], "s-", label="fitted on other videos")
        ax2.set_xlabel("fold")
        ax2.set_ylabel(f"held-out {result.objective}")
        ax2.legend(fontsize=8)
    else:
        ax2.axis("off")
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return target


def fit_bundle(
    frames_csv: str | os.PathLike[str],
    labels_dir: str | os.PathLike[str],
    bundle_dir: str | os.PathLike[str],
    *,
    method: str = "paper",
    objective: str = "map50",
    space: SearchSpace | None = None,
    folds: int = 5,
    seed: int = 0,
    plot: str | os.PathLike[str] | None = "default",
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    allow_other_model: bool = False,
    warn: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Read validation probabilities and labels, calibrate, update the bundle (unless ``dry_run``).

    The probabilities must come from the bundle's model (their provenance sidecar says which; see
    ``vce.runtime.formats.provenance.check_model``): another model's are refused unless
    ``allow_other_model``; ``warn`` receives what could not be checked.
    """
    bundle = Bundle.load(bundle_dir, verify=False)
    for message in check_model(frames_csv, bundle, allow_other_model=allow_other_model):
        if warn is not None:
            warn(message)
    plot_path = plot_target(bundle, plot, dry_run)  # fail before the search
    if plot_path is not None:
        require("matplotlib", "the calibration plot (or pass --no-plot)")
    current = Fitted(bundle.manifest.thresholds_array(), bundle.manifest.postprocess_config())
    probs = read_probabilities(frames_csv)
    labels = read_labels_dir(labels_dir)
    result = calibrate(
        probs,
        labels,
        current,
        method=method,
        objective=objective,
        space=space,
        folds=folds,
        seed=seed,
        progress=progress,
    )
    if plot_path is not None:
        save_plot(result, plot_path)
    if not dry_run:  # the manifest last: it commits the calibration
        write_to_bundle(bundle, result, str(frames_csv), plot_path)
    return result
