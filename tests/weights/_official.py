"""Independent references for the authors' releases: their state-dict layouts (key names and
shapes, enumerated from the official model definitions) and functional forwards written from
the papers and those definitions, over a plain dict of tensors. Nothing here imports attnzoo."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Shapes = dict[str, tuple[int, ...]]
State = dict[str, torch.Tensor]
R50 = (3, 4, 6, 3)


def _norm(shapes: Shapes, prefix: str, channels: int, counter: bool = True) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{name}"] = (channels,)
    if counter:
        shapes[f"{prefix}.num_batches_tracked"] = ()


def body_shapes(
    classes: int = 10,
    stem: str = "conv1",
    stem_norm: str = "bn1",
    head: str = "fc",
    counters: bool = True,
) -> Shapes:
    """A torchvision-named ResNet-50 body: conv1/bn1, layer1-4 bottlenecks, head."""
    shapes: Shapes = {f"{stem}.weight": (64, 3, 7, 7)}
    _norm(shapes, stem_norm, 64, counters)
    width = 64
    for stage, count in enumerate(R50):
        planes = 64 * 2**stage
        for index in range(count):
            block = f"layer{stage + 1}.{index}"
            shapes[f"{block}.conv1.weight"] = (planes, width, 1, 1)
            shapes[f"{block}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{block}.conv3.weight"] = (4 * planes, planes, 1, 1)
            for i, c in ((1, planes), (2, planes), (3, 4 * planes)):
                _norm(shapes, f"{block}.bn{i}", c, counters)
            if index == 0:
                shapes[f"{block}.downsample.0.weight"] = (4 * planes, width, 1, 1)
                _norm(shapes, f"{block}.downsample.1", 4 * planes, counters)
            width = 4 * planes
    shapes[f"{head}.weight"] = (classes, width)
    shapes[f"{head}.bias"] = (classes,)
    return shapes


def blocks() -> list[tuple[int, str, int]]:
    """(stage, block name, output channels) of ResNet-50."""
    return [
        (stage + 1, f"layer{stage + 1}.{index}", 256 * 2**stage)
        for stage, count in enumerate(R50)
        for index in range(count)
    ]


# ----------------------------------------------------------------------------- functional ops


def bn(state: State, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x,
        state[f"{prefix}.running_mean"],
        state[f"{prefix}.running_var"],
        state[f"{prefix}.weight"],
        state[f"{prefix}.bias"],
        False,
        0.0,
        1e-5,
    )


def conv(state: State, prefix: str, x: torch.Tensor, **kwargs: int) -> torch.Tensor:
    return F.conv2d(x, state[f"{prefix}.weight"], state.get(f"{prefix}.bias"), **kwargs)


def linear(state: State, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, state[f"{prefix}.weight"], state.get(f"{prefix}.bias"))


Attend = Callable[[State, str, torch.Tensor], torch.Tensor]


def resnet50_forward(
    state: State,
    x: torch.Tensor,
    block_attention: Attend | None = None,
    stage_attention: Callable[[State, int, torch.Tensor], torch.Tensor] | None = None,
    stem: str = "conv1",
    stem_norm: str = "bn1",
    head: str = "fc",
    stride_in_1x1: bool = False,
    ceil_pool: bool = False,
) -> torch.Tensor:
    """He et al.'s ResNet-50; attention on the branch before the addition (block) or after a
    stage (BAM); global average pooling before the classifier."""
    x = F.relu(bn(state, stem_norm, conv(state, stem, x, stride=2, padding=3)))
    x = F.max_pool2d(x, 3, 2, 0, ceil_mode=True) if ceil_pool else F.max_pool2d(x, 3, 2, 1)
    for stage, count in enumerate(R50):
        for index in range(count):
            block = f"layer{stage + 1}.{index}"
            stride = 2 if stage > 0 and index == 0 else 1
            first, second = (stride, 1) if stride_in_1x1 else (1, stride)
            out = F.relu(bn(state, f"{block}.bn1", conv(state, f"{block}.conv1", x, stride=first)))
            out = conv(state, f"{block}.conv2", out, stride=second, padding=1)
            out = F.relu(bn(state, f"{block}.bn2", out))
            out = bn(state, f"{block}.bn3", conv(state, f"{block}.conv3", out))
            if block_attention is not None:
                out = block_attention(state, block, out)
            shortcut = x
            if f"{block}.downsample.0.weight" in state:
                shortcut = conv(state, f"{block}.downsample.0", x, stride=stride)
                shortcut = bn(state, f"{block}.downsample.1", shortcut)
            x = F.relu(out + shortcut)
        if stage_attention is not None and stage < 3:
            x = stage_attention(state, stage + 1, x)
    return linear(state, head, x.mean(dim=(2, 3)))


# ----------------------------------------------------------------------------- CBAM (Jongchan)


def cbam_shapes(classes: int = 10) -> Shapes:
    shapes = body_shapes(classes, counters=False)  # released with PyTorch 0.4: no counters
    for _, block, c in blocks():
        p = f"{block}.cbam."
        shapes[f"{p}ChannelGate.mlp.1.weight"] = (c // 16, c)
        shapes[f"{p}ChannelGate.mlp.1.bias"] = (c // 16,)
        shapes[f"{p}ChannelGate.mlp.3.weight"] = (c, c // 16)
        shapes[f"{p}ChannelGate.mlp.3.bias"] = (c,)
        shapes[f"{p}SpatialGate.spatial.conv.weight"] = (1, 2, 7, 7)
        _norm(shapes, f"{p}SpatialGate.spatial.bn", 1, counter=False)
    return shapes


def cbam_forward(state: State, block: str, x: torch.Tensor) -> torch.Tensor:
    p = f"{block}.cbam."

    def mlp(v: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(linear(state, f"{p}ChannelGate.mlp.1", v))
        return linear(state, f"{p}ChannelGate.mlp.3", hidden)

    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    x = x * channel[:, :, None, None]
    pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
    spatial = conv(state, f"{p}SpatialGate.spatial.conv", pooled, padding=3)
    return x * torch.sigmoid(bn(state, f"{p}SpatialGate.spatial.bn", spatial))


# ----------------------------------------------------------------------------- BAM (Jongchan)


def bam_shapes(classes: int = 10) -> Shapes:
    shapes = body_shapes(classes, counters=False)
    for stage in (1, 2, 3):
        c = 256 * 2 ** (stage - 1)
        h = c // 16
        g = f"bam{stage}.channel_att.gate_c."
        shapes[f"{g}gate_c_fc_0.weight"] = (h, c)
        shapes[f"{g}gate_c_fc_0.bias"] = (h,)
        _norm(shapes, f"{g}gate_c_bn_1", h, counter=False)
        shapes[f"{g}gate_c_fc_final.weight"] = (c, h)
        shapes[f"{g}gate_c_fc_final.bias"] = (c,)
        s = f"bam{stage}.spatial_att.gate_s."
        shapes[f"{s}gate_s_conv_reduce0.weight"] = (h, c, 1, 1)
        shapes[f"{s}gate_s_conv_reduce0.bias"] = (h,)
        _norm(shapes, f"{s}gate_s_bn_reduce0", h, counter=False)
        for i in range(2):
            shapes[f"{s}gate_s_conv_di_{i}.weight"] = (h, h, 3, 3)
            shapes[f"{s}gate_s_conv_di_{i}.bias"] = (h,)
            _norm(shapes, f"{s}gate_s_bn_di_{i}", h, counter=False)
        shapes[f"{s}gate_s_conv_final.weight"] = (1, h, 1, 1)
        shapes[f"{s}gate_s_conv_final.bias"] = (1,)
    return shapes


def bam_forward(state: State, stage: int, x: torch.Tensor) -> torch.Tensor:
    g = f"bam{stage}.channel_att.gate_c."
    channel = linear(state, f"{g}gate_c_fc_0", x.mean(dim=(2, 3)))
    channel = F.relu(bn(state, f"{g}gate_c_bn_1", channel))
    channel = linear(state, f"{g}gate_c_fc_final", channel)[:, :, None, None]
    s = f"bam{stage}.spatial_att.gate_s."
    spatial = F.relu(bn(state, f"{s}gate_s_bn_reduce0", conv(state, f"{s}gate_s_conv_reduce0", x)))
    for i in range(2):
        spatial = conv(state, f"{s}gate_s_conv_di_{i}", spatial, padding=4, dilation=4)
        spatial = F.relu(bn(state, f"{s}gate_s_bn_di_{i}", spatial))
    spatial = conv(state, f"{s}gate_s_conv_final", spatial)
    return (1 + torch.sigmoid(channel * spatial)) * x


# ----------------------------------------------------------------------------- ECA (BangguWu)

ECA_KERNELS = {1: 3, 2: 5, 3: 5, 4: 7}  # the released eca_resnet50_k3557


def eca_shapes(classes: int = 10) -> Shapes:
    shapes = body_shapes(classes)
    for stage, block, _ in blocks():
        shapes[f"{block}.eca.conv.weight"] = (1, 1, ECA_KERNELS[stage])
    return shapes


def eca_forward(state: State, block: str, x: torch.Tensor) -> torch.Tensor:
    weight = state[f"{block}.eca.conv.weight"]
    pooled = x.mean(dim=(2, 3))[:, None, :]  # (B, 1, C)
    gate = torch.sigmoid(F.conv1d(pooled, weight, padding=(weight.shape[-1] - 1) // 2))
    return x * gate[:, 0, :, None, None]


# ----------------------------------------------------------------------------- FcaNet (cfzd)

# the paper's "top16" frequencies on the 7x7 grid (Fig. 4 / the official selection)
TOP16_U = (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2)
TOP16_V = (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2)
FCA_GRID = {1: 56, 2: 28, 3: 14, 4: 7}


def dct_basis(channels: int, size: int) -> torch.Tensor:
    """Orthonormal 2-D DCT-II basis per channel group, frequencies scaled to the grid."""

    def one(t: int, f: int) -> float:
        value = math.cos(math.pi * f * (t + 0.5) / size) / math.sqrt(size)
        return value * math.sqrt(2) if f else value

    filters = torch.zeros(channels, size, size)
    group = channels // 16
    scale = size // 7
    for k, (u, v) in enumerate(zip(TOP16_U, TOP16_V, strict=True)):
        for i in range(size):
            for j in range(size):
                filters[k * group : (k + 1) * group, i, j] = one(i, u * scale) * one(j, v * scale)
    return filters


def fca_state(state: State) -> None:
    """Adds the saved DCT buffers (``att.dct_layer.weight``) to a FcaNet state."""
    cache: dict[tuple[int, int], torch.Tensor] = {}
    for stage, block, c in blocks():
        key = (c, FCA_GRID[stage])
        if key not in cache:
            cache[key] = dct_basis(*key)
        state[f"{block}.att.dct_layer.weight"] = cache[key]


def fca_shapes(classes: int = 10) -> Shapes:
    shapes = body_shapes(classes)
    for _, block, c in blocks():
        shapes[f"{block}.att.fc.0.weight"] = (c // 16, c)
        shapes[f"{block}.att.fc.2.weight"] = (c, c // 16)
    return shapes


def fca_forward(state: State, block: str, x: torch.Tensor) -> torch.Tensor:
    basis = state[f"{block}.att.dct_layer.weight"]
    pooled = x
    if x.shape[-2:] != basis.shape[-2:]:
        pooled = F.adaptive_avg_pool2d(x, tuple(basis.shape[-2:]))
    frequency = (pooled * basis).sum(dim=(2, 3))
    hidden = F.relu(linear(state, f"{block}.att.fc.0", frequency))
    return x * torch.sigmoid(linear(state, f"{block}.att.fc.2", hidden))[:, :, None, None]


# ----------------------------------------------------------------------------- SE (Caffe port)


def cadene_shapes(classes: int = 10) -> Shapes:
    shapes = body_shapes(classes, stem="layer0.conv1", stem_norm="layer0.bn1", head="last_linear")
    for _, block, c in blocks():
        shapes[f"{block}.se_module.fc1.weight"] = (c // 16, c, 1, 1)
        shapes[f"{block}.se_module.fc1.bias"] = (c // 16,)
        shapes[f"{block}.se_module.fc2.weight"] = (c, c // 16, 1, 1)
        shapes[f"{block}.se_module.fc2.bias"] = (c,)
    return shapes


def se_forward(state: State, block: str, x: torch.Tensor) -> torch.Tensor:
    squeezed = x.mean(dim=(2, 3), keepdim=True)
    hidden = F.relu(conv(state, f"{block}.se_module.fc1", squeezed))
    return x * torch.sigmoid(conv(state, f"{block}.se_module.fc2", hidden))
