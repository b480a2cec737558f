"""CBAM against the paper's equations, recomputed naively in float64 from the module's weights."""

import pytest
import torch

import attnzoo


def naive_cbam(x, module, bn=None, order="mean_max"):
    batch, channels, height, width = x.shape
    w1, b1 = module.mlp[0].weight[:, :, 0, 0], module.mlp[0].bias
    w2, b2 = module.mlp[2].weight[:, :, 0, 0], module.mlp[2].bias
    kernel = module.spatial_conv.weight[0]  # (2, k, k)
    bias = module.spatial_conv.bias
    k = kernel.shape[-1]
    half = k // 2

    def mlp(v):
        return w2 @ torch.relu(w1 @ v + b1) + b2

    out = torch.empty_like(x)
    for n in range(batch):
        avg = torch.stack([x[n, c].mean() for c in range(channels)])
        mx = torch.stack([x[n, c].max() for c in range(channels)])
        mc = torch.sigmoid(mlp(avg) + mlp(mx))
        xc = torch.stack([x[n, c] * mc[c] for c in range(channels)])  # (C, H, W)
        mean_map = sum(xc[c] for c in range(channels)) / channels
        max_map = xc.max(dim=0).values
        maps = [mean_map, max_map] if order == "mean_max" else [max_map, mean_map]
        logits = torch.zeros(height, width, dtype=x.dtype)
        for i in range(height):
            for j in range(width):
                s = 0.0
                for m in range(2):
                    for a in range(k):
                        for b in range(k):
                            ii, jj = i + a - half, j + b - half
                            if 0 <= ii < height and 0 <= jj < width:
                                s = s + kernel[m, a, b] * maps[m][ii, jj]
                logits[i, j] = s + (bias[0] if bias is not None else 0)
        if bn is not None:  # eval-mode BatchNorm with the module's running statistics
            logits = (logits - bn.running_mean[0]) / torch.sqrt(bn.running_var[0] + bn.eps)
            logits = logits * bn.weight[0] + bn.bias[0]
        out[n] = xc * torch.sigmoid(logits)
    return out


@pytest.mark.parametrize(
    "spatial_bn,pool_order",
    [(False, "mean_max"), (True, "mean_max"), (False, "max_mean"), (True, "max_mean")],
)
def test_cbam_matches_equation_and_code_options(spatial_bn, pool_order):
    torch.manual_seed(0)
    module = attnzoo.create("cbam", 32, spatial_bn=spatial_bn, pool_order=pool_order)
    module = module.double().eval()
    if spatial_bn:
        bn = module.spatial_norm
        bn.running_mean.fill_(0.3)
        bn.running_var.fill_(2.0)
        bn.weight.data.fill_(1.5)
        bn.bias.data.fill_(-0.2)
        assert module.spatial_conv.bias is None  # official: conv without bias before BN
    else:
        assert module.spatial_conv.bias is not None
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    expected = naive_cbam(x, module, module.spatial_norm if spatial_bn else None, pool_order)
    torch.testing.assert_close(module(x), expected)


def test_cbam_pool_order_changes_the_result():
    torch.manual_seed(0)
    paper = attnzoo.create("cbam", 16).double()
    code = attnzoo.create("cbam", 16, pool_order="max_mean").double()
    code.load_state_dict(paper.state_dict())
    x = torch.randn(1, 16, 6, 6, dtype=torch.float64)
    assert not torch.allclose(paper(x), code(x))
    # swapping the two input channels of the 7x7 conv makes them agree again
    with torch.no_grad():
        code.spatial_conv.weight.copy_(paper.spatial_conv.weight.flip(1))
    torch.testing.assert_close(paper(x), code(x))


def test_cbam_records_the_gates_it_applies():
    module = attnzoo.create("cbam", 16)
    x = torch.randn(2, 16, 5, 7)
    with attnzoo.recording_maps(module):
        y = module(x)
        mc, ms = module.maps["channel"], module.maps["spatial"]
    assert mc.shape == (2, 16, 1, 1) and ms.shape == (2, 1, 5, 7)
    torch.testing.assert_close(y, x * mc * ms)


def test_cbam_mlp_width_and_bad_options():
    assert attnzoo.create("cbam", 64).mlp[0].out_channels == 4
    with pytest.raises(ValueError, match="pool_order"):
        attnzoo.create("cbam", 16, pool_order="avg_max")
    with pytest.raises(ValueError, match="spatial_kernel"):
        attnzoo.create("cbam", 16, spatial_kernel=4)
