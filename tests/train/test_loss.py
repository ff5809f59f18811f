"""Asymmetric focal loss and the contrastive term against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vce.train.loss import AsymmetricFocalLoss, CombinedLoss, build_loss, positive_weights


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_plain_bce_when_everything_is_off() -> None:
    loss = AsymmetricFocalLoss(gamma_pos=0, gamma_neg=0, clip=0, label_smoothing=0)
    x = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
    assert float(loss(x, y)) == pytest.approx(float(expected), rel=1e-6)


def test_hand_computed_positive_and_negative() -> None:
    loss = AsymmetricFocalLoss(gamma_pos=1, gamma_neg=4, clip=0.05, label_smoothing=0.0)
    # positive, logit 0: p = 0.5 -> -(1 - 0.5)^1 * log(0.5)
    assert float(loss(torch.tensor([[0.0]]), torch.tensor([[1.0]]))) == pytest.approx(
        0.5 * math.log(2), rel=1e-6
    )
    # negative, logit 1: p = sigmoid(1); q = 1 - p + 0.05; loss = -(1 - q)^4 log q
    p = _sig(1.0)
    q = 1 - p + 0.05
    want = -((1 - q) ** 4) * math.log(q)
    assert float(loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]))) == pytest.approx(want, rel=1e-6)
    # an easy negative (p < clip) costs nothing
    assert float(loss(torch.tensor([[-5.0]]), torch.tensor([[0.0]]))) == pytest.approx(0.0, abs=1e-12)


def test_label_smoothing_and_positive_weight_by_hand() -> None:
    pw = torch.tensor([3.0])
    loss = AsymmetricFocalLoss(gamma_pos=1, gamma_neg=4, clip=0.05, label_smoothing=0.05, pos_weight=pw)
    x, s = 0.7, 0.05
    p = _sig(x)
    t = 1 * (1 - s) + 0 * s  # 0.95
    q = min(1.0, (1 - p) + 0.05)
    ce = t * math.log(p) + (1 - t) * math.log(q)
    pt = t * p + (1 - t) * q
    gamma = t * 1 + (1 - t) * 4
    want = -(ce * (1 - pt) ** gamma * (t * 3.0 + 1 - t))
    assert float(loss(torch.tensor([[x]]), torch.tensor([[1.0]]))) == pytest.approx(want, rel=1e-6)


def test_mean_over_elements() -> None:
    loss = AsymmetricFocalLoss(label_smoothing=0.0)
    x = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0]])
    both = float(loss(x, y))
    a = float(loss(x[:, :1], y[:, :1]))
    b = float(loss(x[:, 1:], y[:, 1:]))
    assert both == pytest.approx((a + b) / 2, rel=1e-6)


def test_positive_weights_clip() -> None:
    y = np.zeros((1000, 3))
    y[:1, 0] = 1  # pos 2, neg 999 -> 499.5 -> clipped 100
    y[:500, 1] = 1  # pos 501, neg 500 -> <1 -> clipped 1
    y[:100, 2] = 1  # pos 101, neg 900 -> 8.91
    w = positive_weights(y)
    assert w[0] == pytest.approx(100.0) and w[1] == pytest.approx(1.0)
    assert w[2] == pytest.approx(900 / 101, rel=1e-6)


def test_contrastive_term_is_weighted_bce() -> None:
    focal = AsymmetricFocalLoss(label_smoothing=0.0)
    pw = torch.tensor([2.0, 1.0])
    comb = CombinedLoss(focal, contrastive_weight=0.4, pos_weight=pw)
    x = torch.tensor([[0.2, -0.3]])
    c = torch.tensor([[1.5, 0.5]])
    y = torch.tensor([[1.0, 0.0]])
    bce = -(2.0 * math.log(_sig(1.5)) + math.log(1 - _sig(0.5))) / 2
    assert float(comb(x, y, c)) == pytest.approx(float(focal(x, y)) + 0.4 * bce, rel=1e-6)
    assert float(comb(x, y, None)) == pytest.approx(float(focal(x, y)), rel=1e-7)


def test_build_loss_defaults_are_the_papers() -> None:
    loss = build_loss(np.eye(17))
    assert (loss.focal.gamma_pos, loss.focal.gamma_neg, loss.focal.clip, loss.focal.label_smoothing) == (
        1.0,
        4.0,
        0.05,
        0.05,
    )
    assert loss.contrastive_weight == 0.4
    x = torch.randn(4, 17, requires_grad=True)
    value = loss(x, torch.randint(0, 2, (4, 17)).float())
    value.backward()
    assert torch.isfinite(value) and x.grad is not None
