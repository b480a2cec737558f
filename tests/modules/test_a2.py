"""A²-Net against the paper's gather/distribute equations, naive loops in float64."""

import pytest
import torch

import attnzoo


def conv1x1(x, conv):
    out = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)


def naive_a2(module, x):
    batch, _, height, width = x.shape
    a = conv1x1(x, module.features).flatten(2)  # (B, m, N)
    b = conv1x1(x, module.gather_maps).flatten(2)  # (B, n, N)
    v = conv1x1(x, module.distribute_maps).flatten(2)  # (B, n, N)
    m, n, positions = a.shape[1], b.shape[1], a.shape[2]
    out = x.clone()
    for s in range(batch):
        # gather: g_j = Σ_i a_i · softmax over positions of b_j
        g = torch.zeros(m, n, dtype=x.dtype)
        for j in range(n):
            weights = torch.exp(b[s, j]) / torch.exp(b[s, j]).sum()
            for i in range(positions):
                g[:, j] += a[s, :, i] * weights[i]
        # distribute: z_i = Σ_j g_j · softmax over the n descriptors of v_i
        z = torch.zeros(m, positions, dtype=x.dtype)
        for i in range(positions):
            weights = torch.exp(v[s, :, i]) / torch.exp(v[s, :, i]).sum()
            for j in range(n):
                z[:, i] += g[:, j] * weights[j]
        out[s] += conv1x1(z.view(1, m, height, width), module.proj)[0]
    return out


def test_a2_matches_equations():
    torch.manual_seed(0)
    module = attnzoo.create("a2", 16).double()
    x = torch.randn(2, 16, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(module(x), naive_a2(module, x))


def test_a2_naive_check_catches_softmax_over_the_wrong_axis():
    """The classic bug, V's softmax over positions, must differ from the equation."""
    torch.manual_seed(1)
    module = attnzoo.create("a2", 16, attention_channels=3).double()
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    expected = naive_a2(module, x)
    a = module.features(x).flatten(2)
    gather = torch.softmax(module.gather_maps(x).flatten(2), dim=2)
    wrong = torch.softmax(module.distribute_maps(x).flatten(2), dim=2)  # over positions
    z = torch.bmm(torch.bmm(a, gather.transpose(1, 2)), wrong).view(2, -1, 4, 4)
    assert not torch.allclose(x + module.proj(z), expected, atol=1e-4)
    torch.testing.assert_close(module(x), expected)


def test_a2_widths_default_to_a_quarter_and_can_be_set():
    module = attnzoo.create("a2", 64)
    assert module.features.out_channels == 16 and module.gather_maps.out_channels == 16
    module = attnzoo.create("a2", 64, rd_channels=8, attention_channels=4)
    assert module.features.out_channels == 8
    assert module.gather_maps.out_channels == module.distribute_maps.out_channels == 4
    assert module.proj.in_channels == 8 and module.proj.out_channels == 64
    with pytest.raises(ValueError, match="attention_channels"):
        attnzoo.create("a2", 64, attention_channels=0)
