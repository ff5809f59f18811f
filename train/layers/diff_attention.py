"""Differential attention for timm ViT blocks: the paper's variant and the DIFF Transformer's.

Both replace a block's ``attn`` (timm ``Attention``) and take its pretrained weights: the fused
``qkv`` is split into ``q_proj``/``k_proj``/``v_proj``, ``proj`` is copied. Only the lambda
parameters (and DIFF's sub-norm) are new.

``paper`` (``PaperDiffAttention``), exactly as the RARE-VISION paper's code: the H heads keep their
pretrained size d; heads 0..H/2-1 form (Q1, K1, V1) and heads H/2..H-1 form (Q2, K2, V2);
``x_i = softmax(Q_i K_i^T / sqrt(d)) V_i``; ``lambda = mean_h(exp(min(sum lq1*lk1, 5))
- exp(min(sum lq2*lk2, 5)) + lambda_init)`` with lambda_init 0.8 and parameters of shape
(H/2, 1, d) drawn from N(0, 0.02); output ``proj(concat[x1 - lambda * x2, x2])``. No sub-norm, no
(1 - lambda_init) factor, so with lambda = 0 it *is* the pretrained attention.

``diff`` (``DiffTransformerAttention``), Ye et al. 2024 ("Differential Transformer"), as timm's
``DiffAttention``: q and k as 2H heads of size d/2 (head h pairs the halves 2h, 2h+1 of pretrained
head h), v as H heads of size d; ``attn_h = softmax(Q_2h K_2h^T / sqrt(d/2)) - lambda *
softmax(Q_2h+1 K_2h+1^T / sqrt(d/2))``; ``lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init``
(vectors of size d/2 from N(0, 0.1)), ``lambda_init = 0.8 - 0.6 exp(-0.3 * layer_index)``; each
head's output goes through an RMSNorm (eps 1e-5) over d, times (1 - lambda_init), then ``proj``.

Each module computes the same function in three ``formulation`` s (all agree to ~1e-6 in fp32):
``sdpa`` (F.scaled_dot_product_attention, the training default), ``matmul`` (explicitly
pre-scaled ``softmax((q * scale) @ k^T) @ v``, the pattern TensorRT fuses) and ``equal-heads``
(one matmul-pattern attention call whose q, k and v share one head size: already so for ``paper``;
for ``diff`` q/k are zero-padded to v's size d, ``equal-heads-split`` instead splits v into halves of
d/2). None uses data-dependent control flow, so all export to plain default-domain ONNX ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vce.runtime.errors import VCEError
from vce.train.config import Formulation, Variant, check_formulation

FORMULATIONS = tuple(f.value for f in Formulation)
PAPER_LAMBDA_INIT = 0.8
PAPER_LAMBDA_CLAMP = 5.0


def diff_lambda_init(layer_index: int) -> float:
    """DIFF Transformer's depth-dependent lambda_init."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_index)


def _matmul_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, drop: nn.Module) -> Tensor:
    attn = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return drop(attn) @ v


