"""GC block against the paper's equations, recomputed naively in float64 from the module's own
weights (the zero-initialised last conv is randomised first, so the transform matters)."""

import pytest
import torch

import attnzoo


def naive_gc(x, module):
    batch, channels, height, width = x.shape
    positions = [(i, j) for i in range(height) for j in range(width)]
    conv1, ln, conv2 = module.transform[0], module.transform[1], module.transform[3]
    w1, b1 = conv1.weight[:, :, 0, 0], conv1.bias
    w2, b2 = conv2.weight[:, :, 0, 0], conv2.bias
    gamma, beta = ln.weight[:, 0, 0], ln.bias[:, 0, 0]
    out = torch.empty_like(x)
    for n in range(batch):
        if module.pooling == "att":
            wk = module.conv_mask.weight[0, :, 0, 0]
            logits = [sum(wk[c] * x[n, c, i, j] for c in range(channels)) for i, j in positions]
            top = max(logits)
            exps = [torch.exp(v - top) for v in logits]
            alpha = [e / sum(exps) for e in exps]
            context = sum(a * x[n, :, i, j] for a, (i, j) in zip(alpha, positions, strict=True))
        else:
            context = sum(x[n, :, i, j] for i, j in positions) / len(positions)
        hidden = w1 @ context + b1
        mean = hidden.mean()
        var = ((hidden - mean) ** 2).mean()  # LayerNorm: biased variance
        hidden = torch.relu((hidden - mean) / torch.sqrt(var + ln.eps) * gamma + beta)
        delta = w2 @ hidden + b2  # (C,)
        for c in range(channels):
            if module.fusion == "add":
                out[n, c] = x[n, c] + delta[c]
            else:
                out[n, c] = x[n, c] * torch.sigmoid(delta[c])
    return out


@pytest.mark.parametrize("pooling", ["att", "avg"])
@pytest.mark.parametrize("fusion", ["add", "mul"])
def test_gc_matches_equation(pooling, fusion):
    torch.manual_seed(0)
    module = attnzoo.create("gc", 32, rd_ratio=1 / 4, pooling=pooling, fusion=fusion).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)
    x = torch.randn(2, 32, 5, 6, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(module(x), naive_gc(x, module))


def test_gc_add_is_identity_at_init_and_mul_halves():
    x = torch.randn(2, 64, 5, 7)
    torch.testing.assert_close(attnzoo.create("gc", 64)(x), x, rtol=0, atol=0)
    torch.testing.assert_close(attnzoo.create("gc", 64, fusion="mul")(x), x * 0.5)


def test_gc_ratio_layernorm_and_mask_without_bias():
    module = attnzoo.create("gc", 256)
    assert module.transform[0].out_channels == 16  # 256 / 16
    assert module.transform[1].normalized_shape == (16, 1, 1)
    assert module.conv_mask.bias is None  # softmax is shift-invariant: a bias would be dead
    assert attnzoo.create("gc", 256, pooling="avg").conv_mask is None


def test_gc_records_softmax_weights_summing_to_one():
    module = attnzoo.create("gc", 16)
    x = torch.randn(2, 16, 5, 7)
    with attnzoo.recording_maps(module):
        module(x)
        weights = module.maps["spatial"]
    assert weights.shape == (2, 1, 5, 7)
    torch.testing.assert_close(weights.sum(dim=(1, 2, 3)), torch.ones(2))
    logits = module.conv_mask(x).flatten(1)
    torch.testing.assert_close(weights.flatten(1), torch.softmax(logits, dim=1))


def test_gc_softmax_stays_finite_with_fp16_range_logits():
    module = attnzoo.create("gc", 16)
    with torch.no_grad():
        module.conv_mask.weight.fill_(10.0)
    x = torch.randn(1, 16, 6, 6) * 100  # logits ~ 1e4: exp overflows unless max-shifted
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    assert torch.isfinite(y).all()


def test_gc_rejects_bad_options():
    with pytest.raises(ValueError, match="pooling"):
        attnzoo.create("gc", 16, pooling="max")
    with pytest.raises(ValueError, match="fusion"):
        attnzoo.create("gc", 16, fusion="concat")
