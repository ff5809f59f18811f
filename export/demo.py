"""``vce-demo``: the whole toolkit end to end on synthetic data, on a CPU, in a few minutes.

Generates a synthetic capsule dataset (training videos as frame folders + held-out videos as MP4),
trains a small differential-attention model, exports the bundle, calibrates it on the validation
videos, runs ``vce-run`` on the held-out MP4s, scores the events against the held-out videos' known
events and points at every file it wrote. It lives in ``vce.export`` because it uses every layer.
Each step prints the command-line equivalent, so the demo doubles as a walk-through.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vce.runtime.cli import run_argv
from vce.runtime.cliapp import VCETyper, command_argv
from vce.runtime.errors import VCEError, run_cli
from vce.runtime.run import RunOptions
from vce.train.fit_config import FitConfig

app = VCETyper(help="The whole toolkit end to end on synthetic data, on a CPU, in a few minutes.")
console = Console(highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick()`` is the configuration the tests run."""

    # many short videos rather than a few long ones: more pathology instances to learn from, and
    # enough validation videos that every class has support when thresholds are calibrated; every
    # other training frame (consecutive frames are near duplicates), so more epochs fit the time.
    # 16 epochs: with 12 the first held-out video's mAP@0.5 was 0.80 (seed 0) and 0.73 with ATen's
    # default kernels; with 16, 0.92 (2-core AVX2 EPYC), and 0.84 as the mean over 4 held-out videos
    train_videos: int = 40  # of which `val_videos` are validation (calibration) videos
    val_videos: int = 8
    frames: int = 120
    size: int = 224
    epochs: int = 16
    #: validate after epochs 8 and 16 only: the weights are the same, 2 s less per skipped epoch
    val_every: int = 8
    batch_size: int = 32
    lr: float = 3e-3
    mixup_alpha: float = 0.0
    stride: int = 2
    seed: int = 0
    #: JPEG frames: ~10x faster to write and ~3x to read than PNG, ~4x smaller on disk
    image_format: str = "jpg"
    #: held-out MP4 videos scored at the end: the temporal mAP of one 120-frame video went from
    #: 0.92 to 0.71 with float rounding alone (same seed, other CPU kernels), the mean over 4 from
    #: 0.84 to 0.74; each video costs about a second to make and to run
    heldout_videos: int = 4
    #: ``small`` is ``tiny`` with a 128-wide embedding and a linear head: a random-init ViT this
    #: small learns the synthetic pathologies in CPU minutes only with that width and a light head
    model: str = "small"

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(
            train_videos=3, val_videos=2, frames=160, epochs=2, batch_size=32, stride=1, heldout_videos=1
        )


@dataclass
class DemoResult:
    out: Path
    map50: float
    map95: float
    val_macro_ap: float
    val_prevalence: float
    seconds: float
    steps: dict[str, float]
    files: dict[str, Path]


HELDOUT = "heldout_000"


