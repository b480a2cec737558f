"""Non-local block (image and video forms).

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, arXiv:1711.07971.
Official code: https://github.com/facebookresearch/video-nonlocal-net (Caffe2,
``lib/models/nonlocal_helper.py``).

    y_i = 1/C(x) · Σ_j f(x_i, x_j) · g(x_j)              θ, φ, g: 1x1 convs C -> C/2
    z   = X + BN(W_z · y)                                BN weight initialised to 0

Pairwise functions f (``pairwise``):
- ``embedded_gaussian`` (default): softmax_j(θ_iᵀ φ_j · s), s = (C/2)^-0.5 (see below);
- ``gaussian``: softmax_j(x_iᵀ x_j) (θ, φ are the identity; unscaled, as the paper);
- ``dot_product``: θ_iᵀ φ_j / N';
- ``concatenation``: ReLU(w_fᵀ [θ_i; φ_j]) / N'.
N' is the number of key positions (after sub-sampling). With ``sub_sample`` a 2x2 max-pool
(1x2x2 in the video form) shrinks the φ/g path by 4.

Memory: the softmax forms run through ``scaled_dot_product_attention`` (O(N) memory); dot
product is linear in f, so y = θ (φᵀ g) / N' is computed right to left without the N×N'
matrix. Concatenation is not separable (ReLU of a sum) and keeps the N×N' matrix.

Differences from the official code:
- ``scaled``: the official code multiplies θᵀφ by (C/2)^-0.5 before the softmax
  (``NONLOCAL.USE_SCALE``); the paper's equation has no scale. Default True (official form, as
  the spec asks); ``scaled=False`` is the paper's equation. Applies to ``embedded_gaussian``.
- ``pool_input``: the paper sub-samples by "a max pooling layer after φ and g"; the official
  code max-pools the block input and then applies the φ and g convs (a max-pool does not commute
  with a channel-mixing conv, so the two differ). Default False (paper); True is the code's form.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import FLAG, RD_OPTIONS, Choice
from attnzoo.layers import (
    attention_fp32,
    check_input,
    check_min_size,
    positions_first,
    positions_last,
    reduced_channels,
    run_fp32,
)
from attnzoo.registry import Divergence, register, video_inputs

PAIRWISE = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")

_INFO = dict(
    options={
        **RD_OPTIONS,
        "pairwise": Choice(PAIRWISE),
        "sub_sample": FLAG,
        "scaled": FLAG,
        "pool_input": FLAG,
    },
    paper="Non-local Neural Networks",
    authors="Wang, Girshick, Gupta, He",
    year=2018,
    venue="CVPR",
    arxiv="1711.07971",
    code_url="https://github.com/facebookresearch/video-nonlocal-net",
    category="self-attention",
    placement="between_stages",
    divergences=(
        Divergence("scaled", True, False, True, "official code scales θᵀφ by (C/2)^-0.5"),
        Divergence(
            "pool_input", False, False, True, "official code pools the input before φ/g convs"
        ),
    ),
    identity_at_init=True,
    memory=(
        "O(N·C): scaled_dot_product_attention (embedded Gaussian, Gaussian), right-to-left "
        "product (dot product); concatenation materialises the N×N' matrix (O(N·N'))"
    ),
    min_size=2,
    no_grad_params={
        "phi.bias": "adds θ_iᵀb to every logit of row i, a constant over the keys j: the "
        "softmax is invariant to it (kept because the official code has it)",
        "g.bias": "softmax rows sum to 1, so it adds a per-channel constant that the "
        "training-mode BN after W_z removes (it matters in eval mode)",
        "out_conv.bias": "a per-channel constant removed by the training-mode BN after it",
    },
)


class _NonLocalNd(nn.Module):
    """Shared body of the 2-D and 3-D non-local blocks."""

    dims: int = 2
    pool_kernel: tuple[int, ...] = (2, 2)

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 2,
        rd_channels: int | None = None,
        pairwise: str = "embedded_gaussian",
        sub_sample: bool = True,
        scaled: bool = True,
        pool_input: bool = False,
    ) -> None:
        super().__init__()
        if pairwise not in PAIRWISE:
            raise ValueError(f"pairwise must be one of {', '.join(PAIRWISE)}, got {pairwise!r}")
        conv = nn.Conv3d if self.dims == 3 else nn.Conv2d
        norm = nn.BatchNorm3d if self.dims == 3 else nn.BatchNorm2d
        pool = nn.MaxPool3d if self.dims == 3 else nn.MaxPool2d
        self.channels = channels
        self.inner = reduced_channels(channels, rd_ratio, rd_channels)
        self.pairwise = pairwise
        self.scaled = scaled
        self.pool_input = pool_input
        if pairwise != "gaussian":
            self.theta = conv(channels, self.inner, 1)
            self.phi = conv(channels, self.inner, 1)
        self.g = conv(channels, self.inner, 1)
        if pairwise == "concatenation":
            # w_f · [θ_i; φ_j] = w_θ · θ_i + w_φ · φ_j: one weight vector over 2·C/2 channels
            self.concat_project = nn.Parameter(torch.empty(2 * self.inner))
            nn.init.normal_(self.concat_project, std=(2 * self.inner) ** -0.5)
        self.pool = pool(self.pool_kernel) if sub_sample else None
        self.out_conv = conv(self.inner, channels, 1)
        self.out_norm = norm(channels)
        nn.init.zeros_(self.out_norm.weight)  # identity at init

    def _keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """φ(x) and g(x) on the (optionally sub-sampled) key positions."""

        def phi(t: torch.Tensor) -> torch.Tensor:
            return t if self.pairwise == "gaussian" else self.phi(t)

        if self.pool is None:
            return phi(x), self.g(x)
        if self.pool_input:
            pooled = self.pool(x)
            return phi(pooled), self.g(pooled)
        return self.pool(phi(x)), self.pool(self.g(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, f"NonLocal{self.dims}d", rank=self.dims + 2)
        if self.pool is not None:
            check_min_size(
                x,
                2,
                f"NonLocal{self.dims}d",
                "sub_sample max-pools keys 2x2; sub_sample=False has no minimum",
            )
        query = x if self.pairwise == "gaussian" else self.theta(x)  # (B, d, *S)
        key, value = self._keys_values(x)  # (B, d, *S'), (B, C/2, *S')
        q = positions_first(query)  # (B, 1, N, d)
        k = positions_first(key)  # (B, 1, N', d)
        v = positions_first(value)  # (B, 1, N', C/2)
        if self.pairwise in ("embedded_gaussian", "gaussian"):
            scale = self.inner**-0.5 if self.scaled and self.pairwise != "gaussian" else 1.0
            y = attention_fp32(q, k, v, scale=scale)  # (B, 1, N, C/2)
            return x + self._project(y, x)
        if self.pairwise == "dot_product":
            # θ (φᵀ g / N') is cubic in the activations: at ~30x unit scale it overflows fp16,
            # so under autocast the product, W_z and its BN run in float32
            return x + run_fp32(
                lambda *t: self._project(self._dot_product(*t), x), q, k, v, dtype=x.dtype
            )
        w_theta, w_phi = self.concat_project.split(self.inner)
        logits = (q @ w_theta).unsqueeze(-1) + (k @ w_phi).unsqueeze(-2)  # (B, 1, N, N')
        y = torch.relu(logits) / k.shape[2] @ v  # (B, 1, N, C/2)
        return x + self._project(y, x)

    @staticmethod
    def _dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """θ (φᵀ g / N') right to left, never forming the N×N' matrix: (B, 1, N, C/2)."""
        return q @ (k.transpose(-1, -2) @ (v / k.shape[2]))  # (B, 1, N, C/2)

    def _project(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """BN(W_z · y) on x's grid: (B, 1, N, C/2) -> (B, C, *S)."""
        y = positions_last(y, tuple(x.shape[2:]))  # (B, C/2, *S), strided positions-major
        if x.is_contiguous():
            # lay y out like x: with channels-last strides in an NCHW network the W_z conv and
            # its BN (forward and backward) run several times slower on CPU
            y = y.contiguous()  # (B, C/2, *S)
        return self.out_norm(self.out_conv(y))


@register("nonlocal", kind="gate", **_INFO)  # type: ignore[arg-type]
class NonLocal2d(_NonLocalNd):
    """Non-local block on images (B, C, H, W): ``X + BN(W_z · y)``, identity at init."""

    dims = 2
    pool_kernel = (2, 2)


@register("nonlocal3d", kind="gate", inputs=video_inputs, **_INFO)  # type: ignore[arg-type]
class NonLocal3d(_NonLocalNd):
    """Space-time non-local block on videos (B, C, T, H, W), 1x2x2 max-pool sub-sampling."""

    dims = 3
    pool_kernel = (1, 2, 2)
