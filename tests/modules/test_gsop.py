"""GSoP against the paper's equations, recomputed naively in float64 from the module's weights."""

import pytest
import torch
from _random_weights import randomize_batchnorm

import attnzoo


def bn_eval(x, bn):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale.view(shape) + bn.bias.view(shape)


def reduce(module, x):
    w = module.reduce.weight[:, :, 0, 0]
    stride = module.reduce.stride[0]
    x = x[:, :, ::stride, ::stride]
    y = torch.einsum("dc,bchw->bdhw", w, x)
    return bn_eval(y, module.reduce_bn)


def naive_gate_from_cov(module, cov, act):
    """RowBN, row-wise conv (row r of Σ -> 4 outputs), act, 1x1 conv, sigmoid; one sample."""
    rows = cov.shape[0]
    bn = module.row_bn
    normed = torch.stack(
        [
            (cov[r] - bn.running_mean[r]) / torch.sqrt(bn.running_var[r] + bn.eps) * bn.weight[r]
            + bn.bias[r]
            for r in range(rows)
        ]
    )
    row_out = torch.empty(4 * rows, dtype=cov.dtype)
    for r in range(rows):
        for k in range(4):
            o = 4 * r + k
            row_out[o] = (module.row_conv.weight[o, 0, :, 0] * normed[r]).sum()
            row_out[o] += module.row_conv.bias[o]
    hidden = act(row_out)
    return torch.sigmoid(module.fc.weight[:, :, 0, 0] @ hidden + module.fc.bias)


def naive_channel_gsop(module, x, act, input_relu=False):
    feats = torch.relu(reduce(module, torch.relu(x) if input_relu else x))
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        vectors = [feats[b, :, i, j] for i in range(feats.shape[2]) for j in range(feats.shape[3])]
        mean = sum(vectors) / len(vectors)
        cov = sum(torch.outer(v - mean, v - mean) for v in vectors) / len(vectors)
        s = naive_gate_from_cov(module, cov, act)
        out[b] = x[b] * s[:, None, None]
    return out


@pytest.mark.parametrize(
    ("options", "act"),
    [
        ({}, lambda t: t),
        ({"row_act": "leaky_relu"}, lambda t: torch.nn.functional.leaky_relu(t, 0.1)),
        ({"input_relu": True, "reduce_stride": 2}, lambda t: t),
    ],
)
def test_channel_gsop_matches_equations(options, act):
    torch.manual_seed(0)
    module = attnzoo.create("gsop", 16, rd_channels=6, **options).double().eval()
    randomize_batchnorm(module, seed=7)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    expected = naive_channel_gsop(module, x, act, options.get("input_relu", False))
    torch.testing.assert_close(module(x), expected)


@pytest.mark.parametrize(
    ("norm", "output_relu"), [("channels", False), ("code", False), ("code", True)]
)
def test_spatial_gsop_matches_equations(norm, output_relu):
    torch.manual_seed(1)
    module = attnzoo.create(
        "gsop", 8, rd_channels=5, mode="spatial", pooled_size=3, output_relu=output_relu
    )
    module = module.double().eval()
    module.spatial_norm = norm
    randomize_batchnorm(module, seed=7)
    x = torch.randn(2, 8, 7, 6, dtype=torch.float64)
    feats = torch.nn.functional.adaptive_avg_pool2d(reduce(module, x), 3)  # (B, d, 3, 3)
    out = torch.empty_like(x)
    for b in range(2):
        samples = feats[b].flatten(1)  # (d, P²): position p is a variable, channels are samples
        depth, positions = samples.shape
        cov = torch.zeros(positions, positions, dtype=x.dtype)
        for p in range(positions):
            for q in range(positions):
                if norm == "channels":
                    mp, mq = samples[:, p].mean(), samples[:, q].mean()
                    cov[p, q] = ((samples[:, p] - mp) * (samples[:, q] - mq)).sum() / depth
                else:
                    cov[p, q] = (samples[:, p] * samples[:, q]).sum() / positions - samples[
                        :, p
                    ].sum() * samples[:, q].sum() / positions**2
        gate = naive_gate_from_cov(module, cov, torch.relu).view(1, 1, 3, 3)
        gate = torch.nn.functional.adaptive_avg_pool2d(gate, (7, 6))[0]
        out[b] = x[b] * gate
        if output_relu:  # the official spatial block: ReLU(X · gate)
            out[b] = torch.where(out[b] > 0, out[b], torch.zeros_like(out[b]))
    torch.testing.assert_close(module(x), out)
    if output_relu:
        assert (out < 0).sum() == 0 and (x < 0).any()


def test_output_relu_is_the_spatial_form_only():
    with pytest.raises(ValueError, match=r"output_relu=True .* needs mode='spatial'"):
        attnzoo.create("gsop", 8, rd_channels=4, output_relu=True)


def test_gsop_rejects_bad_options():
    with pytest.raises(ValueError, match="mode"):
        attnzoo.create("gsop", 16, mode="both")
    with pytest.raises(ValueError, match="row_act"):
        attnzoo.create("gsop", 16, row_act="gelu")


def test_gsop_structure():
    module = attnzoo.create("gsop", 64)
    assert module.reduce.out_channels == 128
    assert module.row_conv.groups == 128 and module.row_conv.kernel_size == (128, 1)
    assert module.row_conv.out_channels == 512 and module.fc.out_channels == 64


def test_covariance_does_not_overflow_fp16_when_summing_over_positions():
    """Σ_i x_i x_iᵀ over N positions before the 1/N overflows fp16 (65504) under autocast
    even when the covariance, a mean, is well inside the range."""
    torch.manual_seed(0)
    module = attnzoo.create("gsop", 8, rd_channels=4).eval()
    with torch.no_grad():
        module.reduce_bn.weight.fill_(300.0)  # features of a few hundred: squares ~1e4-1e5
        module.row_bn.running_var.fill_(1e8)  # keep what follows the covariance O(1)
    x = torch.randn(1, 8, 6, 6)
    expected = module(x)
    with torch.autocast("cpu", dtype=torch.float16):
        out = module(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)
