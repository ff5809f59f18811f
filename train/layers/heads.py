"""Classification heads on the 512-d (``embed_dim``) image feature.

``ExcitationHead`` is the paper's: an excitation block (Linear d->h, ReLU, Linear h->d, sigmoid
gate multiplying the feature, then BatchNorm1d), Dropout, Linear d->classes. ``LinearHead`` is
Dropout + Linear (a plain linear head with ``dropout=0``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ExcitationBlock(nn.Module):
    """Squeeze-and-excitation on a feature vector: ``bn(x * sigmoid(fc2(relu(fc1(x)))))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x))))
        return self.bn(x * gate)


class ExcitationHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, *, hidden: int = 32, dropout: float = 0.4) -> None:
        super().__init__()
        self.excitation = ExcitationBlock(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.excitation(x)))


class LinearHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x))


def build_head(kind: str, dim: int, num_classes: int, *, hidden: int, dropout: float) -> nn.Module:
    if kind == "excitation":
        return ExcitationHead(dim, num_classes, hidden=hidden, dropout=dropout)
    if kind == "linear":
        return LinearHead(dim, num_classes, dropout=dropout)
    raise ValueError(f"unknown head {kind!r}")
