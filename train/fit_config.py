"""What ``fit`` trains with: :class:`FitConfig`, its defaults and its checks, in one place.

Torch-free, so that ``vce-train`` reads its option defaults from here without importing torch;
saved in ``train_state.pt`` so that ``--resume`` needs only the run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vce.runtime.errors import VCEError


class Sampler(StrEnum):
    """Which training frames an epoch draws: weighted by the square root of label frequency, or all alike."""

    SQRT = "sqrt"
    UNIFORM = "uniform"


@dataclass
class FitConfig:
    """Everything ``fit`` needs; checked on construction (one ``VCEError`` line naming the option)."""

    data: str = ""
    out: str = ""
    model: str = "biomedclip"
    variant: str = "paper"
    head: str | None = None
    pretrained: str | None = None
    contrastive: bool = False
    model_overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 5
    stop_after: int | None = None  # stop after this many epochs of the schedule (resume later)
    batch_size: int = 128
    lr: float = 3e-4
    backbone_lr_mult: float = 0.3
    weight_decay: float = 5e-4
    pct_start: float = 0.15
    div_factor: float = 10.0
    final_div_factor: float = 100.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    mixup_alpha: float = 0.3
    mixup_floor: float = 0.5
    gamma_pos: float = 1.0
    gamma_neg: float = 4.0
    clip: float = 0.05
    label_smoothing: float = 0.05
    contrastive_weight: float = 0.4
    sampler: str = Sampler.SQRT.value
    stride: int = 5
    val_stride: int = 5
    #: validate, and write the run folder (weights, val CSVs, resume state), every N epochs and after
    #: the last; the epochs between only train (the weights are the same either way)
    val_every: int = 1
    val_fraction: float = 0.15
    val_videos: list[str] | None = None
    augment: bool = True
    amp: bool = True
    workers: int = 0
    cache: str | None = None
    seed: int = 42
    device: str | None = None
    deterministic: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.data:
            raise VCEError("fit needs --data DIR (a dataset folder, e.g. from `vce-train synth`)")
        if not self.out:
            raise VCEError("fit needs --out RUN (the run folder to write)")
        for name in ("epochs", "batch_size", "stride", "val_stride", "val_every"):
            if int(getattr(self, name)) < 1:
                raise VCEError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.sampler not in tuple(Sampler):
            raise VCEError(f"--sampler must be 'sqrt' or 'uniform' (got {self.sampler!r})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise VCEError(f"--ema must be in [0, 1) (got {self.ema_decay})")
        if not 0.0 < self.pct_start < 1.0:
            raise VCEError(f"--pct-start must be in (0, 1) (got {self.pct_start})")
        if self.stop_after is not None and self.stop_after < 1:
            raise VCEError("--stop-after must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
