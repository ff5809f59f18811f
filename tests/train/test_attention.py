"""Differential attention: formulations agree, DIFF equals timm's DiffAttention, paper equals plain at lambda 0."""

from __future__ import annotations

import math

import pytest
import torch
from timm.layers import Attention
from timm.layers.diff_attention import DiffAttention

from vce.runtime.errors import VCEError
from vce.train.layers.diff_attention import (
    FORMULATIONS,
    DiffTransformerAttention,
    PaperDiffAttention,
    convert_to_diff_attention,
    diff_lambda_init,
    set_formulation,
)

DIM, HEADS, TOKENS = 64, 4, 17


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, TOKENS, DIM, generator=torch.Generator().manual_seed(seed))


def _timm_attention(seed: int = 1) -> Attention:
    torch.manual_seed(seed)
    attn = Attention(DIM, num_heads=HEADS, qkv_bias=True).eval()
    with torch.no_grad():
        attn.qkv.bias.normal_(std=0.5)
        attn.proj.bias.normal_(std=0.5)
    return attn


def _paper(lambda_scale: float = 1.0) -> PaperDiffAttention:
    torch.manual_seed(2)
    m = PaperDiffAttention(DIM, HEADS).eval()
    m.load_from_timm(_timm_attention())
    with torch.no_grad():  # a sizeable, non-trivial lambda
        for p in (m.lambda_q1, m.lambda_k1, m.lambda_q2, m.lambda_k2):
            p.normal_(std=0.5 * lambda_scale)
    return m


def _diff(layer: int = 3) -> DiffTransformerAttention:
    torch.manual_seed(3)
    m = DiffTransformerAttention(DIM, HEADS, layer_index=layer).eval()
    m.load_from_timm(_timm_attention())
    with torch.no_grad():
        m.sub_norm.weight.normal_(1.0, 0.3)
    return m


@pytest.mark.parametrize("make", [_paper, _diff], ids=["paper", "diff"])
def test_formulations_agree(make) -> None:
    m, x = make(), _x()
    outs = {}
    with torch.no_grad():
        for f in FORMULATIONS:
            m.set_formulation(f)
            outs[f] = m(x)
    ref = outs["sdpa"]
    assert ref.abs().max() > 0.1
    for f, out in outs.items():
        assert torch.allclose(out, ref, atol=1e-5, rtol=0), (f, (out - ref).abs().max())


def test_paper_equals_plain_attention_at_lambda_zero() -> None:
    plain = _timm_attention()
    m = PaperDiffAttention(DIM, HEADS, lambda_init=0.0).eval()
    m.load_from_timm(plain)
    with torch.no_grad():
        for p in (m.lambda_q1, m.lambda_k1, m.lambda_q2, m.lambda_k2):
            p.zero_()
        assert m.lambda_value().item() == 0.0
        x = _x()
        for f in FORMULATIONS:
            m.set_formulation(f)
            assert torch.allclose(m(x), plain(x), atol=1e-5, rtol=0)
        m.lambda_init = 0.8  # the paper's default lambda changes the output
        assert (m(x) - plain(x)).abs().max() > 1e-2


