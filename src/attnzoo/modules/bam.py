"""Bottleneck Attention Module (BAM).

Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018, arXiv:1807.06514.
Official code: https://github.com/Jongchan/attention-module (MODELS/bam.py).

    Mc(F) = MLP(GAP(F))                        (B, C, 1, 1)   C -> C/16 -> C
    Ms(F) = f1x1(d3x3(d3x3(f1x1(F))))          (B, 1, H, W)   C -> C/16 -> C/16 -> C/16 -> 1,
                                                              3x3 convs with dilation 4,
                                                              padding 4 (H×W kept for any size)
    M(F)  = sigmoid(Mc(F) + Ms(F))             broadcast to (B, C, H, W)      (paper, eq. 2)
    F'    = F + F · M(F)

Placement: once at the end of each of the first three ResNet stages (``stage_end``).

Recorded maps (what each one is): ``"channel"`` = Mc(F), the channel branch's logits
(B, C, 1, 1) before combination; ``"spatial"`` = Ms(F), the spatial branch's logits
(B, 1, H, W) before combination; ``"mask"`` = the full multiplier 1 + M(F) (B, C, H, W), so
``F' = F · mask``. The branch maps are logits, not probabilities: with the paper's sum neither
branch is squashed on its own.

Differences from the official code:
- ``combine``: the paper sums the branches, M = sigmoid(Mc + Ms) (its ablation prefers the sum);
  the official code multiplies them, ``att = 1 + sigmoid(Mc · Ms); out = att · F``.
  Default ``"sum"`` (paper); ``"product"`` (code).
- ``branch_norm``: the paper's eqs. (3)-(4) put one BatchNorm at the *output* of each branch,
  ``Mc = BN(W1(W0·GAP + b0) + b1)``, ``Ms = BN(f3(f2(f1(f0(F)))))``; the official code (and
  this project's spec) put BN + ReLU after every *hidden* layer and no BN at the output.
  Default ``"hidden"`` (code, as the spec prescribes); ``"output"`` (paper's equations, hidden
  layers with bias and ReLU).
- Biases directly followed by a BatchNorm are dropped (the official code keeps them): BN
  subtracts the batch mean, so they have no effect in training and an exactly-zero gradient.
- ``channel_pool``: the official channel branch pools with ``avg_pool2d(x, H, stride=H)``,
  which is global only on square maps: for H < W < 2H it averages the left H×H square alone,
  and for other non-square maps the official code fails. Default ``"global"`` (the paper's
  GAP over H×W, any shape); ``"kernel_h"`` reproduces the code where it is defined
  (H <= W < 2H) and raises a ValueError elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import RD_OPTIONS, Choice, Integer
from attnzoo.layers import ConvNormAct, RecordsMaps, check_input, reduced_channels
from attnzoo.registry import Divergence, register

COMBINES = ("sum", "product")
BRANCH_NORMS = ("hidden", "output")
CHANNEL_POOLS = ("global", "kernel_h")


@register(
    "bam",
    options={
        **RD_OPTIONS,
        "dilation": Integer(1),
        "num_dilated": Integer(0),
        "combine": Choice(COMBINES),
        "branch_norm": Choice(BRANCH_NORMS),
        "channel_pool": Choice(CHANNEL_POOLS),
    },
    paper="BAM: Bottleneck Attention Module",
    authors="Park, Woo, Lee, Kweon",
    year=2018,
    venue="BMVC",
    arxiv="1807.06514",
    code_url="https://github.com/Jongchan/attention-module",
    category="hybrid",
    kind="gate",
    placement="stage_end",
    divergences=(
        Divergence("combine", "sum", "sum", "product", "code: 1 + sigmoid(Mc * Ms)"),
        Divergence(
            "branch_norm", "hidden", "output", "hidden", "paper: BN at branch outputs (eqs. 3-4)"
        ),
        Divergence(
            "channel_pool",
            "global",
            "global",
            "kernel_h",
            "code: avg_pool2d with kernel H, global only on square maps",
        ),
    ),
    maps=("channel", "spatial", "mask"),
)
class BAM(nn.Module, RecordsMaps):
    """BAM: ``F + F * sigmoid(Mc(F) + Ms(F))`` with a channel MLP and a dilated spatial branch."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        dilation: int = 4,
        num_dilated: int = 2,
        combine: str = "sum",
        branch_norm: str = "hidden",
        channel_pool: str = "global",
    ) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"BAM combine must be one of {COMBINES}, got {combine!r}")
        if branch_norm not in BRANCH_NORMS:
            raise ValueError(f"BAM branch_norm must be one of {BRANCH_NORMS}, got {branch_norm!r}")
        self.channels = channels
        self.combine = combine
        self.branch_norm = branch_norm
        self.channel_pool = channel_pool
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        spatial: list[nn.Module]
        if branch_norm == "hidden":
            self.channel_gate = nn.Sequential(
                nn.Linear(channels, hidden, bias=False),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, channels),
            )
            spatial = [ConvNormAct(channels, hidden, 1)]
            spatial += [
                ConvNormAct(hidden, hidden, 3, padding=dilation, dilation=dilation)
                for _ in range(num_dilated)
            ]
            spatial.append(nn.Conv2d(hidden, 1, 1))
        else:
            self.channel_gate = nn.Sequential(
                nn.Linear(channels, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, channels, bias=False),
                nn.BatchNorm1d(channels),
            )
            spatial = [nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True)]
            for _ in range(num_dilated):
                spatial += [
                    nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                    nn.ReLU(inplace=True),
                ]
            spatial += [nn.Conv2d(hidden, 1, 1, bias=False), nn.BatchNorm2d(1)]
        self.spatial_gate = nn.Sequential(*spatial)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """The channel branch's pooling: (B, C, H, W) -> (B, C)."""
        if self.channel_pool == "global":
            return x.mean(dim=(2, 3))
        height, width = x.shape[-2:]
        if not height <= width < 2 * height:
            raise ValueError(
                "BAM channel_pool='kernel_h' (the official avg_pool2d with kernel and stride H) "
                f"is defined only for H <= W < 2H, got {height}x{width}; use "
                "channel_pool='global' (the paper's global average pooling)"
            )
        return x[..., :height].mean(dim=(2, 3))  # the one H×H window the official pool sees

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "BAM")
        batch = x.shape[0]
        channel = self.channel_gate(self._pool(x))  # (B, C)
        channel = channel.view(batch, self.channels, 1, 1)  # (B, C, 1, 1)
        spatial = self.spatial_gate(x)  # (B, 1, H, W)
        self._record("channel", channel)
        self._record("spatial", spatial)
        if self.combine == "sum":
            attention = torch.sigmoid(channel + spatial)  # (B, C, H, W)
        else:
            attention = torch.sigmoid(channel * spatial)  # (B, C, H, W)
        if self.record_maps:  # the full multiplier costs a (B, C, H, W) tensor: only on request
            self._record("mask", 1 + attention)
        return x + x * attention
