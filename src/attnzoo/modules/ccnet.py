"""Criss-cross attention (CCNet).

Huang, Wang, Huang, Huang, Wei, Liu, "CCNet: Criss-Cross Attention for Semantic Segmentation",
ICCV 2019, arXiv:1811.11721. Official code: https://github.com/speedinghzl/CCNet
(``cc_attention``; the pure-PyTorch form of its CUDA op).

    Q, K = 1x1 convs C -> C/8, V = 1x1 conv C -> C
    d_{i,u} = Q_uᵀ Ω_{i,u}            Ω_u: the H + W − 1 keys in the row and column of u
    A_u     = softmax_i(d_{·,u})       ONE softmax over the joint H + W − 1 logits
    H'_u    = γ · Σ_i A_{i,u} Φ_{i,u} + H_u          Φ_u: the values on the same cross

The centre u lies in both its row and its column; it is counted once by masking it out of the
column logits with −inf (``layers.mask_fill_value``, built on the input's device). Applied
``recurrence`` times (R = 2 in the paper) with shared weights, so that information reaches
every position. Row and column logits are two einsums: memory O(N·(H+W)), never N×N.

Differences from the official code:
- ``residual_scale``: the official code multiplies the aggregate by a learnable γ initialised
  to 0 (identity at init); the paper's equation adds it unscaled. Default True (official, as the
  spec asks); False is the paper's equation.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import FLAG, RD_OPTIONS, Integer
from attnzoo.layers import check_input, mask_fill_value, reduced_channels, softmax_fp32
from attnzoo.registry import Divergence, register


@register(
    "cca",
    options={**RD_OPTIONS, "recurrence": Integer(1), "residual_scale": FLAG},
    paper="CCNet: Criss-Cross Attention for Semantic Segmentation",
    authors="Huang, Wang, Huang, Huang, Wei, Liu",
    year=2019,
    venue="ICCV",
    arxiv="1811.11721",
    code_url="https://github.com/speedinghzl/CCNet",
    category="self-attention",
    kind="gate",
    placement="stage_end",
    divergences=(
        Divergence("residual_scale", True, False, True, "official code scales by γ (0 at init)"),
    ),
    identity_at_init=True,
    memory="O(N·(H+W)): row and column logits only, never the N×N matrix",
    no_grad_params={
        "key.bias": "adds Q_uᵀb, a constant over the H+W-1 keys of u: the softmax ignores it",
    },
)
class CrissCrossAttention(nn.Module):
    """Recurrent criss-cross attention: ``x <- γ · CC(x) + x``, ``recurrence`` times."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        recurrence: int = 2,
        residual_scale: bool = True,
    ) -> None:
        super().__init__()
        if recurrence < 1:
            raise ValueError(f"recurrence must be >= 1, got {recurrence}")
        self.channels = channels
        self.recurrence = recurrence
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.query = nn.Conv2d(channels, hidden, 1)
        self.key = nn.Conv2d(channels, hidden, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1)) if residual_scale else None

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_i A_{i,u} Φ_{i,u} for every position u: (B, C, H, W) -> (B, C, H, W)."""
        height = x.shape[2]
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        q, k, v = self.query(x), self.key(x), self.value(x)
        # unscaled logits overflow fp16: logits, softmax and aggregation in float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            q, k, v = q.to(compute), k.to(compute), v.to(compute)
            column = torch.einsum("bchw,bcgw->bhwg", q, k)  # (B, H, W, H): keys (g, w)
            row = torch.einsum("bchw,bchv->bhwv", q, k)  # (B, H, W, W): keys (h, v)
            centre = torch.eye(height, dtype=torch.bool, device=x.device).unsqueeze(1)  # (H,1,H)
            column = column.masked_fill(centre, mask_fill_value(column.dtype))
            attention = softmax_fp32(torch.cat([column, row], dim=-1), dim=-1)  # (B,H,W,H+W)
            on_column, on_row = attention.split([height, x.shape[3]], dim=-1)
            out = torch.einsum("bhwg,bcgw->bchw", on_column, v) + torch.einsum(
                "bhwv,bchv->bchw", on_row, v
            )  # (B, C, H, W)
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "CrissCrossAttention")
        for _ in range(self.recurrence):
            context = self.aggregate(x)
            x = x + (context if self.gamma is None else self.gamma * context)
        return x
