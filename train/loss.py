"""The paper's loss: asymmetric focal loss on the classifier logits + 0.4 x BCE on the contrastive logits.

Asymmetric focal loss, per element, with targets ``t`` smoothed to ``t (1 - s) + (1 - t) s`` (so 0/1
become s / 1 - s), ``p = sigmoid(logit)`` clamped to [1e-6, 1 - 1e-6], and the negative probability
shifted by the margin ``clip``: ``q = min(1, max(1 - p, 1e-6) + clip)``::

    ce     = t log p + (1 - t) log q
    pt     = t p + (1 - t) q
    gamma  = t gamma_pos + (1 - t) gamma_neg
    loss   = -ce (1 - pt)^gamma (t w + 1 - t)         w: per-class positive weight

averaged over all elements. The positive weight is ``clip(neg / pos, 1, 100)`` per class from the
training labels (each count + 1). The contrastive term is ``BCEWithLogits(contrastive_logits,
targets, pos_weight=w)`` on the unsmoothed (possibly mixed) targets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROB_EPS = 1e-6


def positive_weights(labels: np.ndarray, lo: float = 1.0, hi: float = 100.0) -> np.ndarray:
    """Per-class ``clip(neg / pos, lo, hi)`` with pos = positives + 1, neg = N - pos + 1 (float32 [C])."""
    y = np.asarray(labels, dtype=np.float64)
    pos = y.sum(axis=0) + 1.0
    neg = y.shape[0] - pos + 1.0
    return np.clip(neg / pos, lo, hi).astype(np.float32)


class AsymmetricFocalLoss(nn.Module):
    """Multi-label asymmetric focal loss (gamma+, gamma-, probability margin, smoothing, pos weights)."""

    pos_weight: Tensor | None

    def __init__(
        self,
        gamma_pos: float = 1.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        label_smoothing: float = 0.05,
        pos_weight: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.clip = float(clip)
        self.label_smoothing = float(label_smoothing)
        pw = None if pos_weight is None else torch.as_tensor(np.asarray(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        t = targets.float()
        if self.label_smoothing > 0:
            s = self.label_smoothing
            t = t * (1.0 - s) + (1.0 - t) * s
        p = torch.sigmoid(logits.float()).clamp(PROB_EPS, 1.0 - PROB_EPS)
        q = (1.0 - p).clamp(min=PROB_EPS)
        if self.clip > 0:
            q = (q + self.clip).clamp(max=1.0)
        ce = t * torch.log(p) + (1.0 - t) * torch.log(q)
        if self.gamma_pos > 0 or self.gamma_neg > 0:
            pt = t * p + (1.0 - t) * q
            gamma = t * self.gamma_pos + (1.0 - t) * self.gamma_neg
            ce = ce * torch.pow(1.0 - pt, gamma)
        if self.pos_weight is not None:
            ce = ce * (t * self.pos_weight + (1.0 - t))
        return -ce.mean()


class CombinedLoss(nn.Module):
    """``cls_weight * focal(logits) + contrastive_weight * BCE(contrastive_logits)`` (the latter if given)."""

    pos_weight: Tensor | None

    def __init__(
        self,
        focal: AsymmetricFocalLoss,
        contrastive_weight: float = 0.4,
        cls_weight: float = 1.0,
        pos_weight: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.focal = focal
        self.contrastive_weight = float(contrastive_weight)
        self.cls_weight = float(cls_weight)
        pw = None if pos_weight is None else torch.as_tensor(np.asarray(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor, contrastive_logits: Tensor | None = None) -> Tensor:
        loss = self.cls_weight * self.focal(logits, targets)
        if contrastive_logits is not None and self.contrastive_weight > 0:
            loss = loss + self.contrastive_weight * F.binary_cross_entropy_with_logits(
                contrastive_logits.float(), targets.float(), pos_weight=self.pos_weight
            )
        return loss


def build_loss(
    train_labels: np.ndarray,
    *,
    gamma_pos: float = 1.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    label_smoothing: float = 0.05,
    contrastive_weight: float = 0.4,
) -> CombinedLoss:
    """The paper's loss with positive weights from the training labels [N, C]."""
    pw = positive_weights(train_labels)
    focal = AsymmetricFocalLoss(gamma_pos, gamma_neg, clip, label_smoothing, pw)
    return CombinedLoss(focal, contrastive_weight, 1.0, pw)