class RMSNorm(nn.Module):
    """RMSNorm with a learnable weight, written out so that it exports to basic ONNX ops."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()  # the reduction in fp32 (a no-op for fp32 inputs, safe under autocast)
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class _DiffAttentionBase(nn.Module):
    formulation: str

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, attn_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise VCEError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop_p = float(attn_drop)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.formulation = "sdpa"

    def set_formulation(self, formulation: str) -> None:
        self.formulation = check_formulation(formulation)

    @torch.no_grad()
    def load_from_timm(self, attn: nn.Module) -> None:
        """Copy a timm ``Attention``'s weights: qkv split into q/k/v, proj copied."""
        dim = self.dim
        w, b = attn.qkv.weight, attn.qkv.bias
        for i, lin in enumerate((self.q_proj, self.k_proj, self.v_proj)):
            lin.weight.copy_(w[i * dim : (i + 1) * dim])
            if lin.bias is not None:
                lin.bias.copy_(b[i * dim : (i + 1) * dim])
        self.proj.weight.copy_(attn.proj.weight)
        if self.proj.bias is not None:
            self.proj.bias.copy_(attn.proj.bias)

    def _qkv(self, x: Tensor, q_heads: int, v_heads: int) -> tuple[Tensor, Tensor, Tensor]:
        b, n, c = x.shape
        q = self.q_proj(x).reshape(b, n, q_heads, c // q_heads).transpose(1, 2)
        k = self.k_proj(x).reshape(b, n, q_heads, c // q_heads).transpose(1, 2)
        v = self.v_proj(x).reshape(b, n, v_heads, c // v_heads).transpose(1, 2)
        return q, k, v

    def _check_mask(self, attn_mask: Tensor | None, is_causal: bool) -> None:
        if attn_mask is not None or is_causal:
            raise VCEError("differential attention does not support attention masks (ViT image tokens only)")


class PaperDiffAttention(_DiffAttentionBase):
    """The paper's differential attention (see the module docstring): equals plain attention at lambda 0."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        lambda_init: float = PAPER_LAMBDA_INIT,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, proj_bias, attn_drop)
        if num_heads % 2:
            raise VCEError(f"the paper's differential attention needs an even head count, got {num_heads}")
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.lambda_init = float(lambda_init)
        shape = (num_heads // 2, 1, self.head_dim)
        self.lambda_q1 = nn.Parameter(torch.zeros(shape))
        self.lambda_k1 = nn.Parameter(torch.zeros(shape))
        self.lambda_q2 = nn.Parameter(torch.zeros(shape))
        self.lambda_k2 = nn.Parameter(torch.zeros(shape))
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, std=0.02)

    def lambda_value(self) -> Tensor:
        """Scalar lambda: mean over the H/2 head pairs of exp(min(q1.k1, 5)) - exp(min(q2.k2, 5)) + init."""
        l1 = torch.exp(
            torch.clamp((self.lambda_q1 * self.lambda_k1).sum(dim=(-2, -1)), max=PAPER_LAMBDA_CLAMP)
        )
        l2 = torch.exp(
            torch.clamp((self.lambda_q2 * self.lambda_k2).sum(dim=(-2, -1)), max=PAPER_LAMBDA_CLAMP)
        )
        return (l1 - l2 + self.lambda_init).mean()

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        self._check_mask(attn_mask, is_causal)
        b, n, c = x.shape
        q, k, v = self._qkv(x, self.num_heads, self.num_heads)
        # The two groups' attentions are independent per head: one call over all H heads.
        if self.formulation == "sdpa":
            p = self.attn_drop_p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:  # matmul, equal-heads(-split): q, k and v already share the head size d
            out = _matmul_attention(q, k, v, self.scale, self.attn_drop)
        out = out.transpose(1, 2).reshape(b, n, 2, c // 2)
        x1, x2 = out.unbind(2)
        lam = self.lambda_value().to(x.dtype)
        return self.proj(torch.cat([x1 - lam * x2, x2], dim=-1))


class DiffTransformerAttention(_DiffAttentionBase):
    """DIFF Transformer attention (Ye et al. 2024, see the module docstring)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        layer_index: int = 0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        lambda_init: float | None = None,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, proj_bias, attn_drop)
        if (dim // num_heads) % 2:
            raise VCEError(f"the DIFF attention halves the head size; {dim}/{num_heads} is odd")
        self.head_dim = dim // num_heads // 2  # q/k head size; v heads are 2 * head_dim
        self.scale = self.head_dim**-0.5
        self.layer_index = layer_index
        self.lambda_init = float(diff_lambda_init(layer_index) if lambda_init is None else lambda_init)
        self.lambda_q1 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.zeros(self.head_dim))
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, std=0.1)
        self.sub_norm = RMSNorm(2 * self.head_dim, eps=1e-5)

    def lambda_value(self) -> Tensor:
        """Scalar lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init."""
        l1 = torch.exp((self.lambda_q1 * self.lambda_k1).sum())
        l2 = torch.exp((self.lambda_q2 * self.lambda_k2).sum())
        return l1 - l2 + self.lambda_init

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """The two attention outputs per head, each [B, H, N, 2*head_dim]."""
        b, hh, n, d = q.shape  # hh = 2H heads of d = head_dim
        h = hh // 2
        if self.formulation == "sdpa":
            q = q.reshape(b, h, 2, n, d)
            k = k.reshape(b, h, 2, n, d)
            p = self.attn_drop_p if self.training else 0.0
            o1 = F.scaled_dot_product_attention(q[:, :, 0], k[:, :, 0], v, dropout_p=p)
            o2 = F.scaled_dot_product_attention(q[:, :, 1], k[:, :, 1], v, dropout_p=p)
            return o1, o2
        if self.formulation == "matmul":
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            attn = self.attn_drop(attn).reshape(b, h, 2, n, n)
            return attn[:, :, 0] @ v, attn[:, :, 1] @ v
        if self.formulation == "equal-heads":
            # zero-pad q/k to v's head size 2d: same scores, one call with one head size
            qp = F.pad(q * self.scale, (0, d))
            kp = F.pad(k, (0, d))
            vv = v.unsqueeze(2).expand(b, h, 2, n, 2 * d).reshape(b, hh, n, 2 * d)
            out = _matmul_attention(qp, kp, vv, 1.0, self.attn_drop).reshape(b, h, 2, n, 2 * d)
            return out[:, :, 0], out[:, :, 1]
        # equal-heads-split: v in halves of d; each q/k head attends to both halves
        qs = (q * self.scale).unsqueeze(2).expand(b, hh, 2, n, d).reshape(b, 2 * hh, n, d)
        ks = k.unsqueeze(2).expand(b, hh, 2, n, d).reshape(b, 2 * hh, n, d)
        vs = v.reshape(b, h, n, 2, d).permute(0, 1, 3, 2, 4)  # [B, H, 2(half), N, d]
        vs = vs.unsqueeze(2).expand(b, h, 2, 2, n, d).reshape(b, 2 * hh, n, d)
        out = _matmul_attention(qs, ks, vs, 1.0, self.attn_drop).reshape(b, h, 2, 2, n, d)
        out = out.permute(0, 1, 2, 4, 3, 5).reshape(b, h, 2, n, 2 * d)
        return out[:, :, 0], out[:, :, 1]

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        self._check_mask(attn_mask, is_causal)
        b, n, c = x.shape
        q, k, v = self._qkv(x, 2 * self.num_heads, self.num_heads)
        o1, o2 = self._attend(q, k, v)
        out = o1 - self.lambda_value().to(x.dtype) * o2
        out = self.sub_norm(out) * (1.0 - self.lambda_init)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


DIFF_ATTENTION_TYPES = (PaperDiffAttention, DiffTransformerAttention)


def set_formulation(model: nn.Module, formulation: str) -> int:
    """Set the formulation of every differential-attention module in ``model``; returns how many."""
    check_formulation(formulation)
    count = 0
    for module in model.modules():
        if isinstance(module, DIFF_ATTENTION_TYPES):
            module.set_formulation(formulation)
            count += 1
    return count


def _check_timm_attention(attn: nn.Module, index: int) -> None:
    from timm.layers import Attention

    if not isinstance(attn, Attention):
        raise VCEError(f"block {index}: expected a timm Attention, found {type(attn).__name__}")
    extras = [
        name
        for name in ("q_norm", "k_norm", "norm")
        if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity)
    ]
    if extras or getattr(attn, "gate", None) is not None:
        raise VCEError(
            f"block {index}: attention with {extras or ['gate']} is not supported by the conversion"
        )


