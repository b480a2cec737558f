"""RGA-S / RGA-C / RGA-SC against the paper's equations, recomputed node by node in float64."""

import pytest
import torch

import attnzoo


def randomize_bn(module, seed=0):
    """Eval-mode BN with non-trivial statistics and affine terms (so that every BN matters)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)


def bn(v, m):
    return (v - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias


def conv_bn_relu(block, v):
    """1x1 conv (no bias) -> BN -> ReLU on one node's feature vector ``v``."""
    return torch.relu(bn(block[0].weight[:, :, 0, 0] @ v, block[1]))


def naive_branch(branch, feats):
    """feats: (nodes, node_dim), one row per node. Returns the gate (nodes,)."""
    n = feats.shape[0]
    theta = torch.stack([conv_bn_relu(branch.theta, feats[i]) for i in range(n)])
    phi = torch.stack([conv_bn_relu(branch.phi, feats[i]) for i in range(n)])
    relation = torch.zeros(n, n, dtype=feats.dtype)
    for i in range(n):
        for j in range(n):
            relation[i, j] = (theta[i] * phi[j]).sum()
    gates = torch.empty(n, dtype=feats.dtype)
    hidden_block, last_conv, last_bn = branch.attention
    for i in range(n):
        r_i = torch.cat([relation[i, :], relation[:, i]])  # [R(i,:), R(:,i)]
        rel = conv_bn_relu(branch.relation, r_i)
        unary = conv_bn_relu(branch.unary, feats[i]).mean()
        y = torch.cat([unary.reshape(1), rel])
        h = conv_bn_relu(hidden_block, y)
        gates[i] = torch.sigmoid(bn(last_conv.weight[:, :, 0, 0] @ h, last_bn))[0]
    return gates


def naive_rga(module, x, spatial, channel):
    out = x.clone()
    b, c, h, w = x.shape
    s_maps, c_maps = [], []
    for n in range(b):
        xn = out[n].reshape(c, h * w)
        if spatial:
            gate = naive_branch(module.spatial, xn.t())  # nodes = positions
            s_maps.append(gate.reshape(1, h, w))
            xn = xn * gate[None, :]
        if channel:
            gate = naive_branch(module.channel, xn)  # nodes = channels
            c_maps.append(gate.reshape(c, 1, 1))
            xn = xn * gate[:, None]
        out[n] = xn.reshape(c, h, w)
    return out, s_maps, c_maps


@pytest.mark.parametrize(
    "name,spatial,channel",
    [("rga_s", True, False), ("rga_c", False, True), ("rga_sc", True, True)],
)
def test_rga_matches_equation(name, spatial, channel):
    torch.manual_seed(0)
    module = attnzoo.create(name, 16, spatial_size=(4, 6), cha_ratio=4, spa_ratio=4, down_ratio=2)
    module = module.double().eval()
    randomize_bn(module)
    x = torch.randn(2, 16, 4, 6, dtype=torch.float64)
    expected, s_maps, c_maps = naive_rga(module, x, spatial, channel)
    with attnzoo.recording_maps(module):
        got = module(x)
        maps = module.maps
    torch.testing.assert_close(got, expected)
    if spatial:
        torch.testing.assert_close(maps["spatial"], torch.stack(s_maps))
    if channel:
        torch.testing.assert_close(maps["channel"], torch.stack(c_maps))
    assert ("spatial" in maps) == spatial and ("channel" in maps) == channel


def test_rga_widths_follow_the_official_ratios():
    module = attnzoo.create("rga_sc", 256, spatial_size=(16, 8))  # N = 128
    assert module.spatial.theta[0].out_channels == 32  # C / cha_ratio
    assert module.spatial.relation[0].in_channels == 256  # 2N
    assert module.spatial.relation[0].out_channels == 16  # N / spa_ratio
    assert module.spatial.attention[0][0].out_channels == 2  # (1 + 16) // down_ratio
    assert module.channel.theta[0].in_channels == 128  # N
    assert module.channel.theta[0].out_channels == 16  # N / spa_ratio
    assert module.channel.relation[0].in_channels == 512  # 2C
    assert module.channel.relation[0].out_channels == 32  # C / cha_ratio
    assert module.channel.attention[0][0].out_channels == 4  # (1 + 32) // down_ratio


def test_rga_wrong_size_names_the_expected_size():
    module = attnzoo.create("rga_s", 16, spatial_size=(4, 6)).eval()
    with pytest.raises(ValueError, match=r"4x6.*got 6x4"):
        module(torch.randn(1, 16, 6, 4))
    with pytest.raises(ValueError, match="spatial_size"):
        attnzoo.create("rga_c", 16)
    with pytest.raises(ValueError, match="cha_ratio=8 reduces a width of 4"):
        attnzoo.create("rga_s", 4, spatial_size=(4, 4), cha_ratio=8)
