"""``vce-train``: synthetic data, training (``fit``) and per-frame prediction (``predict``).

Torch is imported only by the commands that need it, so ``vce-train synth`` runs without it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli
from vce.train.config import available_configs

app = VCETyper(
    no_args_is_help=True,
    help="Train the differential-attention BiomedCLIP classifier on capsule-endoscopy videos.",
)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="output folder (frames/, labels/, videos/, synth.json)"),
    videos: int = typer.Option(4, "--videos", help="number of videos"),
    frames: int = typer.Option(600, "--frames", help="frames per video"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same data)"),
    mp4: bool = typer.Option(False, "--mp4", help="also write OUT/videos/<video>.mp4"),
    size: int = typer.Option(256, "--size", help="frame size in pixels (square)"),
    fps: float = typer.Option(10.0, "--fps", help="frame rate of the MP4 files"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace videos that already exist in OUT"),
    live: str | None = typer.Option(
        None,
        "--live",
        help="then replay the first video into this folder at --fps like a recorder (- : stdout)",
    ),
    pause: float = typer.Option(0.0, "--pause", help="with --live: the recorder pauses this long mid-video"),
    image_format: str = typer.Option(
        "png", "--format", help="frame files: png (lossless) | jpg (quality 95: ~10x faster, ~4x smaller)"
    ),
) -> None:
    """Write synthetic capsule videos in the Galar layout (numpy/OpenCV only)."""
    from vce.train.synth import write_dataset

    ids = write_dataset(
        out,
        videos,
        frames,
        seed,
        mp4=mp4,
        size=size,
        fps=fps,
        overwrite=overwrite,
        progress=live != "-",
        image_format=image_format,
    )
    typer.echo(f"wrote {len(ids)} videos x {frames} frames to {out}", err=live == "-")
    if live is not None:
        import sys

        from vce.train.recorder import record_folder, record_stream

        src, mid = out / "frames" / ids[0], frames // 2
        if live == "-":
            record_stream(src, sys.stdout.buffer, fps, pause_at=mid, pause=pause)
        else:
            typer.echo(f"recording {ids[0]} into {live} at {fps} frames/s")
            record_folder(src, live, fps, pause_at=mid, pause=pause)


@app.command()
def fit(
    data: Path | None = typer.Option(None, "--data", help="dataset folder (Galar layout: frames/ + labels/)"),
    out: Path | None = typer.Option(None, "--out", help="run folder for the checkpoint and val_probs.csv"),
    model: str = typer.Option(
        "biomedclip", "--model", help=f"model config: {' | '.join(available_configs())}"
    ),
    variant: str = typer.Option("paper", "--variant", help="attention: paper | diff | none"),
    head: str | None = typer.Option(None, "--head", help="head: excitation | linear (config default)"),
    pretrained: str | None = typer.Option(
        None, "--pretrained", help="BiomedCLIP folder, local-dir:/path, hf-hub:name or a checkpoint"
    ),
    contrastive: bool = typer.Option(False, "--contrastive", help="contrastive branch (needs text features)"),
    epochs: int | None = typer.Option(None, "--epochs", help="total epochs of the schedule [default: 5]"),
    stop_after: int | None = typer.Option(
        None, "--stop-after", help="stop after this many epochs of the schedule (continue with --resume)"
    ),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(3e-4, "--lr", help="max lr of the head (OneCycle)"),
    backbone_lr_mult: float = typer.Option(0.3, "--backbone-lr-mult"),
    weight_decay: float = typer.Option(5e-4, "--weight-decay"),
    pct_start: float = typer.Option(0.15, "--pct-start"),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="max gradient norm (0: off)"),
    ema: float = typer.Option(0.999, "--ema", help="EMA decay (0: off)"),
    ema_warmup: bool = typer.Option(True, "--ema-warmup/--no-ema-warmup", help="decay min(d, (1+n)/(10+n))"),
    mixup_alpha: float = typer.Option(0.3, "--mixup-alpha", help="0: off"),
    mixup_floor: float = typer.Option(0.5, "--mixup-floor"),
    gamma_pos: float = typer.Option(1.0, "--gamma-pos"),
    gamma_neg: float = typer.Option(4.0, "--gamma-neg"),
    clip: float = typer.Option(0.05, "--clip", help="asymmetric probability margin"),
    label_smoothing: float = typer.Option(0.05, "--label-smoothing"),
    contrastive_weight: float = typer.Option(0.4, "--contrastive-weight"),
    sampler: str = typer.Option("sqrt", "--sampler", help="sqrt (frequency-weighted) | uniform"),
    stride: int = typer.Option(5, "--stride", help="train on every Nth frame"),
    val_stride: int = typer.Option(5, "--val-stride", help="validate on every Nth frame"),
    val_fraction: float = typer.Option(0.15, "--val-fraction", help="share of videos held out"),
    val_videos: str | None = typer.Option(None, "--val-videos", help="comma-separated validation video ids"),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="mixed precision on CUDA (always fp32 on CPU)"),
    workers: int | None = typer.Option(None, "--workers", help="data-loader worker processes [default: 0]"),
    cache: Path | None = typer.Option(
        None, "--cache", help="folder for the decoded-frame cache (default: RAM)"
    ),
    seed: int = typer.Option(42, "--seed"),
    device: str | None = typer.Option(
        None, "--device", help="cpu | cuda | cuda:N (default: cuda if present)"
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="continue the run in this folder (its saved settings; --epochs may extend it)"
    ),
    deterministic: bool = typer.Option(False, "--deterministic", help="deterministic algorithms (slower)"),
) -> None:
    """Train; writes RUN/model.safetensors, model_config.json, train_state.pt, val_probs.csv, val_labels.csv."""
    if data is not None and not data.is_dir():  # before importing torch: a typo fails at once
        raise VCEError(f"{data}: no such data folder; create one with `vce-train synth {data}`")
    from vce.train.trainer import FitConfig
    from vce.train.trainer import fit as run_fit

    if resume is not None:
        if out is not None and out.resolve() != resume.resolve():
            raise VCEError(
                "--resume continues the run in its own folder; leave out --out (or give the same folder)"
            )
        given = {"epochs": epochs, "stop_after": stop_after, "workers": workers, "device": device}
        given["cache"] = str(cache) if cache else None
        result = run_fit(resume=str(resume), overrides={k: v for k, v in given.items() if v is not None})
        _report(result)
        return
    if data is None or out is None:
        raise VCEError("fit needs --data DIR and --out RUN (or --resume RUN)")
    cfg = FitConfig(
        data=str(data),
        out=str(out),
        model=model,
        variant=variant,
        head=head,
        pretrained=pretrained,
        contrastive=contrastive,
        epochs=5 if epochs is None else epochs,
        stop_after=stop_after,
        batch_size=batch_size,
        lr=lr,
        backbone_lr_mult=backbone_lr_mult,
        weight_decay=weight_decay,
        pct_start=pct_start,
        grad_clip=grad_clip,
        ema_decay=ema,
        ema_warmup=ema_warmup,
        mixup_alpha=mixup_alpha,
        mixup_floor=mixup_floor,
        gamma_pos=gamma_pos,
        gamma_neg=gamma_neg,
        clip=clip,
        label_smoothing=label_smoothing,
        contrastive_weight=contrastive_weight,
        sampler=sampler,
        stride=stride,
        val_stride=val_stride,
        val_fraction=val_fraction,
        val_videos=[v.strip() for v in val_videos.split(",") if v.strip()] if val_videos else None,
        augment=augment,
        amp=amp,
        workers=workers or 0,
        cache=str(cache) if cache else None,
        seed=seed,
        device=device,
        deterministic=deterministic,
    )
    _report(run_fit(cfg))


def _report(result: object) -> None:
    if getattr(result, "is_main", True):
        typer.echo(
            f"done: {result.epochs_run} epoch(s), validation macro AP {result.val_macro_ap:.4f} "  # type: ignore[attr-defined]
            f"(chance {result.val_prevalence:.4f}); run folder {result.run}"  # type: ignore[attr-defined]
        )


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="run folder or model.safetensors"),
    data: Path = typer.Option(..., "--data", help="dataset folder or one frame folder"),
    out: Path = typer.Option(..., "--out", help="per-frame probability CSV to write"),
    batch_size: int = typer.Option(64, "--batch-size"),
    stride: int = typer.Option(1, "--stride", help="predict every Nth frame"),
    device: str | None = typer.Option(None, "--device"),
    videos: str | None = typer.Option(None, "--videos", help="comma-separated video ids (default: all)"),
) -> None:
    """Per-frame probabilities (video, frame, 17 labels) for every frame folder under DATA."""
    from vce.train.predict import predict_dataset

    wanted = [v.strip() for v in videos.split(",") if v.strip()] if videos else None
    n = predict_dataset(
        checkpoint, data, out, batch_size=batch_size, stride=stride, device=device, videos=wanted
    )
    typer.echo(f"wrote {n} frames to {out}")


def main() -> None:
    run_cli(app, "vce-train")


__all__ = ["VCEError", "app", "main"]

if __name__ == "__main__":  # `torchrun -m vce.train.cli fit ...`
    main()
