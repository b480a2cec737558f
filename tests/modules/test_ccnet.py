"""Criss-cross attention against (1) explicit per-position loops over the row and column and
(2) dense N×N attention with a criss-cross mask (−inf off the cross, centre counted once)."""

import math

import pytest
import torch

import attnzoo


def randomized(channels, **options):
    torch.manual_seed(0)
    module = attnzoo.create("cca", channels, **options).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) / math.sqrt(p.numel()))
    return module


def conv1x1(conv, x):
    return (
        torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias[None, :, None, None]
    )


def naive_step_loops(module, x):
    """One criss-cross step by loops: the cross of u = its column (H keys) + its row minus u."""
    q, k, v = conv1x1(module.query, x), conv1x1(module.key, x), conv1x1(module.value, x)
    batch, _, height, width = x.shape
    out = torch.empty_like(x)
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                cross = [(g, w) for g in range(height)] + [(h, c) for c in range(width) if c != w]
                logits = torch.stack([q[b, :, h, w] @ k[b, :, i, j] for i, j in cross])
                a = torch.exp(logits - logits.max())
                a = a / a.sum()
                out[b, :, h, w] = sum(a[n] * v[b, :, i, j] for n, (i, j) in enumerate(cross))
    scale = 1.0 if module.gamma is None else module.gamma
    return x + scale * out


def dense_step_with_mask(module, x):
    """One step as dense attention over all N positions with a criss-cross mask."""
    q, k, v = conv1x1(module.query, x), conv1x1(module.key, x), conv1x1(module.value, x)
    height, width = x.shape[2:]
    rows = torch.arange(height).repeat_interleave(width)  # (N,)
    cols = torch.arange(width).repeat(height)  # (N,)
    on_cross = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])  # (N, N)
    logits = q.flatten(2).transpose(1, 2) @ k.flatten(2)  # (B, N, N)
    logits = logits.masked_fill(~on_cross, float("-inf"))
    out = (v.flatten(2) @ torch.softmax(logits, dim=-1).transpose(1, 2)).view_as(x)
    scale = 1.0 if module.gamma is None else module.gamma
    return x + scale * out


@pytest.mark.parametrize("size", [(4, 5), (1, 4), (3, 1)])
def test_one_step_matches_loops_and_dense_masked_attention(size):
    module = randomized(16, recurrence=1)
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    out = module(x)
    torch.testing.assert_close(out, naive_step_loops(module, x))
    torch.testing.assert_close(out, dense_step_with_mask(module, x))


def test_recurrence_reuses_the_same_weights():
    module = randomized(16)  # R = 2 by default
    assert module.recurrence == 2
    x = torch.randn(1, 16, 4, 3, dtype=torch.float64)
    expected = dense_step_with_mask(module, dense_step_with_mask(module, x))
    torch.testing.assert_close(module(x), expected)
    assert not torch.allclose(dense_step_with_mask(module, x), expected)


@pytest.mark.parametrize("residual_scale", [True, False])
def test_residual_scale_option(residual_scale):
    module = randomized(16, recurrence=1, residual_scale=residual_scale)
    assert (module.gamma is not None) == residual_scale
    x = torch.randn(1, 16, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(module(x), naive_step_loops(module, x))
    if not residual_scale:  # the paper's plain sum is not the identity even at init
        fresh = attnzoo.create("cca", 16, residual_scale=False)
        assert not torch.allclose(fresh(x.float()), x.float())


def test_identity_at_init():
    module = attnzoo.create("cca", 16)
    x = torch.randn(2, 16, 5, 4)
    torch.testing.assert_close(module(x), x)


def test_mask_is_dtype_and_device_safe():
    module = randomized(16)
    with torch.no_grad():
        module.gamma.fill_(1.0)
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64) * 100
    out = module(x)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    module = module.float()
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            out = module(x.float())
        assert torch.isfinite(out).all(), dtype
