"""Efficient Channel Attention (ECA).

Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020, arXiv:1910.03151.
Official code: https://github.com/BangguWu/ECANet

    y = GAP(X)                                          (B, C)
    w = sigmoid(conv1d_k(y))                            1-D conv along channels, no bias,
                                                        zero padding (k-1)/2
    Y = X · w

Kernel size, paper eq. (12): k = ψ(C) = |log2(C)/γ + b/γ|_odd with γ = 2, b = 1, i.e.
t = int(|log2(C) + b| / γ), k = t if t is odd else t + 1, at least 3. For the ResNet-50 stage
widths C = 256, 512, 1024, 2048 the formula gives k = 5, 5, 5, 7.

Differences from the official code:
- ``k_size``: the released ``eca_resnet*`` code does not evaluate the formula; it takes one fixed
  k per stage from the command line, and the released ResNet-50 checkpoint was trained with
  k = 3, 5, 5, 7 (``--ksize 3557``), which differs from the formula in the first stage (3 vs 5).
  ``k_size=None`` (default) is the paper's adaptive k; an odd integer fixes k as the code does
  (``eca_layer`` default 3).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnzoo.domains import Integer, Real
from attnzoo.layers import RecordsMaps, check_input
from attnzoo.registry import Divergence, register


def adaptive_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's k = ψ(C): the odd integer nearest above ``int(|log2(C) + b| / γ)``, at least 3."""
    ratio = abs(math.log2(channels) + beta) / gamma
    if not math.isfinite(ratio) or ratio > 2 * channels + 1:
        raise ValueError(
            f"ECA: gamma={gamma!r}, beta={beta!r} give a kernel of {ratio:g} taps for "
            f"{channels} channels; more than 2C+1 = {2 * channels + 1} taps only ever see zero "
            "padding (the paper uses gamma=2, beta=1)"
        )
    t = int(ratio)
    return max(t if t % 2 else t + 1, 3)


@register(
    "eca",
    options={
        "gamma": Real(0.0),
        "beta": Real(None),
        "k_size": Integer(1, odd=True, optional=True),
    },
    paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    authors="Wang, Wu, Zhu, Li, Zuo, Hu",
    year=2020,
    venue="CVPR",
    arxiv="1910.03151",
    code_url="https://github.com/BangguWu/ECANet",
    category="channel",
    kind="gate",
    placement="block_end",
    divergences=(
        Divergence(
            "k_size",
            None,
            None,
            3,
            "paper: adaptive k from C; released code: a fixed k per stage (R50 used 3,5,5,7)",
        ),
    ),
    maps=("channel",),
)
class EfficientChannelAttention(nn.Module, RecordsMaps):
    """ECA gate: ``X * sigmoid(conv1d_k(GAP(X)))`` with a k-tap conv across channels."""

    def __init__(
        self,
        channels: int,
        gamma: float = 2,
        beta: float = 1,
        k_size: int | None = None,
    ) -> None:
        super().__init__()
        if k_size is None:
            k_size = adaptive_kernel_size(channels, gamma, beta)
        elif (
            isinstance(k_size, bool) or not isinstance(k_size, int) or k_size < 1 or k_size % 2 == 0
        ):
            raise ValueError(f"ECA k_size must be a positive odd integer or None, got {k_size!r}")
        elif k_size > 2 * channels + 1:
            raise ValueError(
                f"ECA: k_size={k_size} is wider than 2C+1 = {2 * channels + 1} taps for "
                f"{channels} channels; the extra taps only ever see zero padding"
            )
        self.channels = channels
        self.k_size = k_size
        self.conv = nn.Conv1d(1, 1, k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "ECA")
        batch, channels = x.shape[:2]
        pooled = x.mean(dim=(2, 3)).view(batch, 1, channels)  # (B, 1, C): channels as a sequence
        gate = torch.sigmoid(self.conv(pooled)).view(batch, channels, 1, 1)  # (B, C, 1, 1)
        self._record("channel", gate)
        return x * gate