def test_paper_lambda_formula() -> None:
    m = _paper()
    q1, k1, q2, k2 = (p.detach() for p in (m.lambda_q1, m.lambda_k1, m.lambda_q2, m.lambda_k2))
    assert q1.shape == (HEADS // 2, 1, DIM // HEADS)
    expected = sum(
        math.exp(min(float((q1[h] * k1[h]).sum()), 5.0))
        - math.exp(min(float((q2[h] * k2[h]).sum()), 5.0))
        + 0.8
        for h in range(HEADS // 2)
    ) / (HEADS // 2)
    assert m.lambda_value().item() == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():  # the clamp at 5
        m.lambda_q1.fill_(1.0)
        m.lambda_k1.fill_(1.0)
        m.lambda_q2.zero_()
    assert m.lambda_value().item() == pytest.approx(math.exp(5.0) - 1.0 + 0.8, rel=1e-5)


def test_paper_matches_two_group_definition() -> None:
    """x_i = softmax(Q_i K_i^T / sqrt(d)) V_i on heads [0, H/2) and [H/2, H); out = proj([x1 - l x2, x2])."""
    m, x = _paper(), _x()
    b, n, c = x.shape
    d = c // HEADS

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, n, HEADS, d).transpose(1, 2)

    with torch.no_grad():
        q, k, v = heads(m.q_proj(x)), heads(m.k_proj(x)), heads(m.v_proj(x))
        xs = []
        for g in (slice(0, HEADS // 2), slice(HEADS // 2, HEADS)):
            a = torch.softmax(q[:, g] @ k[:, g].transpose(-2, -1) / math.sqrt(d), dim=-1)
            xs.append((a @ v[:, g]).transpose(1, 2).reshape(b, n, c // 2))
        lam = m.lambda_value()
        expected = m.proj(torch.cat([xs[0] - lam * xs[1], xs[1]], dim=-1))
        assert torch.allclose(m(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fused", [True, False])
def test_diff_equals_timm_diff_attention(fused: bool) -> None:
    torch.manual_seed(4)
    ref = DiffAttention(DIM, num_heads=HEADS, qkv_bias=True, depth=5).eval()
    ref.fused_attn = fused
    ours = DiffTransformerAttention(DIM, HEADS, layer_index=5).eval()
    ours.load_from_timm(ref)
    with torch.no_grad():
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            getattr(ours, name).copy_(getattr(ref, name))
        ref.sub_norm.weight.normal_(1.0, 0.3)
        ours.sub_norm.weight.copy_(ref.sub_norm.weight)
        x = _x()
        assert ours.lambda_init == ref.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-1.5))
        assert ours.lambda_value().item() == pytest.approx(ref._compute_lambda().item(), rel=1e-6)
        for f in FORMULATIONS:
            ours.set_formulation(f)
            assert torch.allclose(ours(x), ref(x), atol=1e-5, rtol=0), f


def test_diff_lambda_init_and_shapes() -> None:
    assert diff_lambda_init(0) == pytest.approx(0.2)
    assert diff_lambda_init(11) == pytest.approx(0.8 - 0.6 * math.exp(-3.3))
    m = DiffTransformerAttention(768, 12, layer_index=2)
    assert m.head_dim == 32 and m.lambda_q1.shape == (32,) and m.sub_norm.weight.shape == (64,)
    assert m.lambda_init == pytest.approx(diff_lambda_init(2))
    assert DiffTransformerAttention(64, 4, lambda_init=0.5).lambda_init == 0.5


def test_weight_transfer_splits_qkv() -> None:
    plain = _timm_attention()
    for m in (PaperDiffAttention(DIM, HEADS), DiffTransformerAttention(DIM, HEADS)):
        m.load_from_timm(plain)
        w, bias = plain.qkv.weight, plain.qkv.bias
        assert torch.equal(m.q_proj.weight, w[:DIM]) and torch.equal(m.k_proj.weight, w[DIM : 2 * DIM])
        assert torch.equal(m.v_proj.weight, w[2 * DIM :]) and torch.equal(m.v_proj.bias, bias[2 * DIM :])
        assert torch.equal(m.proj.weight, plain.proj.weight) and torch.equal(m.proj.bias, plain.proj.bias)


def test_backward_reaches_lambda() -> None:
    for m in (_paper(), _diff()):
        m.train()
        m(_x()).square().mean().backward()
        for p in (m.lambda_q1, m.lambda_k2, m.q_proj.weight, m.proj.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_convert_and_set_formulation() -> None:
    import timm

    trunk = timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=0, embed_dim=32, depth=3, num_heads=2
    )
    qkv1 = trunk.blocks[1].attn.qkv.weight.detach().clone()
    convert_to_diff_attention(trunk, "diff", [1, 2])
    assert isinstance(trunk.blocks[0].attn, Attention)
    assert [type(b.attn) for b in trunk.blocks[1:]] == [DiffTransformerAttention] * 2
    assert trunk.blocks[2].attn.lambda_init == pytest.approx(diff_lambda_init(2))
    assert torch.equal(trunk.blocks[1].attn.q_proj.weight, qkv1[:32])
    assert set_formulation(trunk, "matmul") == 2
    assert all(b.attn.formulation == "matmul" for b in trunk.blocks[1:])
    with pytest.raises(VCEError, match="formulation"):
        set_formulation(trunk, "flash")
    with pytest.raises(VCEError, match="does not exist"):
        convert_to_diff_attention(trunk, "paper", [7])
    with pytest.raises(VCEError, match="even head count"):
        PaperDiffAttention(30, 3)
    with pytest.raises(VCEError, match="masks"):
        trunk.blocks[1].attn(torch.zeros(1, 4, 32), attn_mask=torch.zeros(4, 4))


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning"
)
@pytest.mark.parametrize("make", [_paper, _diff], ids=["paper", "diff"])
def test_formulations_export_to_default_domain_onnx(make, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m, x = make(), _x()
    for f in ("sdpa", "matmul", "equal-heads", "equal-heads-split"):
        m.set_formulation(f)
        path = tmp_path / f"{f}.onnx"
        torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
        model = onnx.load(str(path))
        ops = {(n.domain or "", n.op_type) for n in model.graph.node}
        assert {d for d, _ in ops} == {""}, ops
        assert not {"If", "Loop"} & {op for _, op in ops}
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = sess.run(None, {"x": x.numpy()})
        with torch.no_grad():
            assert abs(out - m(x).numpy()).max() < 1e-5, f
