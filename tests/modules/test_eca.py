"""ECA against the paper's equation, recomputed naively in float64 from the module's weights."""

import math

import pytest
import torch

import attnzoo
from attnzoo.modules.eca import adaptive_kernel_size


def naive_eca(x, taps):
    batch, channels = x.shape[:2]
    k = taps.numel()
    half = (k - 1) // 2
    out = torch.empty_like(x)
    for n in range(batch):
        y = [x[n, c].mean() for c in range(channels)]
        for c in range(channels):
            # cross-correlation over neighbouring channels, zero outside [0, C)
            s = sum(taps[a] * y[c - half + a] for a in range(k) if 0 <= c - half + a < channels)
            out[n, c] = x[n, c] * torch.sigmoid(s)
    return out


def psi(channels, gamma=2, b=1):
    """Paper eq. (12) written out: |log2(C)/γ + b/γ|, truncated, then made odd."""
    t = int(abs(math.log(channels, 2) / gamma + b / gamma))
    return t if t % 2 == 1 else t + 1


@pytest.mark.parametrize("k_size", [None, 3, 7])
def test_eca_matches_equation(k_size):
    torch.manual_seed(0)
    module = attnzoo.create("eca", 64, k_size=k_size).double()
    x = torch.randn(2, 64, 5, 7, dtype=torch.float64)
    taps = module.conv.weight[0, 0]
    assert taps.numel() == (k_size or psi(64))
    torch.testing.assert_close(module(x), naive_eca(x, taps))


def test_eca_adaptive_kernel_size_formula():
    # ResNet-50 stage widths: the formula gives 5, 5, 5, 7. The released checkpoint used
    # 3, 5, 5, 7 (first stage differs), which is why k_size exists as an option.
    assert [adaptive_kernel_size(c) for c in (256, 512, 1024, 2048)] == [5, 5, 5, 7]
    for channels in (4, 16, 24, 64, 100, 128, 320, 1280, 4096):
        assert adaptive_kernel_size(channels) == max(psi(channels), 3), channels
    assert adaptive_kernel_size(2) == 3  # the formula gives 1; the minimum is 3
    assert adaptive_kernel_size(64) == 3 and adaptive_kernel_size(128) == 5
    assert attnzoo.create("eca", 2048).conv.kernel_size == (7,)
    assert attnzoo.create("eca", 2048, gamma=3, beta=2).conv.kernel_size == (5,)  # int(13/3)=4


def test_eca_has_only_k_parameters_and_no_bias():
    module = attnzoo.create("eca", 256)
    assert [p.numel() for p in module.parameters()] == [5]


def test_eca_rejects_even_or_invalid_k():
    for bad in (0, 4, -3, 2.0):
        with pytest.raises(ValueError, match="k_size"):
            attnzoo.create("eca", 16, k_size=bad)
