"""Asymmetric non-local blocks: APNB (pyramid, self) and AFNB (fusion of two levels).

Zhu, Xu, Bai, Huang, Bai, "Asymmetric Non-local Neural Networks for Semantic Segmentation",
ICCV 2019, arXiv:1908.07678. Official code: https://github.com/MendelXu/ANN
(``models/seg/utils/apnb.py``, ``afnb.py``, ``nets/annn.py``).

    P(t)     = concat_s flatten(AdaptiveAvgPool_s(t)),  s ∈ (1, 3, 6, 8) -> S = 110 anchors
    APNB:  q = ReLU(BN(W_k X))   (query and key share one projection, d = C/2)
           k = P(q),  v = P(W_v X)
           context = W_o · softmax(d^-0.5 · q kᵀ) v          W_o zero-initialised
           Y = ReLU(BN(W_f · [context; X]))                  (C channels out)
    AFNB:  q = ReLU(BN(W_q H)),  k = P(ReLU(BN(W_k L))),  v = P(W_v L)   (separate projections)
           context = W_o · softmax(d^-0.5 · q kᵀ) v          (on the high-level grid)
           Y = BN(W_f · [context; H])                       (no ReLU)

The attention is N×S (S = 110), computed with ``scaled_dot_product_attention``; memory is O(N·C)
and the N×S matrix is never kept for backward.

What holds at initialisation: W_o = 0 makes the context exactly 0, so the block's output is
``fuse([0; X])`` — independent of the attention branch — but the fuse conv is a learned layer,
so neither block is the identity function (``identity_at_init`` is False).

AFNB's inputs are ``forward(high, low)``: the high-level map is the one being enhanced, its
channel count is ``channels`` and the output has its shape, so the first input is the gate-like
one (the official code takes ``forward(low, high)``; only the argument order differs).

Differences from the official code:
- ``dropout``: the official blocks end with Dropout2d(0.05); the paper does not mention it.
  Default 0.0 (paper); 0.05 reproduces the code.
- ``query_key_twice`` (APNB): the official APNB shares one conv-BN-ReLU for query and key
  (``f_query = f_key``) but calls it twice per forward, so in training its BatchNorm running
  statistics are updated twice per step (``num_batches_tracked`` grows by 2). The outputs are
  the same; eval-mode statistics differ. Default False (one call, the paper's shared
  projection); True reproduces the code's statistics.
- The official projections feeding a BN carry a conv bias that BN cancels, and the value conv's
  bias only adds W_o·b to the context (softmax rows sum to 1), which ``out_conv``'s bias already
  covers; these convs are bias-free here (same function class, no redundant parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.domains import DROPOUT, FLAG, RD_OPTIONS, Domain, Integer, IntTuple
from attnzoo.layers import (
    ConvNormAct,
    attention_fp32,
    check_input,
    positions_first,
    positions_last,
    reduced_channels,
)
from attnzoo.registry import Divergence, register

_PAPER = dict(
    paper="Asymmetric Non-local Neural Networks for Semantic Segmentation",
    authors="Zhu, Xu, Bai, Huang, Bai",
    year=2019,
    venue="ICCV",
    arxiv="1908.07678",
    code_url="https://github.com/MendelXu/ANN",
    category="self-attention",
    memory="O(N·C): attention over S pyramid anchors through scaled_dot_product_attention",
    no_grad_params={
        "out_conv.bias": "a per-channel constant that the training-mode BN after the fuse conv "
        "removes (it matters in eval mode)"
    },
)
_DROPOUT = Divergence("dropout", 0.0, 0.0, 0.05, "official blocks end with Dropout2d(0.05)")
_OPTIONS: dict[str, Domain] = {
    **RD_OPTIONS,
    "value_channels": Integer(1, optional=True),
    "pool_sizes": IntTuple(1),
    "dropout": DROPOUT,
}
_AFNB_OPTIONS = {**_OPTIONS, "low_channels": Integer(1, optional=True)}


def pyramid_pool(x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """Adaptive average pools of each size, flattened and concatenated: (B, C, H, W) ->
    (B, C, 1, S) with S = Σ s², kept 4-D so that :func:`positions_first` applies."""
    pooled = [F.adaptive_avg_pool2d(x, size).flatten(2) for size in sizes]  # (B, C, s²) each
    return torch.cat(pooled, dim=2).unsqueeze(2)  # (B, C, 1, S)


@register(
    "apnb",
    options={**_OPTIONS, "query_key_twice": FLAG},
    kind="gate",
    placement="stage_end",
    divergences=(
        _DROPOUT,
        Divergence(
            "query_key_twice",
            False,
            False,
            True,
            "code calls the shared query/key conv-BN twice: BN statistics update twice a step",
        ),
    ),
    **_PAPER,  # type: ignore[arg-type]
)
class AsymmetricPyramidNonLocal(nn.Module):
    """APNB: self-attention of every position over S = 110 pyramid-pooled anchors, fused with X."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 2,
        rd_channels: int | None = None,
        value_channels: int | None = None,
        pool_sizes: tuple[int, ...] = (1, 3, 6, 8),
        dropout: float = 0.0,
        query_key_twice: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.pool_sizes = tuple(pool_sizes)
        self.query_key_twice = query_key_twice
        self.key_channels = reduced_channels(channels, rd_ratio, rd_channels)
        value_channels = value_channels or self.key_channels
        self.query_key = ConvNormAct(channels, self.key_channels, 1)
        self.value = nn.Conv2d(channels, value_channels, 1, bias=False)
        self.out_conv = nn.Conv2d(value_channels, channels, 1)
        for p in self.out_conv.parameters():
            nn.init.zeros_(p)  # context = 0 at init
        self.fuse = nn.Sequential(ConvNormAct(2 * channels, channels, 1), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "APNB")
        embedded = self.query_key(x)  # (B, d, H, W)
        # the official code calls the shared projection again for the keys (same values)
        keys = self.query_key(x) if self.query_key_twice else embedded  # (B, d, H, W)
        q = positions_first(embedded)  # (B, 1, N, d)
        k = positions_first(pyramid_pool(keys, self.pool_sizes))  # (B, 1, S, d)
        v = positions_first(pyramid_pool(self.value(x), self.pool_sizes))  # (B, 1, S, dv)
        context = attention_fp32(q, k, v, scale=self.key_channels**-0.5)  # (B, 1, N, dv)
        context = self.out_conv(positions_last(context, tuple(x.shape[2:])))  # (B, C, H, W)
        return self.fuse(torch.cat([context, x], dim=1))


