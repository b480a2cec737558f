"""APNB and AFNB against the paper's equations, recomputed naively in float64 (explicit
adaptive-pool bins, explicit N×S attention matrix) from the modules' own weights."""

import pytest
import torch
from _random_weights import randomized
from torch.profiler import profile

import attnzoo


def conv1x1(conv, x):
    out = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return out if conv.bias is None else out + conv.bias[None, :, None, None]


def bn_eval(bn, x):
    shape = (1, -1, 1, 1)
    x = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return x * bn.weight.view(shape) + bn.bias.view(shape)


def conv_bn(block, x, relu):
    y = bn_eval(block[1], conv1x1(block[0], x))
    return torch.relu(y) if relu else y


def naive_pyramid(x, sizes):
    """Adaptive average pooling by its bin definition: (B, C, H, W) -> (B, C, S)."""
    height, width = x.shape[2:]
    anchors = []
    for s in sizes:
        for i in range(s):
            for j in range(s):
                h0, h1 = (i * height) // s, -((-(i + 1) * height) // s)
                w0, w1 = (j * width) // s, -((-(j + 1) * width) // s)
                anchors.append(x[:, :, h0:h1, w0:w1].mean(dim=(2, 3)))
    return torch.stack(anchors, dim=2)


def naive_attention(q, k, v, scale):
    """q (B, d, N), k (B, d, S), v (B, dv, S) -> (B, dv, N) with an explicit N×S matrix."""
    out = torch.empty(q.shape[0], v.shape[1], q.shape[2], dtype=q.dtype)
    for b in range(q.shape[0]):
        for i in range(q.shape[2]):
            logits = torch.stack([q[b, :, i] @ k[b, :, j] for j in range(k.shape[2])]) * scale
            a = torch.exp(logits - logits.max())
            a = a / a.sum()
            out[b, :, i] = v[b] @ a
    return out


def naive_apnb(m, x):
    embedded = conv_bn(m.query_key, x, relu=True)  # query = key projection
    q = embedded.flatten(2)
    k = naive_pyramid(embedded, m.pool_sizes)
    v = naive_pyramid(conv1x1(m.value, x), m.pool_sizes)
    assert k.shape[2] == sum(s * s for s in m.pool_sizes)
    context = naive_attention(q, k, v, m.key_channels**-0.5).view(x.shape[0], -1, *x.shape[2:])
    context = conv1x1(m.out_conv, context)
    return conv_bn(m.fuse[0], torch.cat([context, x], 1), relu=True)


def naive_afnb(m, high, low):
    q = conv_bn(m.query, high, relu=True).flatten(2)
    k = naive_pyramid(conv_bn(m.key, low, relu=True), m.pool_sizes)
    v = naive_pyramid(conv1x1(m.value, low), m.pool_sizes)
    context = naive_attention(q, k, v, m.key_channels**-0.5)
    context = conv1x1(m.out_conv, context.view(high.shape[0], -1, *high.shape[2:]))
    return conv_bn(m.fuse[0], torch.cat([context, high], 1), relu=False)  # no ReLU


@pytest.mark.parametrize("size", [(5, 7), (9, 8)])
def test_apnb_matches_equation(size):
    module = randomized("apnb", 16)
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    assert sum(s * s for s in module.pool_sizes) == 110
    torch.testing.assert_close(module(x), naive_apnb(module, x))


def test_afnb_matches_equation_with_different_levels():
    module = randomized("afnb", 16, low_channels=8)
    high = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    low = torch.randn(2, 8, 10, 9, dtype=torch.float64)  # another resolution works too
    out = module(high, low)
    assert out.shape == high.shape
    torch.testing.assert_close(out, naive_afnb(module, high, low))
    assert (out < 0).any(), "AFNB's fuse has no ReLU"


def test_afnb_names_the_input_with_the_wrong_channel_count():
    module = attnzoo.create("afnb", 16, low_channels=8)
    with pytest.raises(ValueError, match=r"low-level input.*8 channels, got 9"):
        module(torch.randn(1, 16, 4, 4), torch.randn(1, 9, 4, 4))


@pytest.mark.parametrize("name", ["apnb", "afnb"])
def test_at_init_the_context_is_zero_and_the_output_is_fuse_of_x(name):
    """What holds at init: the zero output conv silences the attention branch; the block is
    fuse([0; X]) and NOT the identity (the fuse conv is a learned layer)."""
    torch.manual_seed(0)
    module = attnzoo.create(name, 16).double().eval()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    inputs = (x,) if name == "apnb" else (x, torch.randn(2, 16, 6, 5, dtype=torch.float64))
    out = module(*inputs)
    relu = name == "apnb"
    torch.testing.assert_close(out, conv_bn(module.fuse[0], torch.cat([0 * x, x], 1), relu))
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("name", ["apnb", "afnb"])
def test_dropout_option(name):
    assert attnzoo.create(name, 16).fuse[1].p == 0.0  # paper: none
    module = attnzoo.create(name, 16, dropout=0.05)
    assert module.fuse[1].p == 0.05  # official code


def test_apnb_uses_the_fused_sdpa_kernel_and_is_finite_in_bf16_and_float64():
    module = attnzoo.create("apnb", 16)
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    with profile() as prof:
        module(x).sum().backward()
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(module(x * 100)).all()
    out = module.double()(torch.randn(1, 16, 4, 4, dtype=torch.float64))
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


def test_apnb_query_key_twice_updates_the_shared_bn_statistics_twice():
    torch.manual_seed(0)
    once = attnzoo.create("apnb", 16).double().train()
    twice = attnzoo.create("apnb", 16, query_key_twice=True).double().train()
    twice.load_state_dict(once.state_dict())
    x = torch.randn(3, 16, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(twice(x), once(x), rtol=0, atol=0)  # same values either way
    bn = once.query_key[1]
    conv = once.query_key[0].weight[:, :, 0, 0]
    y = torch.einsum("dc,bchw->dbhw", conv, x).flatten(1)  # (d, B·H·W) pre-BN activations
    mean, var = y.mean(dim=1), y.var(dim=1, unbiased=True)
    m = bn.momentum
    naive_once = (1 - m) * torch.zeros_like(mean) + m * mean
    naive_twice = (1 - m) * naive_once + m * mean
    torch.testing.assert_close(bn.running_mean, naive_once)
    torch.testing.assert_close(twice.query_key[1].running_mean, naive_twice)
    var_once = (1 - m) * torch.ones_like(var) + m * var
    torch.testing.assert_close(twice.query_key[1].running_var, (1 - m) * var_once + m * var)
    assert int(bn.num_batches_tracked) == 1
    assert int(twice.query_key[1].num_batches_tracked) == 2
    info = attnzoo.module_info("apnb")
    assert info.options["query_key_twice"] is False
    assert {d.option: d.code for d in info.divergences}["query_key_twice"] is True
