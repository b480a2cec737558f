"""Non-local block against the paper's equation, recomputed naively in float64 with explicit
N×N' matrices and loops from the module's own weights."""

import math

import pytest
import torch
from torch.profiler import profile

import attnzoo


def randomized(name, channels, **options):
    torch.manual_seed(0)
    module = attnzoo.create(name, channels, **options).double().eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) / math.sqrt(p.numel()))
        module.out_norm.running_mean.normal_(generator=generator)
        module.out_norm.running_var.uniform_(0.5, 2.0, generator=generator)
    return module


def project(conv, x):
    """1x1 conv as a matrix product: (B, C, N) -> (B, C', N)."""
    w = conv.weight.reshape(conv.weight.shape[0], -1)
    return torch.einsum("oc,bcn->bon", w, x) + conv.bias[None, :, None]


def naive_pool(x, kernel):
    """Max-pool with stride = kernel, floor mode, by loops: (B, C, *S) -> (B, C, *S//k)."""
    two_d = x.dim() == 4
    if two_d:
        x, kernel = x.unsqueeze(2), (1, *kernel)
    b, c, t, h, w = x.shape
    kt, kh, kw = kernel
    out = torch.empty(b, c, t // kt, h // kh, w // kw, dtype=x.dtype)
    for i in range(t // kt):
        for j in range(h // kh):
            for k in range(w // kw):
                block = x[:, :, i * kt : (i + 1) * kt, j * kh : (j + 1) * kh, k * kw : (k + 1) * kw]
                out[:, :, i, j, k] = block.amax(dim=(2, 3, 4))
    return out.squeeze(2) if two_d else out


def naive_nonlocal(module, x, pairwise, sub_sample, scaled, pool_input, kernel):
    batch, channels = x.shape[:2]
    spatial = x.shape[2:]
    flat = x.reshape(batch, channels, -1)  # (B, C, N)

    def pooled(t):  # (B, C, *S) -> (B, C, N')
        t = naive_pool(t, kernel) if sub_sample else t
        return t.reshape(t.shape[0], t.shape[1], -1)

    def conv_map(conv, t):  # 1x1 conv on a (B, C, *S) map, keeping the layout
        return project(conv, t.reshape(batch, t.shape[1], -1)).reshape(batch, -1, *t.shape[2:])

    if pairwise == "gaussian":
        theta, phi = flat, pooled(x)
        if pool_input or not sub_sample:
            g = project(module.g, pooled(x))
        else:
            g = pooled(conv_map(module.g, x))
    else:
        theta = project(module.theta, flat)
        if pool_input or not sub_sample:
            phi, g = project(module.phi, pooled(x)), project(module.g, pooled(x))
        else:
            phi, g = pooled(conv_map(module.phi, x)), pooled(conv_map(module.g, x))
    n, n_keys = theta.shape[2], phi.shape[2]
    inner = module.inner
    out = torch.empty_like(flat)
    for b in range(batch):
        f = torch.empty(n, n_keys, dtype=x.dtype)
        for i in range(n):
            for j in range(n_keys):
                if pairwise == "concatenation":
                    pair = torch.cat([theta[b, :, i], phi[b, :, j]])
                    f[i, j] = torch.relu(module.concat_project @ pair) / n_keys
                else:
                    f[i, j] = theta[b, :, i] @ phi[b, :, j]
        if pairwise == "embedded_gaussian" and scaled:
            f = f * inner**-0.5
        if pairwise in ("embedded_gaussian", "gaussian"):
            f = torch.exp(f - f.max(dim=1, keepdim=True).values)
            f = f / f.sum(dim=1, keepdim=True)
        elif pairwise == "dot_product":
            f = f / n_keys
        y = f @ g[b].T  # (N, C/2)
        z = project(module.out_conv, y.T[None])[0]  # (C, N)
        bn = module.out_norm
        z = (z - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        out[b] = flat[b] + z * bn.weight[:, None] + bn.bias[:, None]
    return out.reshape(batch, channels, *spatial)


@pytest.mark.parametrize(
    "pairwise", ["embedded_gaussian", "gaussian", "dot_product", "concatenation"]
)
@pytest.mark.parametrize("sub_sample", [True, False])
def test_nonlocal_2d_matches_equation(pairwise, sub_sample):
    module = randomized("nonlocal", 8, pairwise=pairwise, sub_sample=sub_sample)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    expected = naive_nonlocal(module, x, pairwise, sub_sample, True, False, (2, 2))
    torch.testing.assert_close(module(x), expected)


@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("pool_input", [True, False])
def test_nonlocal_paper_vs_code_options(scaled, pool_input):
    module = randomized("nonlocal", 8, scaled=scaled, pool_input=pool_input)
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    expected = naive_nonlocal(module, x, "embedded_gaussian", True, scaled, pool_input, (2, 2))
    torch.testing.assert_close(module(x), expected)
    # the option changes the result (the test would catch an ignored switch)
    other = randomized("nonlocal", 8, scaled=not scaled, pool_input=pool_input)
    assert not torch.allclose(other(x), expected)


@pytest.mark.parametrize("pairwise", ["embedded_gaussian", "dot_product"])
def test_nonlocal_3d_matches_equation_with_1x2x2_pooling(pairwise):
    module = randomized("nonlocal3d", 8, pairwise=pairwise)
    x = torch.randn(1, 8, 3, 4, 5, dtype=torch.float64)
    expected = naive_nonlocal(module, x, pairwise, True, True, False, (1, 2, 2))
    assert module.pool.kernel_size == (1, 2, 2)
    torch.testing.assert_close(module(x), expected)


def test_nonlocal_is_identity_at_init_and_bn_weight_is_zero():
    module = attnzoo.create("nonlocal", 16)
    assert torch.count_nonzero(module.out_norm.weight) == 0
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(module(x), x)


def test_embedded_gaussian_runs_the_fused_sdpa_kernel_not_the_nxn_path():
    module = attnzoo.create("nonlocal", 16)
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    with profile() as prof:
        module(x).sum().backward()
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names


def test_bf16_and_float64_inputs_give_finite_results():
    module = randomized("nonlocal", 8, pairwise="concatenation")
    out64 = module(torch.randn(1, 8, 4, 4, dtype=torch.float64))
    assert out64.dtype == torch.float64 and torch.isfinite(out64).all()
    module = module.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(torch.randn(1, 8, 4, 4) * 100)
    assert torch.isfinite(out).all()


def test_unknown_pairwise_is_rejected():
    with pytest.raises(ValueError, match=r"pairwise=.cosine. is not allowed; expected one of"):
        attnzoo.create("nonlocal", 8, pairwise="cosine")


def test_dot_product_does_not_overflow_fp16_when_summing_over_the_keys():
    """φᵀg summed over N' keys before the 1/N' overflows fp16 (65504) even when the output,
    a mean, is small: every key and value is 100 here, so Σ_j φ_j g_j = 16·10⁴ but the mean is
    10⁴ and the output is ~40."""
    module = attnzoo.create("nonlocal", 8, pairwise="dot_product", sub_sample=False).eval()
    with torch.no_grad():
        module.out_norm.weight.fill_(1.0)
        for conv, bias in ((module.theta, 1e-3), (module.phi, 100.0), (module.g, 100.0)):
            conv.weight.zero_()
            conv.bias.fill_(bias)
    x = torch.randn(1, 8, 4, 4)
    expected = module(x)
    with torch.autocast("cpu", dtype=torch.float16):
        out = module(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)
