"""BAM against the paper's equations (and the official code's product), recomputed naively in
float64 from the module's own weights, with BatchNorm in eval mode from random statistics."""

import pytest
import torch
from torch import nn

import attnzoo


def bn_eval(v, bn, index=None):
    """Eval-mode BatchNorm of a scalar/tensor v belonging to channel ``index`` (or all)."""
    sl = slice(None) if index is None else index
    scale = bn.weight[sl] / torch.sqrt(bn.running_var[sl] + bn.eps)
    return (v - bn.running_mean[sl]) * scale + bn.bias[sl]


def naive_conv(x, conv, dilation=1, padding=0):
    """Direct loops: x (Cin, H, W) -> (Cout, H, W) with a stride-1 kernel."""
    _, height, width = x.shape
    weight = conv.weight
    cout, _, k, _ = weight.shape
    out = torch.zeros(cout, height, width, dtype=x.dtype)
    for i in range(height):
        for j in range(width):
            for a in range(k):
                for b in range(k):
                    ii, jj = i + a * dilation - padding, j + b * dilation - padding
                    if 0 <= ii < height and 0 <= jj < width:
                        out[:, i, j] += weight[:, :, a, b] @ x[:, ii, jj]
    if conv.bias is not None:
        out += conv.bias.view(-1, 1, 1)
    return out


def naive_branches(f, module):
    """Mc (C,) and Ms (H, W) for one sample f (C, H, W)."""
    z = torch.stack([f[c].mean() for c in range(f.shape[0])])
    convs = [m for m in module.spatial_gate.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in module.spatial_gate.modules() if isinstance(m, nn.BatchNorm2d)]
    fc0 = module.channel_gate[0]
    fc1 = module.channel_gate[3 if module.branch_norm == "hidden" else 2]
    if module.branch_norm == "hidden":  # code layout: BN + ReLU after every hidden layer
        bn1d = module.channel_gate[1]
        mc = fc1.weight @ torch.relu(bn_eval(fc0.weight @ z, bn1d)) + fc1.bias
        s = f
        for k, conv in enumerate(convs[:-1]):
            dil = 1 if k == 0 else 4
            s = torch.relu(_bn2d(naive_conv(s, conv, dil, dil if k else 0), bns[k]))
        ms = naive_conv(s, convs[-1])[0]
    else:  # paper eqs. (3)-(4): BN at the output of each branch
        bn1d = module.channel_gate[3]
        mc = bn_eval(fc1.weight @ torch.relu(fc0.weight @ z + fc0.bias), bn1d)
        s = f
        for k, conv in enumerate(convs[:-1]):
            dil = 1 if k == 0 else 4
            s = torch.relu(naive_conv(s, conv, dil, dil if k else 0))
        ms = _bn2d(naive_conv(s, convs[-1]), bns[0])[0]
    return mc, ms


def _bn2d(y, bn):
    return bn_eval(y.permute(1, 2, 0), bn).permute(2, 0, 1)  # channel axis last for broadcasting


def naive_bam(x, module, combine):
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        mc, ms = naive_branches(x[n], module)
        for c in range(x.shape[1]):
            if combine == "sum":  # paper: M = sigmoid(Mc + Ms), F' = F + F·M
                m = torch.sigmoid(mc[c] + ms)
                out[n, c] = x[n, c] + x[n, c] * m
            else:  # official code: att = 1 + sigmoid(Mc·Ms), out = att·F
                out[n, c] = (1 + torch.sigmoid(mc[c] * ms)) * x[n, c]
    return out


def randomize_bn(module, generator):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=generator))
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator))


@pytest.mark.parametrize("combine", ["sum", "product"])
@pytest.mark.parametrize("branch_norm", ["hidden", "output"])
def test_bam_matches_equation_and_code_options(combine, branch_norm):
    torch.manual_seed(0)
    module = attnzoo.create("bam", 32, combine=combine, branch_norm=branch_norm).double().eval()
    generator = torch.Generator().manual_seed(2)
    randomize_bn(module, generator)
    x = torch.randn(2, 32, 7, 6, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(module(x), naive_bam(x, module, combine))


def test_bam_structure_follows_the_spec():
    module = attnzoo.create("bam", 64)
    convs = [m for m in module.spatial_gate.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 4, 1]
    assert [c.dilation for c in convs[1:3]] == [(4, 4), (4, 4)]
    assert [c.padding for c in convs[1:3]] == [(4, 4), (4, 4)]
    assert module.channel_gate[0].out_features == 4


@pytest.mark.parametrize("size", [(1, 1), (3, 11), (13, 5)])
def test_bam_keeps_any_spatial_size(size):
    module = attnzoo.create("bam", 32).eval()
    x = torch.randn(1, 32, *size)
    assert module(x).shape == x.shape


def test_bam_records_branch_logits_and_full_multiplier():
    module = attnzoo.create("bam", 32, combine="product").eval()
    x = torch.randn(2, 32, 5, 7)
    with attnzoo.recording_maps(module):
        y = module(x)
        mc, ms, mask = (module.maps[k] for k in ("channel", "spatial", "mask"))
    assert mc.shape == (2, 32, 1, 1) and ms.shape == (2, 1, 5, 7) and mask.shape == x.shape
    torch.testing.assert_close(mask, 1 + torch.sigmoid(mc * ms))
    torch.testing.assert_close(y, x * mask)


def test_bam_rejects_bad_options():
    with pytest.raises(ValueError, match="combine"):
        attnzoo.create("bam", 32, combine="mul")
    with pytest.raises(ValueError, match="branch_norm"):
        attnzoo.create("bam", 32, branch_norm="none")


def naive_bam_official_pool(x, module):
    """Official channel pooling: avg_pool2d(x, H, stride=H) -> the left H×H window, by loops."""
    height = x.shape[2]
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        window = x[n, :, :, :height]
        z = torch.stack([window[c].sum() / (height * height) for c in range(x.shape[1])])
        mc = (
            module.channel_gate[3].weight
            @ torch.relu(bn_eval(module.channel_gate[0].weight @ z, module.channel_gate[1]))
            + module.channel_gate[3].bias
        )
        _, ms = naive_branches(x[n], module)  # the spatial branch is unchanged
        for c in range(x.shape[1]):
            out[n, c] = x[n, c] + x[n, c] * torch.sigmoid(mc[c] + ms)
    return out


@pytest.mark.parametrize("size", [(6, 6), (5, 7), (4, 7)])
def test_bam_channel_pool_kernel_h_is_the_official_pooling(size):
    torch.manual_seed(0)
    module = attnzoo.create("bam", 32, channel_pool="kernel_h").double().eval()
    randomize_bn(module, torch.Generator().manual_seed(2))
    x = torch.randn(2, 32, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(module(x), naive_bam_official_pool(x, module))
    official = nn.functional.avg_pool2d(x, size[0], stride=size[0]).flatten(1)  # torch's own
    torch.testing.assert_close(module._pool(x), official)
    paper = attnzoo.create("bam", 32).double().eval()
    paper.load_state_dict(module.state_dict())
    torch.testing.assert_close(paper(x), naive_bam(x, paper, "sum"))  # global GAP default
    if size[0] != size[1]:
        assert not torch.allclose(paper(x), module(x))


@pytest.mark.parametrize("size", [(7, 5), (3, 6), (2, 9)])
def test_bam_channel_pool_kernel_h_rejects_maps_the_official_code_cannot_pool(size):
    module = attnzoo.create("bam", 32, channel_pool="kernel_h").eval()
    with pytest.raises(ValueError, match=r"kernel_h.*H <= W < 2H, got"):
        module(torch.randn(1, 32, *size))
