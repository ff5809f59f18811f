"""Exponential moving average of the trainable parameters (the weights that get deployed).

As in the paper, only parameters that require gradients are averaged; buffers (BatchNorm running
statistics) are taken from the live model when the EMA weights are exported or evaluated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn


class ModelEMA:
    """``shadow = d * shadow + (1 - d) * param`` after every optimiser step.

    With ``warmup`` the decay of update ``n`` (from 0) is ``min(decay, (1 + n) / (10 + n))`` so a
    short run's average is not dominated by the initial weights; after a few thousand steps (any
    full Galar epoch) it is the plain ``decay``, and the early steps' share has vanished.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True) -> None:
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.shadow: dict[str, Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(d).add_(p.detach(), alpha=1.0 - d)
        self.updates += 1

    def state_dict_for(self, model: nn.Module) -> dict[str, Tensor]:
        """The model's full state dict with the averaged parameters in place of the live ones."""
        sd = model.state_dict()
        return {
            k: (self.shadow[k].detach().clone() if k in self.shadow else v.detach().clone())
            for k, v in sd.items()
        }

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily swap the averaged parameters into ``model`` (for validation)."""
        backup: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in self.shadow:
                    backup[name] = p.detach().clone()
                    p.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in backup:
                        p.copy_(backup[name])

    def state_dict(self) -> dict[str, Any]:
        return {
            "shadow": {name: t.detach().cpu().clone() for name, t in self.shadow.items()},
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        state = state["shadow"]
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameter(s), e.g. {sorted(missing)[:3]}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