def convert_to_diff_attention(
    trunk: nn.Module, variant: str, blocks: list[int] | None = None, *, lambda_init: float | None = None
) -> None:
    """Replace the timm ``Attention`` of ``trunk.blocks`` (all, or ``blocks``) in place, keeping weights.

    ``variant``: ``paper``, ``diff`` or ``none`` (no change). ``lambda_init`` None: the variant's own.
    """
    if variant == Variant.NONE:
        return
    if variant not in tuple(Variant):
        raise VCEError(f"unknown attention variant {variant!r}; choose {', '.join(Variant)}")
    all_blocks = list(trunk.blocks)
    indices = range(len(all_blocks)) if blocks is None else blocks
    for i in indices:
        if not 0 <= i < len(all_blocks):
            raise VCEError(f"block {i} does not exist (the trunk has {len(all_blocks)} blocks)")
        old = all_blocks[i].attn
        _check_timm_attention(old, i)
        dim = old.qkv.in_features
        kwargs = dict(
            qkv_bias=old.qkv.bias is not None,
            proj_bias=old.proj.bias is not None,
            attn_drop=float(old.attn_drop.p),
        )
        if variant == "paper":
            init = PAPER_LAMBDA_INIT if lambda_init is None else lambda_init
            new: nn.Module = PaperDiffAttention(dim, old.num_heads, lambda_init=init, **kwargs)
        else:
            new = DiffTransformerAttention(
                dim, old.num_heads, layer_index=i, lambda_init=lambda_init, **kwargs
            )
        new.load_from_timm(old)
        new.to(device=old.qkv.weight.device, dtype=old.qkv.weight.dtype)
        all_blocks[i].attn = new
