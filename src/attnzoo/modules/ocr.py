"""Object-Contextual Representations (OCR) segmentation head.

Yuan, Chen, Wang, "Object-Contextual Representations for Semantic Segmentation", ECCV 2020,
arXiv:1909.11065.
Official code: https://github.com/HRNet/HRNet-Semantic-Segmentation (branch HRNet-OCR,
``lib/models/seg_hrnet_ocr.py``) and https://github.com/openseg-group/openseg.pytorch.

On backbone features X (B, C, H, W), N = H·W positions, K = num_classes:

    L   = aux(X)                                    soft object regions (B, K, H, W):
                                                    1x1 conv-BN-ReLU (C) -> 1x1 conv (K)
    X'  = ReLU(BN(conv3x3(X)))                      pixel representations, C -> mid
    M_k = softmax_i(L_k)                            over the N positions, per class
    f_k = Σ_i M_ki · x'_i                           object region representations (mid)
    q_i = φ(x'_i), k_k = ψ(f_k), v_k = δ(f_k)       1x1 conv-BN-ReLU projections -> key
    w_ik = softmax_k(s · q_iᵀ k_k)                  pixel-region relation over the K objects
    y_i = ρ(Σ_k w_ik v_k)                           object-contextual representation, -> mid
    z_i = g([y_i, x'_i])                            1x1 conv-BN-ReLU 2·mid -> mid (+ dropout)
    logits = W_cls z + b                            1x1 conv -> K

``forward(x)`` returns ``(logits, aux_logits)`` at the feature resolution, in training and
in evaluation; :meth:`OCRHead.loss` is the paper's objective
``CE(logits) + 0.4 · CE(aux_logits)`` (``aux_loss_weight``). The pixel-region attention runs
through ``scaled_dot_product_attention`` (memory O(N·K), never an N×N matrix).

Differences from the official code:
- ``scaled``: the paper's relation (Eq. 3) is ``softmax(φ(x)ᵀψ(f))`` without scaling; the
  code multiplies the logits by ``key_channels^-0.5``. Default True (the code and this
  project's spec), ``scaled=False`` is the paper's form.
- ``proj_layers``: the paper describes φ and ψ as one 1x1 conv → BN → ReLU; the code stacks
  two (in → key → key). Default 1 (paper), ``proj_layers=2`` for the code.
- ``dropout``: the paper does not mention it; HRNet-OCR applies Dropout2d(0.05) after g
  (openseg.pytorch: 0.1). Default 0.05 (the released model whose numbers the paper reports).
- The code's 1x1/3x3 convs that feed a BN carry a bias, which the BN cancels; left out here.
- Widths: the paper and code use ``mid_channels=512``, ``key_channels=256``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.domains import DROPOUT, FLAG, Integer, Real
from attnzoo.layers import ConvNormAct, attention_fp32, check_input, softmax_fp32
from attnzoo.registry import Divergence, register

_EXAMPLE_CLASSES = 5


def _head_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Logits (B, num_classes, H, W) at the example configuration."""
    return (x.shape[0], _EXAMPLE_CLASSES, x.shape[2], x.shape[3])


def _projection(in_channels: int, out_channels: int, layers: int) -> nn.Sequential:
    blocks = [ConvNormAct(in_channels, out_channels)]
    blocks += [ConvNormAct(out_channels, out_channels) for _ in range(layers - 1)]
    return nn.Sequential(*blocks)


