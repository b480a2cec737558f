"""scSE against the paper's equation (and the code's max), recomputed naively in float64."""

import pytest
import torch

import attnzoo


def naive_scse(x, module, combine):
    batch, channels, height, width = x.shape
    w1, b1 = module.channel_fc1.weight[:, :, 0, 0], module.channel_fc1.bias
    w2, b2 = module.channel_fc2.weight[:, :, 0, 0], module.channel_fc2.bias
    ws, bs = module.spatial_conv.weight[0, :, 0, 0], module.spatial_conv.bias[0]
    out = torch.empty_like(x)
    for n in range(batch):
        z = torch.stack([x[n, c].mean() for c in range(channels)])
        s = torch.sigmoid(w2 @ torch.relu(w1 @ z + b1) + b2)  # cSE weights (C,)
        for i in range(height):
            for j in range(width):
                q = torch.sigmoid(sum(ws[c] * x[n, c, i, j] for c in range(channels)) + bs)
                for c in range(channels):
                    cse, sse = x[n, c, i, j] * s[c], x[n, c, i, j] * q
                    out[n, c, i, j] = cse + sse if combine == "sum" else max(cse, sse)
    return out


@pytest.mark.parametrize("combine", ["sum", "max"])
def test_scse_matches_equation_and_code_max(combine):
    torch.manual_seed(0)
    module = attnzoo.create("scse", 8, combine=combine).double()
    x = torch.randn(2, 8, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(module(x), naive_scse(x, module, combine))


def test_scse_reduction_is_two_by_default():
    module = attnzoo.create("scse", 32)
    assert module.channel_fc1.out_channels == 16 and module.spatial_conv.out_channels == 1


def test_scse_records_both_gates():
    module = attnzoo.create("scse", 16)
    x = torch.randn(2, 16, 5, 7)
    with attnzoo.recording_maps(module):
        y = module(x)
        s, q = module.maps["channel"], module.maps["spatial"]
    assert s.shape == (2, 16, 1, 1) and q.shape == (2, 1, 5, 7)
    torch.testing.assert_close(y, x * s + x * q)


def test_scse_rejects_unknown_combine():
    with pytest.raises(ValueError, match="combine"):
        attnzoo.create("scse", 16, combine="mean")
