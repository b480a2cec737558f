"""DANet: position attention (PAM), channel attention (CAM) and the dual-attention head.

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019,
arXiv:1809.02983. Official code: https://github.com/junfu1115/DANet
(``encoding/nn/da_att.py``, ``encoding/models/sseg/danet.py``).

    PAM:  q, k = 1x1 convs C -> C/8, v = 1x1 conv C -> C
          s_ij = softmax_j(q_iᵀ k_j)              (unscaled)
          E_i  = α · Σ_j s_ij v_j + X_i           α = 0 at init
    CAM:  energy = X Xᵀ (C×C over the N positions)
          x_ij = softmax_j(energy_ij)              (paper)
          E    = β · x X + X                        β = 0 at init
    Head: [3x3 conv-BN-ReLU -> PAM -> 3x3 conv-BN-ReLU] + [same with CAM] -> dropout -> 1x1
          classifier; C/4 inner channels.

PAM runs through ``scaled_dot_product_attention`` with ``scale=1`` (O(N) memory); CAM's C×C
matrix does not grow with N.

Differences from the official code:
- ``invert_energy`` (CAM): the official code takes softmax(rowmax(energy) − energy), which
  favours *dissimilar* channels, unlike the paper's softmax(energy). Default True (official
  form, as the spec asks); False is the paper's equation.
- ``aux_outputs`` (head): the official head also returns the PAM-only and CAM-only logits
  (each through its own dropout + 1x1 classifier) for auxiliary losses, as a tuple
  (fused, pam, cam); the paper describes only the fused output. Default True (official);
  False returns the fused logits alone. Dropout2d(0.1) precedes every classifier (official).
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import DROPOUT, FLAG, RD_OPTIONS, Integer
from attnzoo.layers import (
    ConvNormAct,
    attention_fp32,
    check_input,
    positions_first,
    positions_last,
    reduced_channels,
    softmax_fp32,
)
from attnzoo.registry import Divergence, register

_PAPER = dict(
    paper="Dual Attention Network for Scene Segmentation",
    authors="Fu, Liu, Tian, Li, Bao, Fang, Lu",
    year=2019,
    venue="CVPR",
    arxiv="1809.02983",
    code_url="https://github.com/junfu1115/DANet",
    category="self-attention",
)
_CAM_DIVERGENCE = Divergence(
    "invert_energy", True, False, True, "official CAM uses softmax(rowmax(E) - E)"
)
_EXAMPLE_CLASSES = 5


@register(
    "pam",
    options=RD_OPTIONS,
    kind="gate",
    placement="stage_end",
    identity_at_init=True,
    memory="O(N·C): scaled_dot_product_attention (scale=1), no N×N matrix",
    no_grad_params={
        "key.bias": "adds q_iᵀb, a constant over the keys j: the softmax is invariant to it",
    },
    **_PAPER,  # type: ignore[arg-type]
)
class PositionAttention(nn.Module):
    """PAM: ``α · Σ_j softmax_j(q_iᵀ k_j) v_j + X``; α = 0 makes it the identity at init."""

    def __init__(
        self, channels: int, rd_ratio: float = 1 / 8, rd_channels: int | None = None
    ) -> None:
        super().__init__()
        self.channels = channels
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.query = nn.Conv2d(channels, hidden, 1)
        self.key = nn.Conv2d(channels, hidden, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "PAM")
        q = positions_first(self.query(x))  # (B, 1, N, C/8)
        k = positions_first(self.key(x))  # (B, 1, N, C/8)
        v = positions_first(self.value(x))  # (B, 1, N, C)
        out = attention_fp32(q, k, v, scale=1.0)  # (B, 1, N, C)
        return self.gamma * positions_last(out, tuple(x.shape[2:])) + x


@register(
    "cam",
    options={"invert_energy": FLAG},
    kind="gate",
    placement="stage_end",
    identity_at_init=True,
    divergences=(_CAM_DIVERGENCE,),
    memory="O(C²) channel matrix; nothing grows with N beyond the input",
    **_PAPER,  # type: ignore[arg-type]
)
class ChannelAttention(nn.Module):
    """CAM: ``β · softmax(energy) X + X`` with energy = X Xᵀ over channels; β = 0 at init."""

    def __init__(self, channels: int, invert_energy: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.invert_energy = invert_energy
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "CAM")
        batch, channels, height, width = x.shape
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        # X Xᵀ sums N products of unnormalised features: overflows fp16, so float32 throughout
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.to(compute).reshape(batch, channels, height * width)  # (B, C, N)
            energy = flat @ flat.transpose(1, 2)  # (B, C, C)
            if self.invert_energy:
                energy = energy.amax(dim=-1, keepdim=True) - energy
            attention = softmax_fp32(energy, dim=-1)  # (B, C, C)
            out = (attention @ flat).reshape(batch, channels, height, width)  # (B, C, H, W)
        return self.gamma * out.to(x.dtype) + x


def _head_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (x.shape[0], _EXAMPLE_CLASSES, *x.shape[2:])


@register(
    "danet_head",
    options={
        **RD_OPTIONS,
        "num_classes": Integer(1),
        "dropout": DROPOUT,
        "invert_energy": FLAG,
        "aux_outputs": FLAG,
    },
    kind="head",
    placement="on the last stage of a dilated backbone (output stride 8)",
    divergences=(
        _CAM_DIVERGENCE,
        Divergence(
            "aux_outputs", True, False, True, "official head also returns PAM and CAM logits"
        ),
    ),
    memory="O(N·C): PAM through scaled_dot_product_attention, CAM C×C",
    example_options={"num_classes": _EXAMPLE_CLASSES},
    output_shape=_head_shape,
    no_grad_params={
        "pam.key.bias": "adds q_iᵀb, a constant over the keys j: the softmax is invariant to it",
    },
    **_PAPER,  # type: ignore[arg-type]
)
class DANetHead(nn.Module):
    """Dual-attention segmentation head: (B, C, H, W) features -> (B, num_classes, H, W) logits
    (a tuple ``(fused, pam_only, cam_only)`` with ``aux_outputs``)."""

    def __init__(
        self,
        channels: int,
        num_classes: int = 19,
        rd_ratio: float = 1 / 4,
        rd_channels: int | None = None,
        dropout: float = 0.1,
        invert_energy: bool = True,
        aux_outputs: bool = True,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.aux_outputs = aux_outputs
        inner = reduced_channels(channels, rd_ratio, rd_channels)
        self.pam_in = ConvNormAct(channels, inner, 3)
        self.pam = PositionAttention(inner)
        self.pam_out = ConvNormAct(inner, inner, 3)
        self.cam_in = ConvNormAct(channels, inner, 3)
        self.cam = ChannelAttention(inner, invert_energy=invert_energy)
        self.cam_out = ConvNormAct(inner, inner, 3)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(inner, num_classes, 1))
        if aux_outputs:
            self.pam_classifier = nn.Sequential(
                nn.Dropout2d(dropout), nn.Conv2d(inner, num_classes, 1)
            )
            self.cam_classifier = nn.Sequential(
                nn.Dropout2d(dropout), nn.Conv2d(inner, num_classes, 1)
            )

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_input(x, self.channels, "DANetHead")
        pam_features = self.pam_out(self.pam(self.pam_in(x)))
        cam_features = self.cam_out(self.cam(self.cam_in(x)))
        fused = self.classifier(pam_features + cam_features)
        if not self.aux_outputs:
            return fused
        return fused, self.pam_classifier(pam_features), self.cam_classifier(cam_features)
