"""Global Context block (GC).

Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
ICCV Workshops 2019, arXiv:1904.11492.
Official code: https://github.com/xvjiarui/GCNet (mmdet/ops/gcb/context_block.py).

    α_j     = exp(W_k x_j) / Σ_m exp(W_k x_m)            W_k: 1x1 conv C -> 1, softmax over N = H·W
    context = Σ_j α_j x_j                                 (B, C, 1, 1)       ('att' pooling)
              or GAP(X)                                                      ('avg' pooling)
    δ(c)    = W_v2 ReLU(LN(W_v1 c))                       C -> C·ratio -> C, LN over (C·ratio, 1, 1)
    Y       = X + δ(context)                              fusion 'add' (default)
              X · sigmoid(δ(context))                     fusion 'mul'

The last 1x1 conv of δ is zero-initialised (as the official ``last_zero_init``), so with
fusion 'add' the block is the identity at initialisation. Ratio: default 1/16, the paper's
ImageNet/COCO setting ("r16"); 1/4 ("r4") is its other reported setting.

Recorded maps: ``"spatial"`` = the softmax context weights α (B, 1, H, W) ('att' pooling only;
'avg' pooling computes no map).

Differences from the official code (no option needed; the behaviour is identical):
- The mask conv W_k has no bias. The official ``conv_mask`` has one, but softmax is invariant
  to adding a constant to every logit, so that bias changes nothing and always gets an exactly
  zero gradient; drop ``conv_mask.bias`` when loading official weights.
- The official block can apply both fusions at once (``fusion_types=('channel_add',
  'channel_mul')``, mul first then add); here ``fusion`` is one of 'add' or 'mul', the two
  forms the paper compares.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.domains import RD_OPTIONS, Choice
from attnzoo.layers import RecordsMaps, check_input, pointwise, reduced_channels, softmax_fp32
from attnzoo.registry import register

POOLINGS = ("att", "avg")
FUSIONS = ("add", "mul")


@register(
    "gc",
    options={**RD_OPTIONS, "pooling": Choice(POOLINGS), "fusion": Choice(FUSIONS)},
    paper="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
    authors="Cao, Xu, Lin, Wei, Hu",
    year=2019,
    venue="ICCVW",
    arxiv="1904.11492",
    code_url="https://github.com/xvjiarui/GCNet",
    category="context",
    kind="gate",
    placement="block_end",
    maps=("spatial",),
    identity_at_init=True,
    # 64 channels: the transform is 4 wide; at 2 wide LayerNorm maps everything to ±1 and
    # the first conv's gradient nearly vanishes, which hides nothing but tests little
    example_channels=64,
)
class GlobalContext(nn.Module, RecordsMaps):
    """GC block: softmax-pooled global context, bottleneck transform with LayerNorm, add/mul."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        pooling: str = "att",
        fusion: str = "add",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"GC pooling must be one of {POOLINGS}, got {pooling!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"GC fusion must be one of {FUSIONS}, got {fusion!r}")
        self.channels = channels
        self.pooling = pooling
        self.fusion = fusion
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.conv_mask = nn.Conv2d(channels, 1, 1, bias=False) if pooling == "att" else None
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming (fan-in) mask conv; zero last transform conv (identity at init for 'add')."""
        if self.conv_mask is not None:
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        last = cast(nn.Conv2d, self.transform[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(cast(torch.Tensor, last.bias))

    def _transform(self, context: torch.Tensor) -> torch.Tensor:
        """``self.transform`` (1x1 conv, LayerNorm over [C/r, 1, 1], ReLU, 1x1 conv) on (B, C)
        context vectors, as matrix products (:func:`attnzoo.layers.pointwise`)."""
        conv1, norm, act, conv2 = cast(
            tuple[nn.Conv2d, nn.LayerNorm, nn.ReLU, nn.Conv2d], tuple(self.transform)
        )
        hidden = pointwise(context, conv1)
        hidden = F.layer_norm(
            hidden, hidden.shape[1:], norm.weight.flatten(), norm.bias.flatten(), norm.eps
        )
        return pointwise(act(hidden), conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "GC")
        batch, channels, height, width = x.shape
        if self.conv_mask is None:
            context = x.mean(dim=(2, 3))  # (B, C)
        else:
            logits = self.conv_mask(x).reshape(batch, 1, height * width)  # (B, 1, N)
            weights = softmax_fp32(logits, dim=-1)  # (B, 1, N)
            self._record("spatial", weights.view(batch, 1, height, width))
            values = x.reshape(batch, channels, height * width)  # (B, C, N)
            context = torch.matmul(values, weights.transpose(1, 2))  # (B, C, 1)
        delta = self._transform(context.view(batch, channels)).view(batch, channels, 1, 1)
        if self.fusion == "add":
            return x + delta
        return x * torch.sigmoid(delta)
