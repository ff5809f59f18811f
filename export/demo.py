"""``vce-demo``: the whole toolkit end to end on synthetic data, on a CPU, in a few minutes.

Generates a synthetic capsule dataset (training videos as frame folders + held-out videos as MP4),
trains a small differential-attention model, exports the bundle, calibrates it on the validation
videos, runs ``vce-run`` on the held-out MP4s, scores the events against the held-out videos' known
events and points at every file it wrote. It lives in ``vce.export`` because it uses every layer.
Each step prints the command-line equivalent, so the demo doubles as a walk-through.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli

app = VCETyper()
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


def _step(steps: dict[str, float], name: str, cli: str, fn: Callable[[], Any]) -> Any:
    console.print(f"[bold cyan]>[/] {name}   [dim]$ {cli}[/]")
    t0 = time.perf_counter()
    result = fn()
    steps[name] = time.perf_counter() - t0
    console.print(f"  [dim]done in {steps[name]:.1f} s[/]")
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
    from vce.calibration.calibrate import fit_bundle
    from vce.calibration.groundtruth import build_ground_truth
    from vce.calibration.metric import score_files
    from vce.runtime.run import RunOptions, run
    from vce.train.synth import video_id, write_dataset
    from vce.train.trainer import FitConfig, fit

    cfg = cfg or DemoConfig()
    root = Path(out)
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

    data, heldout = root / "data", root / "heldout"
    run_dir, bundle_dir, results = root / "run", root / "bundle", root / "results"
    val_ids = [video_id(i) for i in range(cfg.train_videos - cfg.val_videos, cfg.train_videos)]
    steps: dict[str, float] = {}
    start = time.perf_counter()
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

    _step(
        steps,
        "synthetic dataset",
        f"vce-train synth {data} --videos {cfg.train_videos} --frames {cfg.frames} --seed {cfg.seed} --size {cfg.size} --format {cfg.image_format}",
        lambda: write_dataset(
            data, cfg.train_videos, cfg.frames, cfg.seed, size=cfg.size, image_format=cfg.image_format
        ),
    )
    mp4s = _step(
        steps,
        "held-out MP4 videos",
        f"({cfg.heldout_videos} more synthetic video(s), as heldout_000.mp4 ...)",
        lambda: _write_heldout(heldout, cfg),
    )
    fit_cfg = FitConfig(
        data=str(data),
        out=str(run_dir),
        model=cfg.model,
        variant="paper",
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        mixup_alpha=cfg.mixup_alpha,
        backbone_lr_mult=1.0,
        stride=cfg.stride,
        val_stride=1,
        val_videos=val_ids,
        ema_decay=0.0,
        seed=cfg.seed,
        progress=True,
    )
    fitted = _step(
        steps,
        "train the small differential-attention model (CPU)",
        f"vce-train fit --data {data} --model {cfg.model} --variant paper --epochs {cfg.epochs} --batch-size {cfg.batch_size} "
        f"--lr {cfg.lr} --mixup-alpha {cfg.mixup_alpha} --backbone-lr-mult 1 --stride {cfg.stride} --val-stride 1 --ema 0 --val-videos {','.join(val_ids)} --out {run_dir}",
        lambda: fit(fit_cfg),
    )
    console.print(
        f"  validation frame-level macro AP {fitted.val_macro_ap:.3f} (label prevalence, i.e. chance: {fitted.val_prevalence:.3f})"
    )
    if not keep_frames:  # everything after this reads the labels, the run folder and the held-out MP4
        shutil.rmtree(data / "frames")
        console.print(f"  deleted the training frames {data / 'frames'} (--keep-frames keeps them)")
    _step(
        steps,
        "export the ONNX bundle",
        f"vce-export onnx {run_dir} -o {bundle_dir}",
        lambda: _export(run_dir, bundle_dir),
    )
    calibration = _step(
        steps,
        "calibrate thresholds and post-processing on the validation videos",
        f"vce-calibrate fit {run_dir / 'val_probs.csv'} --labels {data / 'labels'} --bundle {bundle_dir}",
        lambda: fit_bundle(
            run_dir / "val_probs.csv", data / "labels", bundle_dir, folds=0 if cfg.val_videos < 2 else 2
        ),
    )
    best = calibration.after.config
    console.print(
        f"  chosen: median {best.median}, min run {best.min_run}, max gap {best.max_gap}, grouping {best.grouping}"
    )
    ran = _step(
        steps,
        "run the bundle on the held-out MP4s",
        f"vce-run {heldout / 'videos'} --bundle {bundle_dir} -o {results}",
        lambda: run(mp4s, bundle_dir, results, RunOptions(backend="ort-cpu")),
    )
    gt = _step(
        steps,
        "ground truth of the held-out video",
        f"vce-eval gt {heldout / 'labels'} -o {heldout / 'gt.json'}",
        lambda: build_ground_truth(heldout / "labels", heldout / "gt.json"),
    )
    score = _step(
        steps,
        "score the events (temporal mAP)",
        f"vce-eval score {results / 'events.json'} {gt}",
        lambda: score_files(results / "events.json", gt),
    )
    overall = score.overall
    seconds = time.perf_counter() - start
    files = {
        "dataset": data,
        "held-out videos": heldout / "videos",
        "checkpoint": run_dir,
        "bundle": bundle_dir,
        "events": results / "events.json",
        "per-frame probabilities": results / "frames.csv",
        "timeline": results / f"{HELDOUT}_timeline.png",  # one per video
        "ground truth": gt,
    }
    console.print(
        f"\n[bold]vce-demo finished in {seconds:.0f} s[/] ({ran.frames} held-out frames on {ran.backend}); "
        f"{_folder_bytes(root) / 1e6:.0f} MB in {root}/"
    )
    for name, path in files.items():
        console.print(f"  {name:<24} {path}")
    result = DemoResult(
        out=root,
        map50=float(overall["mAP@0.5"]),
        map95=float(overall["mAP@0.95"]),
        val_macro_ap=float(fitted.val_macro_ap),
        val_prevalence=float(fitted.val_prevalence),
        seconds=seconds,
        steps=steps,
        files=files,
    )
    console.print(
        f"[bold green]held-out temporal mAP@0.5 = {result.map50:.4f}   mAP@0.95 = {result.map95:.4f}[/]"
        f" (mean over {len(mp4s)} held-out video(s))"
    )
    return result


@app.command()
def demo(
    out: Path = typer.Option(Path("vce-demo"), "--out", help="folder for everything the demo writes"),
    quick: bool = typer.Option(False, "--quick", help="a smaller, faster configuration (what the tests run)"),
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic data and the training"),
    keep_frames: bool = typer.Option(
        False, "--keep-frames", help="keep the training frames (about 100 MB) after training"
    ),
) -> None:
    """Synthetic data -> training -> ONNX bundle -> calibration -> vce-run on a held-out MP4 -> temporal mAP."""
    base = DemoConfig.quick() if quick else DemoConfig()
    run_demo(out, DemoConfig(**{**base.__dict__, "seed": seed}), keep_frames=keep_frames)


def main() -> None:
    run_cli(app, "vce-demo")
