"""The training loop behind ``vce-train fit``: the paper's recipe, resumable, single process or DDP.

Recipe (the defaults of ``FitConfig``): asymmetric focal loss + 0.4 x contrastive BCE, sqrt-frequency
weighted sampling with replacement, mixup (alpha 0.3, factor floored at 0.5), AdamW (wd 5e-4) with
OneCycle (max lr 3e-4 for the head, 0.3x for the backbone, pct_start 0.15, div 10, final div 100,
cosine), AMP (fp16 + GradScaler) on CUDA and fp32 on CPU, gradient clipping at 1.0, EMA 0.999,
batch 128, 5 epochs, every 5th frame, seed 42. The lambda parameters of the differential attention
and the logit scale train with the head's learning rate (as in the paper's code).

Outputs in the run folder, rewritten after every epoch (each file atomically):

- ``model.safetensors`` + ``model_config.json``: the weights to deploy (EMA weights when EMA is on);
- ``train_state.pt``: live weights, optimiser, scheduler, scaler, EMA, history, config and epoch for
  ``--resume`` (plain tensors and containers: ``torch.load(weights_only=True)`` reads it);
- ``val_probs.csv`` / ``val_labels.csv``: per-frame validation probabilities and 0/1 labels
  (``vce.runtime.formats.framescsv``), the input of ``vce-calibrate``;
- ``train_log.json``: the per-epoch history (losses, frame-level macro AP, prevalence, lr, timings).

Determinism: each epoch reseeds torch from (seed, epoch, rank); the sampler, the augmentations and
mixup draw from generators seeded by (seed, epoch[, index]). Resuming after epoch k therefore
continues exactly as an uninterrupted run would (on the same device and software).

Multi-GPU: launch the same command with ``torchrun --nproc_per_node N``; ranks share the sampler's
draw (each takes every N-th index), gradients are averaged by DDP (gloo on CPU, NCCL on CUDA), and
rank 0 validates and writes the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vce.runtime.atomic import atomic_path, write_json
from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import VideoFrames, write_frames_csv
from vce.runtime.formats.provenance import make_record, write_sidecar
from vce.runtime.labels import LABELS, NUM_LABELS
from vce.runtime.preprocess import PreprocessSpec, normalise
from vce.train.augment import PAPER_AUGMENT, AugmentConfig, augment
from vce.train.data import FrameSet, find_videos, split_videos
from vce.train.ema import ModelEMA
from vce.train.fit_config import FitConfig
from vce.train.loss import CombinedLoss, build_loss
from vce.train.mixup import mixup
from vce.train.progress import LiveBar, say
from vce.train.sampler import EpochSampler, sqrt_frequency_weights

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.json"
VAL_PROBS = "val_probs.csv"
VAL_LABELS = "val_labels.csv"
STATE_VERSION = 1


@dataclass
class FitResult:
    run: Path
    epochs_run: int
    val_macro_ap: float
    val_prevalence: float
    history: list[dict[str, Any]]
    is_main: bool
    model: nn.Module | None = None


# --- distributed helpers ---------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device_hint: str | None) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    use_cuda = torch.cuda.is_available() and not (device_hint or "").startswith("cpu")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, True)


def pick_device(requested: str | None, info: DistInfo) -> torch.device:
    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise VCEError(f"--device {requested}: CUDA is not available here; use --device cpu")
        if dev.type == "cuda" and info.enabled and dev.index is None:
            dev = torch.device("cuda", info.local_rank)
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
    return torch.device("cpu")


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across runs and platforms)."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1
    )


@torch.no_grad()
def max_weight_divergence(model: nn.Module) -> float:
    """Largest |difference| of any parameter between ranks (0.0 when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return 0.0
    worst = 0.0
    for p in model.parameters():
        hi = p.detach().clone()
        lo = p.detach().clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        worst = max(worst, float((hi - lo).abs().max()) if hi.numel() else 0.0)
    return worst


# --- datasets --------------------------------------------------------------------------------------


class CropDataset(Dataset):
    """(normalised image [3, S, S], labels [17], row index) from the uint8 crop cache."""

    def __init__(
        self,
        crops: np.ndarray,
        labels: np.ndarray,
        spec: PreprocessSpec,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.crops = crops
        self.labels = np.asarray(labels, dtype=np.float32)
        self.spec = spec
        self.augment_cfg = augment_cfg
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        crop = np.asarray(self.crops[i])
        if self.augment_cfg is not None:
            crop = augment(crop, np.random.default_rng([self.seed, self.epoch, int(i)]), self.augment_cfg)
        x = normalise(crop[None], self.spec)[0]
        return torch.from_numpy(x), torch.from_numpy(self.labels[i]), int(i)


class _TrainForward(nn.Module):
    """Classifier and contrastive logits in one forward, so DDP sees every parameter it syncs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        features = self.model.forward_features(images)
        logits = self.model.head(features.float())
        return logits, self.model.contrastive_logits(features)


# --- model / optimiser -----------------------------------------------------------------------------


def build_model(cfg: FitConfig) -> nn.Module:
    from vce.train.factory import create_model

    overrides: dict[str, Any] = {"variant": cfg.variant, **cfg.model_overrides}
    if cfg.head:
        overrides["head"] = cfg.head
    if cfg.contrastive:
        overrides["contrastive"] = True
    return create_model(cfg.model, pretrained=cfg.pretrained, **overrides)


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float) -> list[dict[str, Any]]:
    """[backbone (lr x mult), head (lr)]: the image tower is the backbone, except its differential
    attention lambdas, which (with the head and logit scale) get the head's rate as in the paper."""
    backbone, head = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        in_tower = name.startswith("visual.")
        (backbone if in_tower and "lambda_" not in name else head).append(p)
    return [
        {"params": backbone, "lr": lr * backbone_lr_mult, "name": "backbone"},
        {"params": head, "lr": lr, "name": "head"},
    ]


# --- validation ------------------------------------------------------------------------------------


def macro_ap(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(frame-level macro AP over labels with positives, their mean prevalence = chance AP, per-label AP)."""
    from vce.calibration.frame_metrics import average_precision

    y = np.asarray(labels) > 0.5
    ap = np.array([average_precision(probs[:, c], y[:, c]) for c in range(y.shape[1])])
    has = y.any(axis=0)
    if not has.any():
        return float("nan"), float("nan"), ap
    return float(np.nanmean(ap[has])), float(y[:, has].mean(axis=0).mean()), ap


@torch.no_grad()
def predict_crops(
    model: nn.Module,
    crops: np.ndarray,
    spec: PreprocessSpec,
    device: torch.device,
    batch_size: int,
    *,
    amp: bool = False,
    workers: int = 0,
) -> np.ndarray:
    """Sigmoid probabilities [N, 17] of the uint8 crops (model in eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    loader = DataLoader(
        CropDataset(crops, np.zeros((len(crops), NUM_LABELS), np.float32), spec),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
    )
    out = []
    for images, _, _ in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            logits = model(images.to(device, non_blocking=True))
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, NUM_LABELS), np.float32)


def write_val_outputs(run: Path, val: FrameSet, probs: np.ndarray) -> None:
    """val_probs.csv (+ its provenance sidecar: the weights just saved in ``run``) and val_labels.csv."""
    from vce.train.checkpoint import weights_sha256

    rows = sorted(val.by_video(), key=lambda item: item[0])
    write_frames_csv(run / VAL_PROBS, [VideoFrames(v, val.frames[idx], probs[idx]) for v, idx in rows])
    model = {"weights_sha256": weights_sha256(run)}
    write_sidecar(run / VAL_PROBS, make_record(run / VAL_PROBS, made_by="vce-train fit", model=model))
    write_frames_csv(
        run / VAL_LABELS, [VideoFrames(v, val.frames[idx], val.labels[idx]) for v, idx in rows], binary=True
    )


# --- state -----------------------------------------------------------------------------------------


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(run: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(run) / STATE_FILE
    if not path.is_file():
        raise VCEError(f"{path}: no training state to resume; was {run} written by `vce-train fit`?")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise VCEError(f"{path}: unreadable training state ({exc}); start a new run") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise VCEError(f"{path}: not a vce training state of version {STATE_VERSION}")
    return state


# --- fit -------------------------------------------------------------------------------------------


def fit(
    cfg: FitConfig | None = None, *, resume: str | None = None, overrides: dict[str, Any] | None = None
) -> FitResult:
    """Train (or, with ``resume``, continue the run in that folder) and return the final metrics.

    When resuming, the saved configuration is used; ``overrides`` may change ``epochs``,
    ``stop_after``, ``workers``, ``device``, ``cache`` and ``progress``. Changing ``epochs``
    rebuilds the OneCycle schedule for the new total and continues from the saved step.
    """
    state: dict[str, Any] | None = None
    if resume is not None:
        state = load_state(resume)
        saved = FitConfig.from_dict(state["config"])
        allowed = {"epochs", "stop_after", "workers", "device", "cache", "progress"}
        bad = sorted(set(overrides or {}) - allowed)
        if bad:
            raise VCEError(f"cannot change {bad} when resuming; only {sorted(allowed)}")
        cfg = dataclasses.replace(saved, out=str(resume), **(overrides or {}))
        if (overrides or {}).get("stop_after") is None:
            cfg.stop_after = None
    elif cfg is None:
        raise VCEError("fit needs a configuration or a run folder to resume")
    info = init_distributed(cfg.device)
    try:
        return _fit(cfg, info, state)
    finally:
        if info.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _fit(cfg: FitConfig, info: DistInfo, state: dict[str, Any] | None) -> FitResult:
    """Set up, restore the saved state (resume), run the remaining epochs."""
    t = _setup_train(cfg, info)
    if state is not None:
        _resume_training(t, state)
    return _train(t, state)


@dataclass
class _Training:
    """Everything the epochs share: built by :func:`_setup_train`, restored by :func:`_resume_training`."""

    cfg: FitConfig
    info: DistInfo
    device: torch.device
    use_amp: bool
    run: Path
    show: bool
    train: FrameSet
    val: FrameSet
    spec: PreprocessSpec
    model: nn.Module
    criterion: CombinedLoss
    sampler: EpochSampler
    dataset: CropDataset
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.OneCycleLR
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    global_step: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)


def _setup_train(cfg: FitConfig, info: DistInfo) -> _Training:
    """Device, data, model, loss, loader, optimiser, schedule, scaler and EMA of a fresh run.

    The order of the steps is part of the result: the model's initial weights are drawn from
    ``torch.manual_seed(cfg.seed)`` right after the split.
    """
    device = pick_device(cfg.device, info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    use_amp = cfg.amp and device.type == "cuda"
    show = cfg.progress and info.is_main
    train, val = _split_frames(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    spec = model.config.preprocess_spec
    _decode_frames(cfg, info, train, val, spec, show)
    model.to(device)
    criterion: CombinedLoss = build_loss(
        train.labels,
        gamma_pos=cfg.gamma_pos,
        gamma_neg=cfg.gamma_neg,
        clip=cfg.clip,
        label_smoothing=cfg.label_smoothing,
        contrastive_weight=cfg.contrastive_weight,
    ).to(device)
    sampler, dataset, loader = _loader(cfg, info, train, spec, device)
    optimizer, scheduler = _optimizer(cfg, model, cfg.epochs * len(loader))
    return _Training(
        cfg=cfg,
        info=info,
        device=device,
        use_amp=use_amp,
        run=Path(cfg.out),
        show=show,
        train=train,
        val=val,
        spec=spec,
        model=model,
        criterion=criterion,
        sampler=sampler,
        dataset=dataset,
        loader=loader,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        ema=ModelEMA(model, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema_decay > 0 else None,
    )


def _loader(
    cfg: FitConfig, info: DistInfo, train: FrameSet, spec: PreprocessSpec, device: torch.device
) -> tuple[EpochSampler, CropDataset, DataLoader]:
    """The epoch sampler (sqrt-frequency weights, this rank's share), the augmenting dataset and the loader."""
    assert train.crops is not None
    weights = sqrt_frequency_weights(train.labels) if cfg.sampler == "sqrt" else None
    sampler = EpochSampler(len(train), weights, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    dataset = CropDataset(train.crops, train.labels, spec, PAPER_AUGMENT if cfg.augment else None, cfg.seed)
    drop_last = len(sampler) >= cfg.batch_size
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
    )
    if len(loader) == 0 or (not drop_last and len(sampler) < 2):
        raise VCEError("too few training frames per process for one batch; lower --stride or --batch-size")
    return sampler, dataset, loader


def _optimizer(
    cfg: FitConfig, model: nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW over the head/backbone parameter groups and its OneCycle schedule over ``total_steps``."""
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.lr, cfg.backbone_lr_mult), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=cfg.pct_start,
        anneal_strategy="cos",
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
    )
    return optimizer, scheduler


def _split_frames(cfg: FitConfig) -> tuple[FrameSet, FrameSet]:
    """Training and validation frames (split by video, each strided), not decoded yet."""
    sources = find_videos(cfg.data)
    train_ids, val_ids = split_videos([s.video for s in sources], cfg.val_fraction, cfg.seed, cfg.val_videos)
    train = FrameSet.from_sources([s.strided(cfg.stride) for s in sources if s.video in set(train_ids)])
    val = FrameSet.from_sources([s.strided(cfg.val_stride) for s in sources if s.video in set(val_ids)])
    if len(train) < 2:
        raise VCEError(f"only {len(train)} training frame(s) after --stride {cfg.stride}; lower the stride")
    return train, val


def _decode_frames(
    cfg: FitConfig, info: DistInfo, train: FrameSet, val: FrameSet, spec: PreprocessSpec, show: bool
) -> None:
    """Decode the crops (validation on the main rank only); under DDP rank 0 fills the disk cache
    and the other ranks then only map it."""
    if info.enabled and cfg.cache:
        if info.is_main:
            train.load(spec, cache_dir=cfg.cache, progress=show, description="decoding training frames")
            val.load(spec, cache_dir=cfg.cache, progress=show, description="decoding validation frames")
        info.barrier()
        if not info.is_main:
            train.load(spec, cache_dir=cfg.cache)
    else:
        train.load(spec, cache_dir=cfg.cache, progress=show, description="decoding training frames")
        if info.is_main:
            val.load(spec, cache_dir=cfg.cache, progress=show, description="decoding validation frames")


def _resume_training(t: _Training, state: dict[str, Any]) -> None:
    """Restore weights, optimiser, schedule, scaler, EMA and history from ``train_state.pt``.

    A new total (more epochs) keeps the recipe: the schedule is stepped to the step reached.
    """
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    done_steps = int(state["global_step"])
    total_steps = t.cfg.epochs * t.steps_per_epoch
    if int(state["scheduler"].get("total_steps", -1)) == total_steps:
        t.scheduler.load_state_dict(state["scheduler"])
    else:
        for _ in range(min(done_steps, total_steps - 1)):
            t.scheduler.step()
    if state.get("scaler"):
        t.scaler.load_state_dict(state["scaler"])
    if t.ema is not None and state.get("ema") is not None:
        t.ema.load_state_dict(state["ema"])
    t.history = json.loads(state["history_json"])
    t.start_epoch = int(state["epoch"])
    if t.start_epoch >= t.cfg.epochs:
        raise VCEError(
            f"{t.run} already finished {t.start_epoch} epoch(s); pass a larger --epochs to continue"
        )


def _train(t: _Training, state: dict[str, Any] | None) -> FitResult:
    """The epochs from ``t.start_epoch``: train, then (main rank) validate and write the run folder."""
    cfg, info = t.cfg, t.info
    train_forward: nn.Module = _TrainForward(t.model)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_forward = DistributedDataParallel(
            train_forward, device_ids=[t.device.index] if t.device.type == "cuda" else None
        )
    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    t.global_step = t.start_epoch * t.steps_per_epoch
    if info.is_main:
        t.run.mkdir(parents=True, exist_ok=True)
    result_ap, result_prev = float("nan"), float("nan")
    if t.show and t.start_epoch < last_epoch:
        say(
            f"training {cfg.model} on {t.device.type}: {len(t.train)} frames of {len(set(t.train.videos))} "
            f"videos, {t.steps_per_epoch} steps of {cfg.batch_size} per epoch, epochs {t.start_epoch + 1}-"
            f"{last_epoch} of {cfg.epochs}; validating on {len(t.val)} frames of {len(set(t.val.videos))} "
            + (
                "videos after each"
                if cfg.val_every == 1
                else f"videos every {cfg.val_every} epochs and after the last"
            )
        )
    fit_start = time.perf_counter()
    for epoch in range(t.start_epoch, last_epoch):
        t0 = time.perf_counter()
        entry = _train_epoch(t, train_forward, epoch)
        if info.is_main:
            if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == last_epoch:
                result_ap, result_prev = _validate_and_save(t, entry, t0, state=_train_state(t, epoch))
            else:  # train only: the run folder keeps the last validated epoch (a resume restarts there)
                entry["seconds"] = round(time.perf_counter() - t0, 3)
                t.history.append(entry)
            if t.show:
                say(_epoch_line(entry, cfg.epochs, t.start_epoch, time.perf_counter() - fit_start))
        info.barrier()
    history = t.history
    if not history and state is not None:
        history = json.loads(state["history_json"])
    if info.enabled:  # every rank reports the main rank's numbers
        r = torch.tensor([result_ap, result_prev], dtype=torch.float64)
        dist.broadcast(r, 0)
        result_ap, result_prev = float(r[0]), float(r[1])
    return FitResult(t.run, len(history), result_ap, result_prev, history, info.is_main, t.model)


def _train_epoch(t: _Training, train_forward: nn.Module, epoch: int) -> dict[str, Any]:
    """One epoch over the loader (reseeded from seed, epoch and rank); returns its history entry."""
    cfg, info, device = t.cfg, t.info, t.device
    torch.manual_seed(_seed(cfg.seed, epoch, info.rank, 1))
    t.sampler.set_epoch(epoch)
    t.dataset.set_epoch(epoch)
    mix_gen = torch.Generator().manual_seed(_seed(cfg.seed, epoch, info.rank, 2))
    t.model.train()
    running, seen, skipped = 0.0, 0, 0
    divergence: float | None = None
    bar = LiveBar(f"epoch {epoch + 1}/{cfg.epochs}", t.steps_per_epoch) if t.show else None
    try:
        for images, targets, _ in t.loader:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if cfg.mixup_alpha > 0:
                images, targets, _ = mixup(images, targets, cfg.mixup_alpha, cfg.mixup_floor, mix_gen)
            with torch.autocast(device.type, dtype=torch.float16, enabled=t.use_amp):
                logits, con = train_forward(images)
            loss = t.criterion(logits.float(), targets, None if con is None else con.float())
            if not _optimizer_step(t, loss):
                skipped += 1
                continue
            if info.enabled and divergence is None:
                divergence = max_weight_divergence(t.model)
            running += float(loss.detach()) * len(images)
            seen += len(images)
            if bar is not None:
                bar.advance(description=f"epoch {epoch + 1}/{cfg.epochs} loss {running / max(seen, 1):.4f}")
    finally:
        if bar is not None:
            bar.stop()
    train_loss = running / max(seen, 1)
    if info.enabled:
        r = torch.tensor([running, float(seen)], dtype=torch.float64)
        dist.all_reduce(r)
        train_loss = float(r[0] / max(r[1], 1.0))
    entry: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "lr_head": t.optimizer.param_groups[1]["lr"],
        "lr_backbone": t.optimizer.param_groups[0]["lr"],
        "steps": t.steps_per_epoch,
        "skipped_steps": skipped,
        "world_size": info.world_size,
    }
    if info.enabled:
        entry["ddp_max_weight_diff_after_first_step"] = divergence
        entry["ddp_max_weight_diff_end_of_epoch"] = max_weight_divergence(t.model)
    return entry


def _optimizer_step(t: _Training, loss: Tensor) -> bool:
    """Backward, clip, step the optimiser, schedule and EMA; False (and only the schedule steps) when
    the loss is not finite on some rank: all ranks skip together, or DDP's all-reduce would hang."""
    t.optimizer.zero_grad(set_to_none=True)
    finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
    if t.info.enabled:
        finite = finite.to(t.device)
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not bool(finite.item()):
        t.scheduler.step()
        t.global_step += 1
        return False
    t.scaler.scale(loss).backward()
    if t.cfg.grad_clip > 0:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.grad_clip)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    t.global_step += 1
    if t.ema is not None:
        t.ema.update(t.model)
    return True


def _train_state(t: _Training, epoch: int) -> dict[str, Any]:
    """What ``train_state.pt`` holds after ``epoch`` (``history_json`` is added once validated)."""
    return {
        "version": STATE_VERSION,
        "epoch": epoch + 1,
        "global_step": t.global_step,
        "config": t.cfg.to_dict(),
        "model": {k: v.detach().cpu().clone() for k, v in t.model.state_dict().items()},
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict() if t.use_amp else {},
        "ema": t.ema.state_dict() if t.ema is not None else None,
    }


def _validate_and_save(
    t: _Training, entry: dict[str, Any], t0: float, state: dict[str, Any]
) -> tuple[float, float]:
    """Validate (EMA weights when EMA is on), complete ``entry`` and write the run folder; returns
    (macro AP, prevalence)."""
    from vce.train.checkpoint import save_model

    cfg, model, ema, val, device = t.cfg, t.model, t.ema, t.val, t.device
    assert val.crops is not None
    deploy_sd = ema.state_dict_for(model) if ema is not None else None
    if ema is not None:
        with ema.applied(model):
            probs = predict_crops(
                model, val.crops, t.spec, device, cfg.batch_size * 2, amp=t.use_amp, workers=cfg.workers
            )
    else:
        probs = predict_crops(
            model, val.crops, t.spec, device, cfg.batch_size * 2, amp=t.use_amp, workers=cfg.workers
        )
    ap, prevalence, per_label = macro_ap(probs, val.labels)
    with torch.no_grad():
        p = torch.from_numpy(probs).double().clamp(1e-7, 1 - 1e-7)
        val_loss = float(
            t.criterion.focal(
                torch.log(p / (1 - p)).float().to(device), torch.from_numpy(val.labels).to(device)
            )
        )
    entry.update(
        {
            "val_loss": val_loss,
            "val_macro_ap": ap,
            "val_prevalence": prevalence,
            "val_frames": len(val),
            "val_videos": sorted(set(val.videos)),
            "val_ap": {
                name: (None if math.isnan(x) else float(x)) for name, x in zip(LABELS, per_label, strict=True)
            },
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    t.history.append(entry)
    state["history_json"] = json.dumps(t.history)
    extra = {
        "epoch": entry["epoch"],
        "epochs": cfg.epochs,
        "ema": ema is not None,
        "val_macro_ap": None if math.isnan(ap) else ap,
        "val_prevalence": None if math.isnan(prevalence) else prevalence,
        "fit": cfg.to_dict(),
    }
    save_model(model, t.run, state_dict=deploy_sd, extra=extra)
    write_val_outputs(t.run, val, probs)
    write_json(t.run / LOG_FILE, {"config": cfg.to_dict(), "history": t.history})
    save_state(t.run / STATE_FILE, state)  # last: its epoch marks the run folder as complete
    return ap, prevalence


def _epoch_line(entry: dict[str, Any], epochs: int, first_epoch: int, elapsed: float) -> str:
    """``epoch 3/16  loss 0.2020  val macro AP 0.682  11.1 s  ETA 2m 25s``: the ETA is the mean time
    of the epochs run so far (in this process) times the epochs left."""
    done = int(entry["epoch"])
    left = epochs - done
    eta = elapsed / max(done - first_epoch, 1) * left
    val = ""
    if "val_macro_ap" in entry:  # a validated epoch
        ap = entry["val_macro_ap"]
        val = "val macro AP " + ("n/a" if ap is None or math.isnan(ap) else f"{ap:.3f}") + "  "
    return f"epoch {done}/{epochs}  loss {entry['train_loss']:.4f}  {val}{entry['seconds']:.1f} s  " + (
        f"ETA {_duration(eta)}" if left else "training done"
    )


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"
