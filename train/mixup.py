"""Mixup with the mixing factor floored: ``lam = max(Beta(alpha, alpha), floor)``.

The floor (0.5 in the paper) keeps each mixed sample dominated by its own image and labels. Random
draws come from an explicit ``torch.Generator`` so training and resuming are reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def sample_lambda(alpha: float, floor: float, generator: torch.Generator) -> float:
    """One mixing factor: Beta(alpha, alpha), floored at ``floor``, drawn reproducibly from ``generator``."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    lam = np.random.default_rng(seed).beta(alpha, alpha)
    return max(float(lam), float(floor))


def mixup(
    images: Tensor, targets: Tensor, alpha: float, floor: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, float]:
    """Mix a batch with a random permutation of itself; returns (images, targets, lam).

    ``alpha <= 0`` returns the batch unchanged with lam = 1.
    """
    if alpha <= 0 or images.shape[0] < 2:
        return images, targets, 1.0
    lam = sample_lambda(alpha, floor, generator)
    perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
    mixed_x = lam * images + (1.0 - lam) * images[perm]
    mixed_y = lam * targets + (1.0 - lam) * targets[perm]
    return mixed_x, mixed_y, lam
