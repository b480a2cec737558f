"""Global-and-local attention (GALA).

Linsley, Shiebler, Eberhardt, Serre, "Learning what and where to attend", ICLR 2019,
arXiv:1805.08819. Official code: https://github.com/serre-lab/gala_tpu (TensorFlow, TPU;
``resnet_helpers.py: feature_attention_gala``).

    s_g  = W2 · ReLU(W1 · GAP(X))                    global ("what"),  (B, C)
    s_l  = Conv2_1x1(ReLU(Conv1_1x1(X)))              local ("where"),  (B, 1, H, W)
    A    = tanh(a ⊙ (s_g* + s_l*) + m ⊙ (s_g* ⊙ s_l*))  a, m ∈ R^C,      (B, C, H, W)
    Y    = A ⊙ X

``s_g*`` tiles s_g over space and ``s_l*`` tiles s_l over channels. Both paths reduce to
``C / r`` channels with r = 4 (``rd_ratio=1/4``, the official value; the paper gives no r).
All convolutions and fully connected layers have biases, as in the official code.

Initialisation (``gate_init``): the paper does not say how a and m start. With a tanh squash
and a, m drawn around zero (the official code: variance scaling with fan-in 1, so a and m are
about N(0, 1) with random signs per channel) the gate starts near zero or negative on many
channels, which wipes out the block input that both branches of a pre-activation block read.
The default ``"open"`` starts a = m = 1 and the biases of the two output layers (W2 and
Conv2) at 0.5, so that with the still-random weights the gate argument is about
1·(0.5 + 0.5) + 1·0.25 = 1.25: A ≈ tanh(1.25) ≈ 0.85 (sigmoid: ≈ 0.78). The block passes most
of its input at the start, and the gate is far from saturation, so it keeps a useful gradient.
``gate_init="code"`` reproduces the official draw (a, m truncated normal of std 1, output
biases zero); the convolution weights keep PyTorch's default initialisation either way.

The module records its last mask A (``"mask"``, B×C×H×W) and the collapsed map
mean_c(A²) (``"spatial"``, B×1×H×W, the map the supervision loss compares with human maps)
while recording is on (``attnzoo.recording_maps(model)``); see ``attnzoo.supervision``.

Differences from the official code:
- ``squash``: tanh in the paper (default); the official code applies ``tf.sigmoid``.
- ``local_extra_conv``: the official GALA ResNets add one 5x5 conv (C/r -> C/r, bias, ReLU)
  between the two local 1x1 convs (``extra_convs=1``); the paper's equation has only the two
  1x1 convs (default False).
- ``global_relu``: the official global path is built from ``tf.contrib.layers.fully_connected``,
  whose default activation is ReLU, so s_g = ReLU(W2 · ReLU(W1 · GAP(X))) >= 0 there; the
  paper's s_g has no final non-linearity (default False).
- ``gate_init``: see above ("open" default; "code" = the official random a, m and zero biases).
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import FLAG, RD_DIVISOR, RD_OPTIONS, Choice
from attnzoo.layers import (
    SQUASHES,
    RecordsMaps,
    check_input,
    get_squash,
    pointwise,
    reduced_channels,
)
from attnzoo.registry import Divergence, register

_GATE_INITS = ("open", "code")
_OPEN_BIAS = 0.5  # output-layer bias of both paths under gate_init="open" (see docstring)


@register(
    "gala",
    options={
        **RD_OPTIONS,
        "rd_divisor": RD_DIVISOR,
        "squash": Choice(SQUASHES),
        "local_extra_conv": FLAG,
        "global_relu": FLAG,
        "gate_init": Choice(_GATE_INITS),
    },
    paper="Learning what and where to attend",
    authors="Linsley, Shiebler, Eberhardt, Serre",
    year=2019,
    venue="ICLR",
    arxiv="1805.08819",
    code_url="https://github.com/serre-lab/gala_tpu",
    category="hybrid",
    kind="gate",
    placement="block_input",
    divergences=(
        Divergence("squash", "tanh", "tanh", "sigmoid", "paper squashes with tanh; code sigmoid"),
        Divergence(
            "local_extra_conv", False, False, True, "code adds a 5x5 C/r conv + ReLU locally"
        ),
        Divergence(
            "global_relu", False, False, True, "code's fully_connected adds a ReLU after W2"
        ),
        Divergence(
            "gate_init",
            "open",
            "open",
            "code",
            "paper does not say; code draws a, m ~ N(0, 1); 'open' starts A near 0.85",
        ),
    ),
    maps=("spatial", "mask"),
)
class GALA(nn.Module, RecordsMaps):
    """GALA gate: ``X * tanh(a*(s_g + s_l) + m*s_g*s_l)`` from a global and a local path."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 4,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        squash: str = "tanh",
        local_extra_conv: bool = False,
        global_relu: bool = False,
        gate_init: str = "open",
    ) -> None:
        super().__init__()
        if gate_init not in _GATE_INITS:
            raise ValueError(f"gate_init must be one of {_GATE_INITS}, got {gate_init!r}")
        self.channels = channels
        self.squash_name = squash
        self.squash = get_squash(squash)
        self.global_relu = global_relu
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)

        # Global path ("what"): SE-style bottleneck on the pooled features.
        self.global_fc1 = nn.Conv2d(channels, hidden, 1)
        self.global_fc2 = nn.Conv2d(hidden, channels, 1)
        # Local path ("where"): 1x1 convs down to ONE channel, optionally a 5x5 conv between.
        self.local_conv1 = nn.Conv2d(channels, hidden, 1)
        self.local_extra = nn.Conv2d(hidden, hidden, 5, padding=2) if local_extra_conv else None
        self.local_conv2 = nn.Conv2d(hidden, 1, 1)
        self.act = nn.ReLU(inplace=True)
        # a and m of the paper: one additive and one multiplicative weight per channel.
        self.additive_weight = nn.Parameter(torch.empty(channels))
        self.multiplicative_weight = nn.Parameter(torch.empty(channels))
        self.gate_init = gate_init
        self.reset_gate_parameters()

    def reset_gate_parameters(self) -> None:
        """Initialise a, m and the output biases of both paths (see the module docstring)."""
        with torch.no_grad():
            if self.gate_init == "open":
                self.additive_weight.fill_(1.0)
                self.multiplicative_weight.fill_(1.0)
                bias = _OPEN_BIAS
            else:
                # TF variance scaling, fan-in 1, truncated normal: std 1 after truncation.
                std = 1.0 / 0.87962566103423978
                for p in (self.additive_weight, self.multiplicative_weight):
                    nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
                bias = 0.0
            for conv in (self.global_fc2, self.local_conv2):
                assert conv.bias is not None  # built with bias=True above
                conv.bias.fill_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "GALA")
        batch, channels = x.shape[:2]
        pooled = x.mean(dim=(2, 3))  # (B, C)
        global_score = pointwise(self.act(pointwise(pooled, self.global_fc1)), self.global_fc2)
        global_score = global_score.view(batch, channels, 1, 1)  # (B, C, 1, 1)
        if self.global_relu:
            global_score = torch.relu(global_score)
        hidden = self.act(self.local_conv1(x))  # (B, C/r, H, W)
        if self.local_extra is not None:
            hidden = self.act(self.local_extra(hidden))  # (B, C/r, H, W)
        local_score = self.local_conv2(hidden)  # (B, 1, H, W)

        a = self.additive_weight.view(1, -1, 1, 1)  # (1, C, 1, 1)
        m = self.multiplicative_weight.view(1, -1, 1, 1)  # (1, C, 1, 1)
        # a*(s_g + s_l) + m*s_g*s_l == a*s_g + (a + m*s_g)*s_l: one broadcast multiply-add
        # over (B, C, H, W) instead of materialising the tiled s_g* and s_l*.
        logits = torch.addcmul(a * global_score, a + m * global_score, local_score)
        mask = self.squash(logits)  # (B, C, H, W)
        if self.record_maps:
            self._record("mask", mask)
            self._record("spatial", mask.square().mean(dim=1, keepdim=True))  # (B, 1, H, W)
        return x * mask

    @property
    def mask(self) -> torch.Tensor | None:
        """The gate A (B, C, H, W) of the last forward pass while recording, else None."""
        return self.maps.get("mask")

    @property
    def spatial_map(self) -> torch.Tensor | None:
        """mean_c(A²) (B, 1, H, W) of the last forward pass while recording, else None."""
        return self.maps.get("spatial")

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, squash={self.squash_name}, "
            f"local_extra_conv={self.local_extra is not None}, global_relu={self.global_relu}, "
            f"gate_init={self.gate_init}"
        )