@dataclass(frozen=True)
class Step:
    """One step of the demo: what it does, the command line that does the same, and the call that runs.

    ``argv`` is built from the very values ``call`` runs with (``fit_argv``, ``command_argv``), so the
    printed command cannot drift from what the demo did (tests/export/test_demo.py parses each one
    with the real command line and compares).
    """

    name: str
    argv: tuple[str, ...]  # empty: no command-line equivalent, ``note`` says what it does
    call: Callable[[], Any]
    note: str = ""

    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class DemoFolders:
    """Where each step writes, under the demo's folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def heldout(self) -> Path:
        return self.root / "heldout"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def heldout_mp4s(self, cfg: DemoConfig) -> list[Path]:
        """The held-out MP4 files :func:`_write_heldout` writes."""
        return [self.heldout / "videos" / f"heldout_{i:03d}.mp4" for i in range(cfg.heldout_videos)]


def fit_config(cfg: DemoConfig, folders: DemoFolders) -> FitConfig:
    """The training the demo runs: the last ``val_videos`` synthetic videos validate."""
    from vce.train.synth import video_id

    val_ids = [video_id(i) for i in range(cfg.train_videos - cfg.val_videos, cfg.train_videos)]
    return FitConfig(
        data=str(folders.data),
        out=str(folders.run),
        model=cfg.model,
        variant="paper",
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        mixup_alpha=cfg.mixup_alpha,
        backbone_lr_mult=1.0,
        stride=cfg.stride,
        val_stride=1,
        val_every=cfg.val_every,
        val_videos=val_ids,
        ema_decay=0.0,
        seed=cfg.seed,
        progress=True,
    )


def demo_steps(cfg: DemoConfig, folders: DemoFolders) -> dict[str, Step]:
    """Every step of the demo, in order, with its command-line equivalent (nothing runs here)."""
    from vce.calibration import calibrate, groundtruth, metric
    from vce.calibration.cli import calibrate_app, eval_app
    from vce.export.cli import app as export_app
    from vce.runtime import run as run_module
    from vce.train import synth, trainer
    from vce.train.cli import app as train_app
    from vce.train.cli import fit_argv

    f = folders
    dataset = {
        "out": f.data, "videos": cfg.train_videos, "frames": cfg.frames, "seed": cfg.seed, "size": cfg.size,
        "image_format": cfg.image_format,
    }  # fmt: skip
    training = fit_config(cfg, f)
    export = {"checkpoint": str(f.run), "output": f.bundle}
    calibration = {
        "frames_csv": f.run / "val_probs.csv", "labels": f.data / "labels", "bundle": f.bundle,
        "folds": 0 if cfg.val_videos < 2 else 2,
    }  # fmt: skip
    mp4s = f.heldout_mp4s(cfg)
    options = RunOptions(backend="ort-cpu")
    gt = {"labels_dir": f.heldout / "labels", "output": f.heldout / "gt.json"}
    score = {"pred": f.results / "events.json", "gt": gt["output"]}
    steps = [
        Step(
            "synthetic dataset",
            ("vce-train", *command_argv(train_app, "synth", dataset)),
            lambda: synth.write_dataset(**dataset),
        ),
        Step(
            "held-out MP4 videos",
            (),
            lambda: _write_heldout(f.heldout, cfg),
            f"({cfg.heldout_videos} more synthetic video(s), as heldout_000.mp4 ...)",
        ),
        Step(
            "train the small differential-attention model (CPU)",
            ("vce-train", *fit_argv(training)),
            lambda: trainer.fit(training),
        ),
        Step(
            "export the ONNX bundle",
            ("vce-export", *command_argv(export_app, "onnx", export)),
            lambda: _export(export["checkpoint"], export["output"]),
        ),
        Step(
            "calibrate thresholds and post-processing on the validation videos",
            ("vce-calibrate", *command_argv(calibrate_app, "fit", calibration)),
            lambda: calibrate.fit_bundle(
                calibration["frames_csv"],
                calibration["labels"],
                calibration["bundle"],
                folds=calibration["folds"],
            ),
        ),
        Step(
            "run the bundle on the held-out MP4s",
            ("vce-run", *run_argv(mp4s, f.bundle, f.results, options)),
            lambda: run_module.run(mp4s, f.bundle, f.results, options),
        ),
        Step(
            "ground truth of the held-out video",
            ("vce-eval", *command_argv(eval_app, "gt", gt)),
            lambda: groundtruth.build_ground_truth(**gt),
        ),
        Step(
            "score the events (temporal mAP)",
            ("vce-eval", *command_argv(eval_app, "score", score)),
            lambda: metric.score_files(score["pred"], score["gt"]),
        ),
    ]
    keys = ("synth", "heldout", "fit", "export", "calibrate", "run", "gt", "score")
    return dict(zip(keys, steps, strict=True))


def _run_step(timings: dict[str, float], step: Step) -> Any:
    """Print the step and its command line, run it, time it."""
    console.print(f"[bold cyan]>[/] {step.name}   [dim]$ {step.command() if step.argv else step.note}[/]")
    t0 = time.perf_counter()
    result = step.call()
    timings[step.name] = time.perf_counter() - t0
    console.print(f"  [dim]done in {timings[step.name]:.1f} s[/]")
    return result


def _export(run_dir: Path, bundle_dir: Path) -> Any:
    """``vce-export onnx RUN -o BUNDLE``, with the model's identity (its weights' sha256) recorded."""
    from vce.export.bundle_io import write_bundle
    from vce.train.factory import resolve_model

    model, info = resolve_model(str(run_dir))
    return write_bundle(model, bundle_dir, model_info=info)


def _write_heldout(root: Path, cfg: DemoConfig) -> list[Path]:
    """Held-out synthetic videos (another seed) as MP4 + label CSV, named ``heldout_000``, ``_001``..."""
    from vce.train.synth import write_dataset

    tmp = root / ".heldout-build"
    shutil.rmtree(tmp, ignore_errors=True)
    ids = write_dataset(
        tmp, videos=cfg.heldout_videos, frames=cfg.frames, seed=cfg.seed + 1000, mp4=True, size=cfg.size,
        image_format="jpg",
    )  # fmt: skip
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    videos = []
    for i, vid in enumerate(ids):
        name = f"heldout_{i:03d}"
        os.replace(tmp / "videos" / f"{vid}.mp4", root / "videos" / f"{name}.mp4")
        os.replace(tmp / "labels" / f"{vid}.csv", root / "labels" / f"{name}.csv")
        videos.append(root / "videos" / f"{name}.mp4")
    shutil.rmtree(tmp, ignore_errors=True)
    return videos


#: bytes per pixel of a synthetic frame file, measured on 224-px frames (JPEG q95: 20.6 KB, PNG 80 KB)
_BYTES_PER_PIXEL = {"jpg": 0.42, "png": 1.64}


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def run_demo(
    out: str | os.PathLike[str], cfg: DemoConfig | None = None, *, keep_frames: bool = False
) -> DemoResult:
    """Run every step of the demo into ``out`` (replaced if it holds an earlier demo).

    The training frames are the bulk of what the demo writes; they are deleted once the model is
    trained unless ``keep_frames`` (the labels, the run, the bundle and the results stay).
    """
    cfg = cfg or DemoConfig()
    folders = DemoFolders(Path(out))
    _prepare_folder(folders.root)
    steps = demo_steps(cfg, folders)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    _announce(folders.root, cfg, keep_frames)
    _run_step(timings, steps["synth"])
    mp4s = _run_step(timings, steps["heldout"])
    assert mp4s == folders.heldout_mp4s(cfg), "the vce-run step runs the files _write_heldout wrote"
    fitted = _run_step(timings, steps["fit"])
    console.print(
        f"  validation frame-level macro AP {fitted.val_macro_ap:.3f} (label prevalence, i.e. chance: {fitted.val_prevalence:.3f})"
    )
    if not keep_frames:  # everything after this reads the labels, the run folder and the held-out MP4
        shutil.rmtree(folders.data / "frames")
        console.print(f"  deleted the training frames {folders.data / 'frames'} (--keep-frames keeps them)")
    _run_step(timings, steps["export"])
    best = _run_step(timings, steps["calibrate"]).after.config
    console.print(
        f"  chosen: median {best.median}, min run {best.min_run}, max gap {best.max_gap}, grouping {best.grouping}"
    )
    ran = _run_step(timings, steps["run"])
    gt = _run_step(timings, steps["gt"])
    overall = _run_step(timings, steps["score"]).overall
    seconds = time.perf_counter() - start
    result = DemoResult(
        out=folders.root,
        map50=float(overall["mAP@0.5"]),
        map95=float(overall["mAP@0.95"]),
        val_macro_ap=float(fitted.val_macro_ap),
        val_prevalence=float(fitted.val_prevalence),
        seconds=seconds,
        steps=timings,
        files=_written_files(folders, gt),
    )
    _print_result(result, ran, len(mp4s))
    return result


def _prepare_folder(root: Path) -> None:
    """Empty ``root`` for the demo: refused unless new, empty or an earlier demo's folder."""
    marker = root / ".vce-demo"
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise VCEError(
            f"{root} exists and is not an earlier demo folder; pass --out with a new or empty folder"
        )
    shutil.rmtree(root, ignore_errors=True)
    try:
        root.mkdir(parents=True)
        marker.write_text("written by vce-demo\n")
    except OSError as exc:
        raise VCEError(f"cannot create {root}: {exc.strerror or exc}; pass a writable --out folder") from exc


