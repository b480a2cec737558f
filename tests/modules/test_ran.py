"""RAN against the paper's attention module, recomputed naively in float64 from its weights."""

import math

import pytest
import torch
from _random_weights import randomize_batchnorm

import attnzoo


def bn(x, norm):
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return (x - norm.running_mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + norm.bias.view(
        1, -1, 1, 1
    )


def conv1x1(x, conv):
    return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)


def conv3x3(x, conv):
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    height, width = x.shape[-2:]
    out = torch.zeros(x.shape[0], conv.out_channels, height, width, dtype=x.dtype)
    for ky in range(3):
        for kx in range(3):
            patch = xp[:, :, ky : ky + height, kx : kx + width]
            out += torch.einsum("oc,bchw->bohw", conv.weight[:, :, ky, kx], patch)
    return out


def unit(x, u):
    out = conv1x1(torch.relu(bn(x, u.norm1)), u.reduce)
    out = conv3x3(torch.relu(bn(out, u.norm2)), u.spatial)
    out = conv1x1(torch.relu(bn(out, u.norm3)), u.expand)
    return x + out


def units(x, seq):
    for u in seq:
        x = unit(x, u)
    return x


def max_pool(x):
    """3x3 stride-2 max pool, padding 1, by explicit windows."""
    height, width = x.shape[-2:]
    out_h, out_w = (height - 1) // 2 + 1, (width - 1) // 2 + 1
    out = torch.empty(*x.shape[:2], out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(max(2 * i - 1, 0), min(2 * i + 2, height))
            cols = slice(max(2 * j - 1, 0), min(2 * j + 2, width))
            out[:, :, i, j] = x[:, :, rows, cols].amax(dim=(2, 3))
    return out


def bilinear_aligned(x, size):
    """Bilinear interpolation with aligned corners (Caffe Interp), by explicit weights."""
    height, width = x.shape[-2:]
    out = torch.empty(*x.shape[:2], *size, dtype=x.dtype)
    for i in range(size[0]):
        sy = i * (height - 1) / (size[0] - 1) if size[0] > 1 else 0.0
        y0 = min(math.floor(sy), height - 1)
        y1, fy = min(y0 + 1, height - 1), sy - y0
        for j in range(size[1]):
            sx = j * (width - 1) / (size[1] - 1) if size[1] > 1 else 0.0
            x0 = min(math.floor(sx), width - 1)
            x1, fx = min(x0 + 1, width - 1), sx - x0
            out[:, :, i, j] = (
                (1 - fy) * (1 - fx) * x[:, :, y0, x0]
                + (1 - fy) * fx * x[:, :, y0, x1]
                + fy * (1 - fx) * x[:, :, y1, x0]
                + fy * fx * x[:, :, y1, x1]
            )
    return out


def naive_ran(module, x):
    x = units(x, module.pre)
    trunk = units(x, module.trunk)
    downs, feats = [], x
    for level in module.down:
        feats = units(max_pool(feats), level)
        downs.append(feats)
    feats = units(max_pool(feats), module.bottom)
    for level in reversed(range(len(downs))):
        skip = unit(downs[level], module.skips[level])
        feats = units(bilinear_aligned(feats, downs[level].shape[-2:]) + skip, module.up[level])
    feats = bilinear_aligned(feats, trunk.shape[-2:])
    head = module.mask_head
    hidden = conv1x1(torch.relu(bn(feats, head[0])), head[2])
    mask = torch.sigmoid(conv1x1(torch.relu(bn(hidden, head[3])), head[5]))
    out = (1 + mask) * trunk if module.attention_residual else mask * trunk
    return units(out, module.post), mask


@pytest.mark.parametrize(
    ("depth", "size", "residual"),
    [(3, (11, 6), True), (2, (7, 7), True), (1, (5, 8), False)],
)
def test_ran_matches_the_attention_module(depth, size, residual):
    torch.manual_seed(0)
    module = attnzoo.create("ran", 8, depth=depth, attention_residual=residual)
    module = module.double().eval()
    randomize_batchnorm(module, seed=11)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    expected, mask = naive_ran(module, x)
    with attnzoo.recording_maps(module):
        torch.testing.assert_close(module(x), expected)
        torch.testing.assert_close(module.maps["mask"], mask)
        torch.testing.assert_close(module.maps["spatial"], mask.mean(dim=1, keepdim=True))


def test_ran_follows_the_paper_structure():
    module = attnzoo.create("ran", 16)  # p = 1, t = 2, r = 1, three pools
    assert len(module.pre) == 1 and len(module.trunk) == 2 and len(module.post) == 1
    assert len(module.down) == len(module.skips) == len(module.up) == 2
    assert len(module.bottom) == 2
    assert module.pre[0].reduce.out_channels == 4  # bottleneck width C / 4
    assert attnzoo.module_info("ran").kind == "stage"


def test_ran_attention_residual_differs_from_naive_attention():
    torch.manual_seed(2)
    a = attnzoo.create("ran", 8, depth=1).eval()
    b = attnzoo.create("ran", 8, depth=1, attention_residual=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 8, 4, 4)
    assert not torch.allclose(a(x), b(x))


def test_ran_works_on_tiny_inputs_and_rejects_bad_depth():
    module = attnzoo.create("ran", 8, depth=3).eval()
    assert module(torch.randn(1, 8, 1, 2)).shape == (1, 8, 1, 2)
    with pytest.raises(ValueError, match="depth"):
        attnzoo.create("ran", 8, depth=0)
