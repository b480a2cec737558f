"""SE against the paper's equation, recomputed naively in float64 from the module's weights."""

import torch

import attnzoo


def naive_se(x, w1, b1, w2, b2):
    batch, channels = x.shape[:2]
    out = torch.empty_like(x)
    for n in range(batch):
        z = torch.stack([x[n, c].mean() for c in range(channels)])  # squeeze
        hidden = torch.relu(w1 @ z + (b1 if b1 is not None else 0))
        s = torch.sigmoid(w2 @ hidden + (b2 if b2 is not None else 0))  # excite
        for c in range(channels):
            out[n, c] = x[n, c] * s[c]
    return out


def test_se_matches_equation_with_and_without_bias():
    for bias in (True, False):
        torch.manual_seed(0)
        module = attnzoo.create("se", 32, bias=bias).double()
        x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
        fc1, fc2 = module.fc1, module.fc2
        expected = naive_se(
            x,
            fc1.weight[:, :, 0, 0],
            fc1.bias,
            fc2.weight[:, :, 0, 0],
            fc2.bias,
        )
        torch.testing.assert_close(module(x), expected)
        assert (fc1.bias is not None) == bias


def test_se_reduced_width_is_exact_by_default_and_rounds_with_divisor():
    assert attnzoo.create("se", 64).fc1.out_channels == 4  # 64 / 16
    assert attnzoo.create("se", 48, rd_ratio=1 / 16, rd_divisor=8).fc1.out_channels == 8
    assert attnzoo.create("se", 64, rd_channels=7).fc1.out_channels == 7