def _fusion_inputs(
    batch: int,
    channels: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    device: torch.device | str | None,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, ...]:
    # The low-level map has ``low_channels`` channels, by default as many as the high-level one:
    # the example follows the constructor's default so that it fits a module built at any width.
    high = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    low = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    return tuple(t.to(device) if device is not None else t for t in (high, low))


@register(
    "afnb",
    options=_AFNB_OPTIONS,
    kind="fusion",
    placement="between the last two stages: high = stage 4 output, low = stage 3 output",
    divergences=(_DROPOUT,),
    inputs=_fusion_inputs,
    **_PAPER,  # type: ignore[arg-type]
)
class AsymmetricFusionNonLocal(nn.Module):
    """AFNB: ``forward(high, low)``; high-level positions attend S pyramid anchors of the
    low-level map; the context is fused with the high-level map (output shape = high's)."""

    def __init__(
        self,
        channels: int,
        low_channels: int | None = None,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        value_channels: int | None = None,
        pool_sizes: tuple[int, ...] = (1, 3, 6, 8),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.low_channels = channels if low_channels is None else low_channels
        self.pool_sizes = tuple(pool_sizes)
        self.key_channels = reduced_channels(channels, rd_ratio, rd_channels)
        value_channels = value_channels or self.key_channels
        self.query = ConvNormAct(channels, self.key_channels, 1)
        self.key = ConvNormAct(self.low_channels, self.key_channels, 1)
        self.value = nn.Conv2d(self.low_channels, value_channels, 1, bias=False)
        self.out_conv = nn.Conv2d(value_channels, channels, 1)
        for p in self.out_conv.parameters():
            nn.init.zeros_(p)  # context = 0 at init
        self.fuse = nn.Sequential(
            ConvNormAct(2 * channels, channels, 1, act=False), nn.Dropout2d(dropout)
        )

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        check_input(high, self.channels, "AFNB (high-level input)")
        check_input(low, self.low_channels, "AFNB (low-level input)")
        q = positions_first(self.query(high))  # (B, 1, N_high, d)
        k = positions_first(pyramid_pool(self.key(low), self.pool_sizes))  # (B, 1, S, d)
        v = positions_first(pyramid_pool(self.value(low), self.pool_sizes))  # (B, 1, S, dv)
        context = attention_fp32(q, k, v, scale=self.key_channels**-0.5)  # (B, 1, N_high, dv)
        context = self.out_conv(positions_last(context, tuple(high.shape[2:])))  # (B, C, H, W)
        return self.fuse(torch.cat([context, high], dim=1))
