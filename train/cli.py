"""``vce-train``: synthetic data, training (``fit``) and per-frame prediction (``predict``).

Torch is imported only by the commands that need it, so ``vce-train synth`` runs without it. The
defaults of ``fit`` are :class:`~vce.train.fit_config.FitConfig`'s, read from it, and
:func:`fit_argv` spells a ``FitConfig`` as the ``vce-train fit`` arguments that make it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from vce.runtime.cliapp import VCETyper, command_argv
from vce.runtime.errors import VCEError, run_cli
from vce.train.config import Head, Variant, available_configs
from vce.train.fit_config import FitConfig, Sampler
from vce.train.synth import ImageFormat

app = VCETyper(help="Train the differential-attention BiomedCLIP classifier on capsule-endoscopy videos.")

F = FitConfig  # the defaults of `fit`
#: FitConfig fields whose `vce-train fit` option has another name
_OPTION_OF_FIELD = {"ema_decay": "ema"}
#: FitConfig fields without a `vce-train fit` option (fit_argv refuses other values than the default)
_NO_OPTION = {"model_overrides", "div_factor", "final_div_factor", "progress"}


@app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Argument(help="output folder (frames/, labels/, videos/, synth.json)")],
    videos: Annotated[int, typer.Option("--videos", help="number of videos")] = 4,
    frames: Annotated[int, typer.Option("--frames", help="frames per video")] = 600,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same data)")] = 0,
    mp4: Annotated[bool, typer.Option("--mp4", help="also write OUT/videos/<video>.mp4")] = False,
    size: Annotated[int, typer.Option("--size", help="frame size in pixels (square)")] = 256,
    fps: Annotated[float, typer.Option("--fps", help="frame rate of the MP4 files")] = 10.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace videos that already exist in OUT")
    ] = False,
    live: Annotated[
        str | None,
        typer.Option(
            "--live",
            help="then replay the first video into this folder at --fps like a recorder (- : stdout)",
        ),
    ] = None,
    pause: Annotated[
        float, typer.Option("--pause", help="with --live: the recorder pauses this long mid-video")
    ] = 0.0,
    image_format: Annotated[
        ImageFormat,
        typer.Option(
            "--format", help="frame files: png (lossless) | jpg (quality 95: ~10x faster, ~4x smaller)"
        ),
    ] = ImageFormat.PNG,
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
        image_format=image_format.value,
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


@app.command("fit")
def fit_command(
    data: Annotated[
        Path | None, typer.Option("--data", help="dataset folder (Galar layout: frames/ + labels/)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="run folder for the checkpoint and val_probs.csv")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help=f"model config: {' | '.join(available_configs())}")
    ] = F.model,
    variant: Annotated[Variant, typer.Option("--variant", help="attention")] = Variant(F.variant),
    head: Annotated[Head | None, typer.Option("--head", help="head (default: the config's)")] = None,
    pretrained: Annotated[
        str | None,
        typer.Option("--pretrained", help="BiomedCLIP folder, local-dir:/path, hf-hub:name or a checkpoint"),
    ] = F.pretrained,
    contrastive: Annotated[
        bool, typer.Option("--contrastive", help="contrastive branch (needs text features)")
    ] = F.contrastive,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs", help=f"total epochs of the schedule [default: {F.epochs}]", show_default=False
        ),
    ] = None,
    stop_after: Annotated[
        int | None,
        typer.Option(
            "--stop-after", help="stop after this many epochs of the schedule (continue with --resume)"
        ),
    ] = F.stop_after,
    batch_size: Annotated[int, typer.Option("--batch-size")] = F.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="max lr of the head (OneCycle)")] = F.lr,
    backbone_lr_mult: Annotated[float, typer.Option("--backbone-lr-mult")] = F.backbone_lr_mult,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = F.weight_decay,
    pct_start: Annotated[float, typer.Option("--pct-start")] = F.pct_start,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="max gradient norm (0: off)")] = F.grad_clip,
    ema: Annotated[float, typer.Option("--ema", help="EMA decay (0: off)")] = F.ema_decay,
    ema_warmup: Annotated[
        bool, typer.Option("--ema-warmup/--no-ema-warmup", help="decay min(d, (1+n)/(10+n))")
    ] = F.ema_warmup,
    mixup_alpha: Annotated[float, typer.Option("--mixup-alpha", help="0: off")] = F.mixup_alpha,
    mixup_floor: Annotated[float, typer.Option("--mixup-floor")] = F.mixup_floor,
    gamma_pos: Annotated[float, typer.Option("--gamma-pos")] = F.gamma_pos,
    gamma_neg: Annotated[float, typer.Option("--gamma-neg")] = F.gamma_neg,
    clip: Annotated[float, typer.Option("--clip", help="asymmetric probability margin")] = F.clip,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing")] = F.label_smoothing,
    contrastive_weight: Annotated[float, typer.Option("--contrastive-weight")] = F.contrastive_weight,
    sampler: Annotated[
        Sampler, typer.Option("--sampler", help="sqrt (frequency-weighted) | uniform")
    ] = Sampler(F.sampler),
    stride: Annotated[int, typer.Option("--stride", help="train on every Nth frame")] = F.stride,
    val_stride: Annotated[
        int, typer.Option("--val-stride", help="validate on every Nth frame")
    ] = F.val_stride,
    val_every: Annotated[
        int,
        typer.Option(
            "--val-every",
            help="validate and write the run folder every N epochs and after the last (resume restarts there)",
        ),
    ] = F.val_every,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="share of videos held out")
    ] = F.val_fraction,
    val_videos: Annotated[
        str | None, typer.Option("--val-videos", help="comma-separated validation video ids")
    ] = None,
    augment: Annotated[bool, typer.Option("--augment/--no-augment")] = F.augment,
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="mixed precision on CUDA (always fp32 on CPU)")
    ] = F.amp,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", help=f"data-loader worker processes [default: {F.workers}]", show_default=False
        ),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="folder for the decoded-frame cache (default: RAM)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = F.seed,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu | cuda | cuda:N (default: cuda if present)")
    ] = F.device,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="continue the run in this folder (its saved settings; --epochs may extend it)"
        ),
    ] = None,
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="deterministic algorithms (slower)")
    ] = F.deterministic,
) -> None:
    """Train; writes RUN/model.safetensors, model_config.json, train_state.pt, val_probs.csv, val_labels.csv."""
    if data is not None and not data.is_dir():  # before importing torch: a typo fails at once
        raise VCEError(f"{data}: no such data folder; create one with `vce-train synth {data}`")
    from vce.train.trainer import fit

    if resume is not None:
        if out is not None and out.resolve() != resume.resolve():
            raise VCEError(
                "--resume continues the run in its own folder; leave out --out (or give the same folder)"
            )
        given = {"epochs": epochs, "stop_after": stop_after, "workers": workers, "device": device}
        given["cache"] = str(cache) if cache else None
        _report(fit(resume=str(resume), overrides={k: v for k, v in given.items() if v is not None}))
        return
    if data is None or out is None:
        raise VCEError("fit needs --data DIR and --out RUN (or --resume RUN)")
    # every FitConfig field that has an option takes the option's value (fit_argv is the inverse)
    options = dict(locals())
    options.update(
        data=str(data),
        out=str(out),
        variant=variant.value,
        head=head.value if head is not None else None,
        sampler=sampler.value,
        epochs=F.epochs if epochs is None else epochs,
        workers=F.workers if workers is None else workers,
        cache=str(cache) if cache else None,
        val_videos=[v.strip() for v in val_videos.split(",") if v.strip()] if val_videos else None,
    )
    with_option = [f.name for f in dataclasses.fields(FitConfig) if f.name not in _NO_OPTION]
    cfg = FitConfig(**{name: options[_OPTION_OF_FIELD.get(name, name)] for name in with_option})
    _report(fit(cfg))


def fit_argv(cfg: FitConfig) -> list[str]:
    """The ``vce-train fit`` arguments that make ``cfg`` (fields at their default are left out)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(FitConfig):
        value = getattr(cfg, field.name)
        default = (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        )
        if value == default:
            continue
        if field.name in _NO_OPTION:
            raise ValueError(f"FitConfig.{field.name} has no vce-train fit option; it cannot be {value!r}")
        values[_OPTION_OF_FIELD.get(field.name, field.name)] = value
    return command_argv(app, "fit", values)


def _report(result: object) -> None:
    if getattr(result, "is_main", True):
        typer.echo(
            f"done: {result.epochs_run} epoch(s), validation macro AP {result.val_macro_ap:.4f} "  # type: ignore[attr-defined]
            f"(chance {result.val_prevalence:.4f}); run folder {result.run}"  # type: ignore[attr-defined]
        )


@app.command("predict")
def predict_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="run folder or model.safetensors")],
    data: Annotated[Path, typer.Option("--data", help="dataset folder or one frame folder")],
    out: Annotated[Path, typer.Option("--out", help="per-frame probability CSV to write")],
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    stride: Annotated[int, typer.Option("--stride", help="predict every Nth frame")] = 1,
    device: Annotated[str | None, typer.Option("--device")] = None,
    videos: Annotated[
        str | None, typer.Option("--videos", help="comma-separated video ids (default: all)")
    ] = None,
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


__all__ = ["VCEError", "app", "fit_argv", "main"]

if __name__ == "__main__":  # `torchrun -m vce.train.cli fit ...`
    main()
