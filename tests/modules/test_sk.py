"""SK against the paper's equations, recomputed in float64 from the module's own weights."""

import pytest
import torch

import attnzoo


def naive_grouped_conv3x3(x, weight, groups, stride, dilation):
    """Grouped, dilated, strided 3x3 convolution as a sum of shifted slices (padding = dilation)."""
    batch, in_ch, height, width = x.shape
    out_ch = weight.shape[0]
    xp = torch.nn.functional.pad(x, (dilation,) * 4)
    out_h, out_w = (height - 1) // stride + 1, (width - 1) // stride + 1
    out = torch.zeros(batch, out_ch, out_h, out_w, dtype=x.dtype)
    in_per, out_per = in_ch // groups, out_ch // groups
    for o in range(out_ch):
        g = o // out_per
        for i in range(in_per):
            for ky in range(3):
                for kx in range(3):
                    patch = xp[
                        :,
                        g * in_per + i,
                        ky * dilation : ky * dilation + stride * (out_h - 1) + 1 : stride,
                        kx * dilation : kx * dilation + stride * (out_w - 1) + 1 : stride,
                    ]
                    out[:, o] += weight[o, i, ky, kx] * patch
    return out


def bn_eval(x, bn):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale.view(shape) + bn.bias.view(shape)


def randomize_bn(module):
    gen = torch.Generator().manual_seed(5)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def naive_sk(module, x, stride):
    branches = []
    for m, branch in enumerate(module.branches):
        conv, bn = branch[0], branch[1]
        u = naive_grouped_conv3x3(x, conv.weight, conv.groups, stride, dilation=m + 1)
        branches.append(torch.relu(bn_eval(u, bn)))
    s = sum(branches).mean(dim=(2, 3))  # (B, C)
    fc, bn = module.fuse[0], module.fuse[1]
    z = torch.relu(bn_eval(s @ fc.weight[:, :, 0, 0].T, bn))  # (B, d)
    logits = z @ module.select.weight[:, :, 0, 0].T  # (B, M·C)
    logits = logits.view(x.shape[0], len(branches), -1)
    out = torch.zeros_like(branches[0])
    for b in range(x.shape[0]):
        for c in range(logits.shape[2]):
            weights = torch.exp(logits[b, :, c]) / torch.exp(logits[b, :, c]).sum()
            for m in range(len(branches)):
                out[b, c] += weights[m] * branches[m][b, c]
    return out


@pytest.mark.parametrize(("in_ch", "out_ch", "stride", "groups"), [(32, 64, 2, 32), (8, 8, 1, 4)])
def test_sk_matches_equations(in_ch, out_ch, stride, groups):
    torch.manual_seed(0)
    module = attnzoo.create("sk", in_ch, out_channels=out_ch, stride=stride, groups=groups)
    module = module.double().eval()
    randomize_bn(module)
    x = torch.randn(2, in_ch, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(module(x), naive_sk(module, x, stride))


def test_sk_structure_follows_the_paper():
    module = attnzoo.create("sk", 64)
    assert [b[0].dilation for b in module.branches] == [(1, 1), (2, 2)]
    assert all(b[0].groups == 32 and b[0].kernel_size == (3, 3) for b in module.branches)
    assert module.fuse[0].out_channels == 32  # d = max(64 / 16, L = 32)
    assert module.fuse[0].bias is None
    assert attnzoo.create("sk", 1024).fuse[0].out_channels == 64  # d = 1024 / 16
    assert module.select.out_channels == 2 * 64


def test_sk_attention_sums_to_one_across_branches():
    module = attnzoo.create("sk", 32, num_branches=3).eval()
    x = torch.randn(2, 32, 5, 5)
    with attnzoo.recording_maps(module):
        module(x)
        first_branch = module.maps["channel"]
    assert first_branch.shape == (2, 32, 1, 1)
    assert ((first_branch > 0) & (first_branch < 1)).all()


def test_sk_groups_must_divide_channels():
    with pytest.raises(ValueError, match="divisible"):
        attnzoo.create("sk", 48)
    with pytest.raises(ValueError, match="out_channels=40"):
        attnzoo.create("sk", 32, out_channels=40)
