"""Global Second-order Pooling block (GSoP-Net1).

Gao, Xie, Wang, Li, "Global Second-order Pooling Convolutional Networks", CVPR 2019,
arXiv:1811.12006. Official code:
https://github.com/ZilinGao/Global-Second-order-Pooling-Convolutional-Networks
(``Bottleneck.chan_att`` / ``pos_att`` in torchvision/models/resnet.py).

Channel form (default), with X' = ReLU(BN(Conv1x1_{C->d}(X))) of N = H·W positions:

    Σ = (1/N) Σ_i (x'_i − μ)(x'_i − μ)ᵀ              (d x d; the mean is subtracted directly,
                                                      never through an N x N centring matrix)
    r = RowConv(RowBN(Σ))                            row-wise conv: groups = d, kernel (d, 1),
                                                      4d outputs (each row -> 4 values)
    s = sigmoid(W · act(r))                           W: 1x1 conv 4d -> C
    Y = X · s

Spatial form (``mode="spatial"``): X' = BN(Conv1x1_{C->d}(X)) average-pooled to P x P (P = 8);
the covariance is taken across the P² positions (the d channels are the samples), giving a
P² x P² matrix; RowBN, row-wise conv (4P² outputs), ReLU, 1x1 conv 4P² -> P², sigmoid, reshape
to (1, P, P) and resize to H x W by adaptive average pooling; Y = X · gate.

The official code divides the covariance by N (biased), as here; RowBN is in the paper
("row-wise normalization") and in the code. The row-wise and last 1x1 convs carry biases as in
the official code; the reducing 1x1 conv does not (the official one has a bias, which the BN
right after it cancels: it would never receive a gradient).

Differences from the official code:
- ``input_relu``: the official block applies ReLU to the gate's input (it sits after ``bn3``,
  before the residual add); the paper does not mention it. Default False (paper).
- ``row_act``: the official channel branch has no nonlinearity between the row-wise conv and
  the last 1x1 conv (``"none"``, default, as in the spec); the paper's text describes a
  nonlinear activation there (``"leaky_relu"``, slope 0.1 as reported for the paper; this
  detail was taken from a secondary summary, not checked against the PDF). The official
  spatial branch uses ReLU there, which the spatial form always does.
- ``reduce_stride``: the official network reduces with stride 2 in stage 1 (``planes <= 64``)
  to make the covariance cheaper; default 1.
- ``spatial_norm`` (spatial form only): the official ``cov_feature`` centres across the d
  channels but divides by the number of positions, ``XᵀX/P² − (Xᵀ1)(1ᵀX)/P⁴`` (``"code"``);
  the true covariance across positions divides by d (``"channels"``, default).
- ``output_relu`` (spatial form only): the official spatial block returns ``ReLU(X · gate)``;
  the paper's gate output is ``X · gate``. Default False (paper); True reproduces the code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.domains import FLAG, Choice, Integer
from attnzoo.layers import RecordsMaps, check_input, run_fp32
from attnzoo.registry import Divergence, register

_MODES = ("channel", "spatial")
_ACTS = ("none", "leaky_relu", "relu")
_SPATIAL_NORMS = ("channels", "code")


def _row_act(name: str) -> nn.Module:
    if name == "none":
        return nn.Identity()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1)
    return nn.ReLU()


@register(
    "gsop",
    options={
        "rd_channels": Integer(1),
        "mode": Choice(_MODES),
        "pooled_size": Integer(1),
        "input_relu": FLAG,
        "row_act": Choice(_ACTS),
        "reduce_stride": Integer(1),
        "spatial_norm": Choice(_SPATIAL_NORMS),
        "output_relu": FLAG,
    },
    paper="Global Second-order Pooling Convolutional Networks",
    authors="Gao, Xie, Wang, Li",
    year=2019,
    venue="CVPR",
    arxiv="1811.12006",
    code_url="https://github.com/ZilinGao/Global-Second-order-Pooling-Convolutional-Networks",
    category="second-order",
    kind="gate",
    placement="last_block",
    divergences=(
        Divergence("input_relu", False, False, True, "official block ReLUs the gate input"),
        Divergence("row_act", "none", "leaky_relu", "none", "activation after the row-wise conv"),
        Divergence("reduce_stride", 1, 1, 2, "official stage-1 blocks reduce with stride 2"),
        Divergence(
            "spatial_norm", "channels", "channels", "code", "spatial covariance normalisation"
        ),
        Divergence(
            "output_relu", False, False, True, "official spatial block returns ReLU(X · gate)"
        ),
    ),
    maps=("channel",),
    example_options={"rd_channels": 16},
    memory="O(d²) extra: a d x d covariance per image (P⁴ in spatial form), never N x N",
)
class GlobalSecondOrderPooling(nn.Module, RecordsMaps):
    """GSoP gate: sigmoid of a row-wise-convolved covariance, channel-wise (or spatial)."""

    def __init__(
        self,
        channels: int,
        rd_channels: int = 128,
        mode: str = "channel",
        pooled_size: int = 8,
        input_relu: bool = False,
        row_act: str = "none",
        reduce_stride: int = 1,
        spatial_norm: str = "channels",
        output_relu: bool = False,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if row_act not in _ACTS:
            raise ValueError(f"row_act must be one of {_ACTS}, got {row_act!r}")
        if spatial_norm not in ("channels", "code"):
            raise ValueError(f"spatial_norm must be 'channels' or 'code', got {spatial_norm!r}")
        if rd_channels < 1 or pooled_size < 1 or reduce_stride < 1:
            raise ValueError(
                "rd_channels, pooled_size and reduce_stride must be >= 1, got "
                f"{rd_channels}, {pooled_size}, {reduce_stride}"
            )
        if output_relu and mode != "spatial":
            raise ValueError(
                "GSoP output_relu=True is the official spatial form's ReLU(X · gate); it needs "
                f"mode='spatial', got mode={mode!r}"
            )
        self.channels = channels
        self.mode = mode
        self.output_relu = output_relu
        self.pooled_size = pooled_size
        self.input_relu = input_relu
        self.spatial_norm = spatial_norm
        stride = reduce_stride if mode == "channel" else 1
        self.reduce = nn.Conv2d(channels, rd_channels, 1, stride=stride, bias=False)
        self.reduce_bn = nn.BatchNorm2d(rd_channels)
        # rows of the covariance: d channels (channel form) or P² positions (spatial form)
        rows = rd_channels if mode == "channel" else pooled_size * pooled_size
        self.row_bn = nn.BatchNorm2d(rows)
        self.row_conv = nn.Conv2d(rows, 4 * rows, kernel_size=(rows, 1), groups=rows)
        self.row_act = _row_act(row_act if mode == "channel" else "relu")
        self.fc = nn.Conv2d(4 * rows, channels if mode == "channel" else rows, 1)

    def _covariance_gate(self, cov: torch.Tensor) -> torch.Tensor:
        rows = cov.shape[1]
        cov = cov.reshape(cov.shape[0], rows, rows, 1)  # (B, rows, rows, 1): row r = channel r
        out = self.row_act(self.row_conv(self.row_bn(cov)))  # (B, 4·rows, 1, 1)
        return torch.sigmoid(self.fc(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "GSoP")
        feats = F.relu(x) if self.input_relu else x
        feats = self.reduce_bn(self.reduce(feats))  # (B, d, H', W')
        # A covariance sums products of unnormalised features and overflows fp16 at large
        # activation scales: under autocast it and the layers reading it (up to the sigmoid)
        # run in float32.
        if self.mode == "channel":
            gate = run_fp32(self._channel_gate, feats, dtype=x.dtype)  # (B, C, 1, 1)
            self._record("channel", gate)
            return x * gate
        gate = run_fp32(self._spatial_gate, feats, dtype=x.dtype)  # (B, 1, P, P)
        gate = F.adaptive_avg_pool2d(gate, (x.shape[-2], x.shape[-1]))  # (B, 1, H, W)
        self._record("spatial", gate)
        out = x * gate
        return F.relu(out) if self.output_relu else out

    def _channel_gate(self, feats: torch.Tensor) -> torch.Tensor:
        """Covariance of the d channels over the N positions -> gate (B, C, 1, 1)."""
        feats = F.relu(feats).flatten(2)  # (B, d, N)
        centred = feats - feats.mean(dim=2, keepdim=True)
        cov = torch.bmm(centred / feats.shape[2], centred.transpose(1, 2))  # (B, d, d)
        return self._covariance_gate(cov)

    def _spatial_gate(self, feats: torch.Tensor) -> torch.Tensor:
        """Covariance of the P² pooled positions over the d channels -> gate (B, 1, P, P)."""
        size = self.pooled_size
        feats = F.adaptive_avg_pool2d(feats, size).flatten(2)  # (B, d, P²): d samples
        depth = feats.shape[1]
        if self.spatial_norm == "channels":
            centred = feats - feats.mean(dim=1, keepdim=True)
            cov = torch.bmm(centred.transpose(1, 2) / depth, centred)  # (B, P², P²)
        else:
            positions = size * size
            total = feats.sum(dim=1, keepdim=True)  # (B, 1, P²) = 1ᵀX
            cov = torch.bmm(feats.transpose(1, 2) / positions, feats) - torch.bmm(
                total.transpose(1, 2) / positions, total / positions
            )  # (B, P², P²)
        return self._covariance_gate(cov).reshape(feats.shape[0], 1, size, size)  # (B, 1, P, P)
