"""Mixup: the floor on the mixing factor, label mixing, reproducibility."""

from __future__ import annotations

import numpy as np
import torch

from vce.train.mixup import mixup, sample_lambda


def test_lambda_never_below_floor() -> None:
    g = torch.Generator().manual_seed(0)
    lams = np.array([sample_lambda(0.3, 0.5, g) for _ in range(2000)])
    assert lams.min() >= 0.5 and lams.max() <= 1.0
    # Beta(0.3, 0.3) is U-shaped: about half the draws fall below 0.5 and are floored
    assert 0.4 < np.mean(lams == 0.5) < 0.6
    assert np.mean(lams > 0.9) > 0.2


def test_mixup_mixes_images_and_labels_with_the_same_factor() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.arange(4, dtype=torch.float32).reshape(4, 1) * torch.ones(4, 3)
    y = torch.eye(4)
    mx, my, lam = mixup(x, y, 0.3, 0.5, g)
    assert lam >= 0.5
    # each row is lam * itself + (1 - lam) * another row, the same partner for image and labels
    for i in range(4):
        partner = (mx[i, 0] - lam * x[i, 0]) / (1 - lam) if lam < 1 else x[i, 0]
        j = round(float(partner))
        assert torch.allclose(my[i], lam * y[i] + (1 - lam) * y[j], atol=1e-6)
    assert torch.allclose(my.sum(dim=1), torch.ones(4))


def test_reproducible_and_off() -> None:
    x, y = torch.randn(8, 3), torch.rand(8, 17)
    a = mixup(x, y, 0.3, 0.5, torch.Generator().manual_seed(5))
    b = mixup(x, y, 0.3, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    same = mixup(x, y, 0.0, 0.5, torch.Generator())
    assert same[0] is x and same[2] == 1.0
