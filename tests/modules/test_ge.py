"""Gather-Excite against the paper's operators, recomputed naively in float64 (loops over
positions) from the module's own weights, for every variant × extent."""

import math

import pytest
import torch

import attnzoo

EXTENTS = ["global", 2, 4, 8]


def naive_bn_eval(y, bn):
    """BatchNorm in eval mode, channel axis 1 of a (B, C, h, w) tensor."""
    shape = (1, -1, 1, 1)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (y - bn.running_mean.view(shape)) * scale.view(shape) + bn.bias.view(shape)


def naive_avg_pool(x, e):
    """θ⁻ extent e: window of 2e-1 centred on every e-th position, padding not counted."""
    batch, channels, height, width = x.shape
    out_h, out_w = math.ceil(height / e), math.ceil(width / e)
    out = torch.zeros(batch, channels, out_h, out_w, dtype=x.dtype)
    for p in range(out_h):
        for q in range(out_w):
            rows = [i for i in range(p * e - (e - 1), p * e + e) if 0 <= i < height]
            cols = [j for j in range(q * e - (e - 1), q * e + e) if 0 <= j < width]
            total = sum(x[:, :, i, j] for i in rows for j in cols)
            out[:, :, p, q] = total / (len(rows) * len(cols))
    return out


def naive_depthwise_3x3_s2(x, weight):
    """Depthwise 3x3 stride-2 convolution with zero padding 1, no bias."""
    batch, channels, height, width = x.shape
    out_h, out_w = math.ceil(height / 2), math.ceil(width / 2)
    out = torch.zeros(batch, channels, out_h, out_w, dtype=x.dtype)
    for p in range(out_h):
        for q in range(out_w):
            for a in range(3):
                for b in range(3):
                    i, j = 2 * p - 1 + a, 2 * q - 1 + b
                    if 0 <= i < height and 0 <= j < width:
                        out[:, :, p, q] += weight[:, 0, a, b] * x[:, :, i, j]
    return out


def naive_gather(x, module):
    seq = module.gather
    if module.variant == "theta_minus":
        if module.extent == "global":
            return x.mean(dim=(2, 3), keepdim=True)
        return naive_avg_pool(x, module.extent)
    if module.extent == "global":
        conv, bn = seq[0], seq[1]
        # one weight per channel and position: a weighted sum over the whole map
        y = (x * conv.weight[:, 0].unsqueeze(0)).sum(dim=(2, 3), keepdim=True)
        y = naive_bn_eval(y, bn)
    else:
        convs = [m for m in seq if isinstance(m, torch.nn.Conv2d)]
        bns = [m for m in seq if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(convs) == int(math.log2(module.extent))
        y = x
        for k, (conv, bn) in enumerate(zip(convs, bns, strict=True)):
            y = naive_bn_eval(naive_depthwise_3x3_s2(y, conv.weight), bn)
            if k != len(convs) - 1:
                y = torch.relu(y)
    if module.variant == "theta_plus":
        down, up = module.mlp[1], module.mlp[3]
        hidden = torch.einsum("oc,bchw->bohw", down.weight[:, :, 0, 0], torch.relu(y))
        hidden = torch.relu(hidden + down.bias.view(1, -1, 1, 1))
        y = torch.einsum("oc,bchw->bohw", up.weight[:, :, 0, 0], hidden)
        y = y + up.bias.view(1, -1, 1, 1)
    return y


def naive_ge(x, module):
    gathered = naive_gather(x, module)
    height, width = x.shape[-2:]
    h, w = gathered.shape[-2:]
    out = torch.empty_like(x)
    for i in range(height):
        for j in range(width):
            # nearest-neighbour upsampling: output row i reads gathered row floor(i*h/H)
            g = gathered[:, :, (i * h) // height, (j * w) // width]
            out[:, :, i, j] = x[:, :, i, j] * torch.sigmoid(g)
    return out


def randomize_bn(module, generator):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=generator))
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator))


@pytest.mark.parametrize("variant", ["theta_minus", "theta", "theta_plus"])
@pytest.mark.parametrize("extent", EXTENTS)
def test_ge_matches_naive_gather_excite(variant, extent):
    height, width = 9, 6
    torch.manual_seed(0)
    size = (height, width) if variant != "theta_minus" and extent == "global" else None
    module = attnzoo.create("ge", 32, variant=variant, extent=extent, spatial_size=size)
    module = module.double().eval()
    generator = torch.Generator().manual_seed(1)
    randomize_bn(module, generator)
    x = torch.randn(2, 32, height, width, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(module(x), naive_ge(x, module))


def test_ge_structure_follows_the_spec():
    # θ extent e: log2(e) depthwise 3x3 stride-2 convs; θ⁺ MLP is C -> C/16 -> C
    module = attnzoo.create("ge", 64, variant="theta_plus", extent=8)
    convs = [m for m in module.gather if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3
    assert all(c.groups == 64 and c.kernel_size == (3, 3) and c.stride == (2, 2) for c in convs)
    assert module.mlp[1].out_channels == 4 and module.mlp[3].out_channels == 64
    glob = attnzoo.create("ge", 64, variant="theta", extent="global", spatial_size=(7, 5))
    assert glob.gather[0].kernel_size == (7, 5) and glob.gather[0].groups == 64
    assert sum(p.numel() for p in attnzoo.create("ge", 64).parameters()) == 0


def test_ge_theta_global_is_bound_to_its_size():
    module = attnzoo.create("ge", 16, variant="theta", extent="global", spatial_size=(7, 5)).eval()
    assert module.expected_size == (7, 5)
    module(torch.randn(1, 16, 7, 5))
    with pytest.raises(ValueError, match="7x5"):
        module(torch.randn(1, 16, 8, 5))
    with pytest.raises(ValueError, match="spatial_size"):
        attnzoo.create("ge", 16, variant="theta_plus", extent="global")


def test_ge_rejects_bad_options():
    with pytest.raises(ValueError, match="variant"):
        attnzoo.create("ge", 16, variant="theta_star")
    with pytest.raises(ValueError, match="extent"):
        attnzoo.create("ge", 16, extent=3)
    with pytest.raises(ValueError, match="spatial_size"):
        attnzoo.create("ge", 16, extent=4, variant="theta", spatial_size=(7, 7))


def test_ge_records_channel_map_for_global_and_mask_for_local_extents():
    x = torch.randn(2, 16, 7, 5)
    for extent, kind, shape in (("global", "channel", (2, 16, 1, 1)), (4, "mask", (2, 16, 7, 5))):
        module = attnzoo.create("ge", 16, extent=extent)
        with attnzoo.recording_maps(module):
            y = module(x)
            gate = module.maps[kind]
        assert gate.shape == shape
        torch.testing.assert_close(y, x * gate)