def _announce(root: Path, cfg: DemoConfig, keep_frames: bool) -> None:
    """Say up front how much the demo writes, and that the training frames go once the model is trained."""
    frames_mb = (
        cfg.train_videos * cfg.frames * cfg.size**2 * _BYTES_PER_PIXEL.get(cfg.image_format, 3.0) / 1e6
    )
    console.print(
        f"vce-demo writes into {root}/: about {frames_mb:.0f} MB of training frames, "
        + (
            "kept (--keep-frames)"
            if keep_frames
            else "deleted once the model is trained (--keep-frames keeps them)"
        )
        + ", and a few MB of results"
    )


def _written_files(folders: DemoFolders, gt: Path) -> dict[str, Path]:
    return {
        "dataset": folders.data,
        "held-out videos": folders.heldout / "videos",
        "checkpoint": folders.run,
        "bundle": folders.bundle,
        "events": folders.results / "events.json",
        "per-frame probabilities": folders.results / "frames.csv",
        "timeline": folders.results / f"{HELDOUT}_timeline.png",  # one per video
        "ground truth": gt,
    }


def _print_result(result: DemoResult, ran: Any, videos: int) -> None:
    console.print(
        f"\n[bold]vce-demo finished in {result.seconds:.0f} s[/] ({ran.frames} held-out frames on {ran.backend}); "
        f"{_folder_bytes(result.out) / 1e6:.0f} MB in {result.out}/"
    )
    for name, path in result.files.items():
        console.print(f"  {name:<24} {path}")
    console.print(
        f"[bold green]held-out temporal mAP@0.5 = {result.map50:.4f}   mAP@0.95 = {result.map95:.4f}[/]"
        f" (mean over {videos} held-out video(s))"
    )


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="folder for everything the demo writes")] = Path(
        "vce-demo"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="a smaller, faster configuration (what the tests run)")
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", help="seed of the synthetic data and the training")
    ] = DemoConfig.seed,
    keep_frames: Annotated[
        bool, typer.Option("--keep-frames", help="keep the training frames (about 100 MB) after training")
    ] = False,
) -> None:
    """Synthetic data -> training -> ONNX bundle -> calibration -> vce-run on a held-out MP4 -> temporal mAP."""
    base = DemoConfig.quick() if quick else DemoConfig()
    run_demo(out, DemoConfig(**{**base.__dict__, "seed": seed}), keep_frames=keep_frames)


def main() -> None:
    run_cli(app, "vce-demo")