@register(
    "ocr_head",
    options={
        "num_classes": Integer(1),
        "mid_channels": Integer(1),
        "key_channels": Integer(1),
        "scaled": FLAG,
        "proj_layers": Integer(1),
        "dropout": DROPOUT,
        "aux_loss_weight": Real(0.0, closed_low=True),
    },
    paper="Object-Contextual Representations for Semantic Segmentation",
    authors="Yuan, Chen, Wang",
    year=2020,
    venue="ECCV",
    arxiv="1909.11065",
    code_url="https://github.com/HRNet/HRNet-Semantic-Segmentation/tree/HRNet-OCR",
    category="self-attention",
    kind="head",
    placement="head",
    divergences=(
        Divergence("scaled", True, False, True, "code scales the relation logits by d^-0.5"),
        Divergence("proj_layers", 1, 1, 2, "code stacks two conv-BN-ReLU for query and key"),
        Divergence("dropout", 0.05, 0.0, 0.05, "paper silent; HRNet-OCR Dropout2d(0.05)"),
    ),
    memory="O(N·K): pixel-to-object attention over K classes (SDPA), never N×N",
    example_options={
        "num_classes": _EXAMPLE_CLASSES,
        "mid_channels": 16,
        "key_channels": 8,
    },
    output_shape=_head_shape,
)
class OCRHead(nn.Module):
    """OCR head: features (B, C, H, W) -> ``(logits, aux_logits)``, both (B, K, H, W)."""

    def __init__(
        self,
        channels: int,
        num_classes: int = 19,
        mid_channels: int = 512,
        key_channels: int = 256,
        scaled: bool = True,
        proj_layers: int = 1,
        dropout: float = 0.05,
        aux_loss_weight: float = 0.4,
    ) -> None:
        super().__init__()
        if proj_layers < 1:
            raise ValueError(f"proj_layers must be >= 1, got {proj_layers}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.channels = channels
        self.num_classes = num_classes
        self.key_channels = key_channels
        self.scale = key_channels**-0.5 if scaled else 1.0
        self.aux_loss_weight = aux_loss_weight
        self.aux_head = nn.Sequential(
            ConvNormAct(channels, channels), nn.Conv2d(channels, num_classes, 1)
        )
        self.pixel_reduce = ConvNormAct(channels, mid_channels, 3)
        self.query = _projection(mid_channels, key_channels, proj_layers)  # φ
        self.key = _projection(mid_channels, key_channels, proj_layers)  # ψ
        self.value = ConvNormAct(mid_channels, key_channels)  # δ
        self.up = ConvNormAct(key_channels, mid_channels)  # ρ
        self.fuse = nn.Sequential(
            ConvNormAct(2 * mid_channels, mid_channels), nn.Dropout2d(dropout)
        )
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)

    @staticmethod
    def gather(feats: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
        """Object region representations f_k = Σ_i softmax_i(L_k) x_i -> (B, C, K, 1)."""
        b, c = feats.shape[:2]
        k = region_logits.shape[1]
        n = region_logits.shape[2] * region_logits.shape[3]
        regions = softmax_fp32(region_logits.reshape(b, k, n), dim=-1)  # (B, K, N)
        objects = regions @ feats.reshape(b, c, n).transpose(1, 2)  # (B, K, C)
        return objects.transpose(1, 2).unsqueeze(-1)  # (B, C, K, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, self.channels, "OCR head")
        b, _, h, w = x.shape
        aux_logits = self.aux_head(x)  # (B, K, H, W)
        feats = self.pixel_reduce(x)  # (B, mid, H, W)
        objects = self.gather(feats, aux_logits)  # (B, mid, K, 1)
        query = self.query(feats).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, d)
        key = self.key(objects).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, K, d)
        value = self.value(objects).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, K, d)
        context = attention_fp32(query, key, value, self.scale)  # (B, 1, N, d)
        context = context[:, 0].transpose(1, 2).reshape(b, self.key_channels, h, w)  # (B, d, H, W)
        fused = self.fuse(torch.cat((self.up(context), feats), dim=1))  # (B, mid, H, W)
        return self.classifier(fused), aux_logits

    def loss(
        self,
        outputs: tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        ignore_index: int = -100,
    ) -> torch.Tensor:
        """``CE(logits, target) + aux_loss_weight · CE(aux_logits, target)``.

        ``target`` (B, H', W') holds class indices; logits of another size are bilinearly
        upsampled to it first (``align_corners=False``).
        """
        logits, aux_logits = outputs
        if target.dim() != 3:
            raise ValueError(
                f"OCR loss expects a (B, H, W) target of class indices, got shape {tuple(target.shape)}"
            )
        size = tuple(target.shape[-2:])

        def resize(t: torch.Tensor) -> torch.Tensor:
            if tuple(t.shape[-2:]) == size:
                return t
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        main = F.cross_entropy(resize(logits), target, ignore_index=ignore_index)
        aux = F.cross_entropy(resize(aux_logits), target, ignore_index=ignore_index)
        return main + self.aux_loss_weight * aux
