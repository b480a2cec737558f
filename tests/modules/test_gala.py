"""GALA against the paper's equation, recomputed naively in float64 from the module's weights."""

import pytest
import torch

import attnzoo


def conv1x1(x, conv):
    """A 1x1 convolution as an explicit sum over input channels, per output channel."""
    weight, bias = conv.weight[:, :, 0, 0], conv.bias
    out = torch.zeros(x.shape[0], weight.shape[0], *x.shape[2:], dtype=x.dtype)
    for o in range(weight.shape[0]):
        for i in range(weight.shape[1]):
            out[:, o] += weight[o, i] * x[:, i]
        out[:, o] += bias[o]
    return out


def conv_same(x, conv):
    """A k×k stride-1 convolution with zero 'same' padding, as a loop over kernel offsets."""
    weight, bias = conv.weight, conv.bias
    k = weight.shape[-1]
    pad = k // 2
    batch, _, h, w = x.shape
    padded = torch.zeros(batch, x.shape[1], h + 2 * pad, w + 2 * pad, dtype=x.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    out = torch.zeros(batch, weight.shape[0], h, w, dtype=x.dtype)
    for o in range(weight.shape[0]):
        for dy in range(k):
            for dx in range(k):
                window = padded[:, :, dy : dy + h, dx : dx + w]  # (B, Cin, H, W)
                out[:, o] += (window * weight[o, :, dy, dx].view(1, -1, 1, 1)).sum(1)
        out[:, o] += bias[o]
    return out


def naive_gala(x, module, squash, extra_conv, global_relu):
    batch, channels, h, w = x.shape
    a, m = module.additive_weight, module.multiplicative_weight
    w1, b1 = module.global_fc1.weight[:, :, 0, 0], module.global_fc1.bias
    w2, b2 = module.global_fc2.weight[:, :, 0, 0], module.global_fc2.bias
    out = torch.empty_like(x)
    mask = torch.empty_like(x)
    hidden = torch.relu(conv1x1(x, module.local_conv1))
    if extra_conv:
        hidden = torch.relu(conv_same(hidden, module.local_extra))
    s_l = conv1x1(hidden, module.local_conv2)[:, 0]  # (B, H, W)
    for n in range(batch):
        z = torch.stack([x[n, c].mean() for c in range(channels)])
        s_g = w2 @ torch.relu(w1 @ z + b1) + b2
        if global_relu:
            s_g = torch.relu(s_g)
        for c in range(channels):
            for i in range(h):
                for j in range(w):
                    g, loc = s_g[c], s_l[n, i, j]
                    arg = a[c] * (g + loc) + m[c] * (g * loc)
                    mask[n, c, i, j] = torch.tanh(arg) if squash == "tanh" else torch.sigmoid(arg)
                    out[n, c, i, j] = mask[n, c, i, j] * x[n, c, i, j]
    return out, mask


def randomised(**options):
    torch.manual_seed(0)
    module = attnzoo.create("gala", 8, **options).double()
    with torch.no_grad():  # non-default a, m and biases, so every term matters
        for p in module.parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p))
    return module


@pytest.mark.parametrize(
    ("squash", "extra_conv", "global_relu"),
    [
        ("tanh", False, False),  # the paper
        ("sigmoid", False, False),
        ("tanh", True, False),
        ("tanh", False, True),
        ("sigmoid", True, True),  # the official code's form
    ],
)
def test_gala_matches_equation(squash, extra_conv, global_relu):
    module = randomised(squash=squash, local_extra_conv=extra_conv, global_relu=global_relu)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    expected, expected_mask = naive_gala(x, module, squash, extra_conv, global_relu)
    with attnzoo.recording_maps(module):
        y = module(x)
        torch.testing.assert_close(y, expected)
        torch.testing.assert_close(module.mask, expected_mask)
        collapsed = (expected_mask**2).mean(dim=1, keepdim=True)
        torch.testing.assert_close(module.spatial_map, collapsed)
        assert module.spatial_map.shape == (2, 1, 5, 6)
    assert module.mask is None and module.spatial_map is None


def test_local_path_has_one_channel_and_extra_conv_is_5x5():
    module = attnzoo.create("gala", 32)
    assert module.local_conv2.out_channels == 1
    assert module.local_extra is None
    extra = attnzoo.create("gala", 32, local_extra_conv=True).local_extra
    assert extra.kernel_size == (5, 5) and extra.in_channels == extra.out_channels == 8


def test_options_change_the_output():
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    reference = randomised()(x)
    for options in ({"squash": "sigmoid"}, {"local_extra_conv": True}, {"global_relu": True}):
        assert not torch.allclose(randomised(**options)(x), reference), options


def test_reduction_defaults_to_a_quarter_and_is_configurable():
    module = attnzoo.create("gala", 64)
    assert module.global_fc1.out_channels == module.local_conv1.out_channels == 16
    assert attnzoo.create("gala", 64, rd_ratio=1 / 8).local_conv1.out_channels == 8
    assert attnzoo.create("gala", 64, rd_channels=5).global_fc1.out_channels == 5


def test_open_init_starts_as_a_mostly_open_gate():
    torch.manual_seed(0)
    module = attnzoo.create("gala", 64)
    assert torch.equal(module.additive_weight, torch.ones(64))
    assert torch.equal(module.multiplicative_weight, torch.ones(64))
    assert torch.all(module.global_fc2.bias == 0.5) and torch.all(module.local_conv2.bias == 0.5)
    with attnzoo.recording_maps(module):
        module(torch.randn(2, 64, 9, 9))
        mean_gate = module.mask.mean().item()
    assert 0.6 < mean_gate < 0.95


def test_code_init_draws_signed_per_channel_weights_and_zero_biases():
    torch.manual_seed(0)
    module = attnzoo.create("gala", 256, gate_init="code")
    for p in (module.additive_weight, module.multiplicative_weight):
        assert (p < 0).any() and (p > 0).any()
        assert 0.8 < p.std().item() < 1.2 and p.abs().max() <= 2 / 0.8796 + 1e-6
    assert torch.all(module.global_fc2.bias == 0) and torch.all(module.local_conv2.bias == 0)


def test_invalid_options_raise():
    with pytest.raises(ValueError, match="gate_init"):
        attnzoo.create("gala", 8, gate_init="zeros")
    with pytest.raises(ValueError, match="squash"):
        attnzoo.create("gala", 8, squash="relu")


def test_registry_entry():
    info = attnzoo.module_info("gala")
    assert (info.kind, info.category, info.placement) == ("gate", "hybrid", "block_input")
    assert info.maps == ("spatial", "mask")
    assert info.options == {
        "squash": "tanh",
        "local_extra_conv": False,
        "global_relu": False,
        "gate_init": "open",
    }
