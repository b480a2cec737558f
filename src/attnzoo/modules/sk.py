"""Selective Kernel convolution (SK).

Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019, arXiv:1903.06586.
Official code: https://github.com/implus/SKNet (Caffe).

A conv replacement (the 3x3 conv of a ResNeXt bottleneck), not a gate:

    Split:  U_m = ReLU(BN(GroupConv3x3_{dilation m+1, stride}(X)))    m = 0..M-1 (M = 2: the
            3x3 and the dilated "5x5" branch), G = 32 groups
    Fuse:   s = GAP(Σ_m U_m)                  (B, C_out)
            z = ReLU(BN(W_z · s))             W_z: C_out -> d, no bias, d = max(C_out / r, L)
    Select: a = softmax over m of (W_m · z)   per channel; W: d -> M·C_out (one 1x1 conv)
            V = Σ_m a_m · U_m

r = 16 and L = 32 as in the paper. ``groups`` must divide both channel counts.

``split_input=True`` feeds branch m only the m-th of M equal slices of the input channels
(timm's ``SelectiveKernel`` default, used by its ``skresnet*`` weights; not in the paper).
The recorded "channel" map is a_0, the weight of the 3x3 branch (B, C_out, 1, 1).
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import FLAG, RD_OPTIONS, Integer
from attnzoo.layers import ConvNormAct, RecordsMaps, check_input, reduced_channels, softmax_fp32
from attnzoo.registry import register


def _example_output_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Output shape at the example configuration (out_channels=64, stride=2)."""
    height, width = x.shape[-2:]
    return (x.shape[0], 64, (height - 1) // 2 + 1, (width - 1) // 2 + 1)


@register(
    "sk",
    options={
        **RD_OPTIONS,
        "out_channels": Integer(1, optional=True),
        "stride": Integer(1),
        "min_rd_channels": Integer(1),
        "groups": Integer(1),
        "num_branches": Integer(1),
        "split_input": FLAG,
    },
    paper="Selective Kernel Networks",
    authors="Li, Wang, Hu, Yang",
    year=2019,
    venue="CVPR",
    arxiv="1903.06586",
    code_url="https://github.com/implus/SKNet",
    category="channel",
    kind="conv",
    placement="conv_replace",
    maps=("channel",),
    memory="O(M·C·H·W) extra: the M branch outputs, no position-by-position matrix",
    example_options={"out_channels": 64, "stride": 2},
    output_shape=_example_output_shape,
)
class SelectiveKernelConv(nn.Module, RecordsMaps):
    """SK convolution: M dilated grouped 3x3 branches mixed by a per-channel softmax."""

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        stride: int = 1,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        min_rd_channels: int = 32,
        groups: int = 32,
        num_branches: int = 2,
        split_input: bool = False,
    ) -> None:
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        if split_input and channels % num_branches:
            raise ValueError(
                f"SK split_input divides the {channels} input channels among {num_branches} "
                "branches: channels must be divisible by num_branches"
            )
        branch_in = channels // num_branches if split_input else channels
        if branch_in % groups or out_channels % groups:
            raise ValueError(
                f"SK uses grouped convs with groups={groups}: in and out channels must be "
                f"divisible by it, got channels={channels}, out_channels={out_channels}"
            )
        if num_branches < 1 or stride < 1:
            raise ValueError(f"num_branches and stride must be >= 1, got {num_branches}, {stride}")
        self.channels = channels
        self.out_channels = out_channels
        self.num_branches = num_branches
        self.split_input = split_input
        # branch m: 3x3 conv with dilation m + 1 (receptive field 3, 5, 7, ...)
        self.branches = nn.ModuleList(
            ConvNormAct(branch_in, out_channels, 3, stride=stride, dilation=m + 1, groups=groups)
            for m in range(num_branches)
        )
        hidden = max(reduced_channels(out_channels, rd_ratio, rd_channels), min_rd_channels)
        self.fuse = ConvNormAct(out_channels, hidden, 1)  # W_z (no bias) -> BN -> ReLU
        self.select = nn.Conv2d(hidden, num_branches * out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "SK")
        inputs = [x] * self.num_branches
        if self.split_input:
            inputs = list(x.chunk(self.num_branches, dim=1))  # M x (B, C_in / M, H, W)
        feats = torch.stack(
            [branch(part) for branch, part in zip(self.branches, inputs, strict=True)], dim=1
        )  # (B, M, C, H, W)
        summary = feats.sum(dim=1).mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        logits = self.select(self.fuse(summary))  # (B, M·C, 1, 1)
        logits = logits.reshape(x.shape[0], self.num_branches, self.out_channels, 1, 1)
        attention = softmax_fp32(logits, dim=1)  # (B, M, C, 1, 1): softmax across branches
        self._record("channel", attention[:, 0])
        return (feats * attention).sum(dim=1)  # (B, C, H, W)
