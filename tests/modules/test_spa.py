"""SPA against the paper's equation, recomputed naively in float64 from the module's weights."""

import torch

import attnzoo


def naive_avg_pool(plane, size):
    """Adaptive average pooling of one (H, W) plane with explicit loops (PyTorch's bins)."""
    height, width = plane.shape
    out = torch.empty(size, size, dtype=plane.dtype)
    for i in range(size):
        h0, h1 = (i * height) // size, -((-(i + 1) * height) // size)
        for j in range(size):
            w0, w1 = (j * width) // size, -((-(j + 1) * width) // size)
            out[i, j] = plane[h0:h1, w0:w1].mean()
    return out


def naive_spa_weights(x, w1, w2):
    batch, channels = x.shape[:2]
    weights = torch.empty(batch, channels, dtype=x.dtype)
    for n in range(batch):
        levels = []
        for size in (1, 2, 4):
            levels.append(torch.stack([naive_avg_pool(x[n, c], size) for c in range(channels)]))
        pyramid = torch.cat([level.flatten() for level in levels])  # 21·C, channel-major
        assert pyramid.numel() == 21 * channels
        weights[n] = torch.sigmoid(w2 @ torch.relu(w1 @ pyramid))
    return weights


def test_spa_gate_matches_equation_on_odd_sizes():
    torch.manual_seed(0)
    module = attnzoo.create("spa", 32).double()
    for h, w in ((7, 9), (3, 3), (8, 8)):
        x = torch.randn(2, 32, h, w, dtype=torch.float64)
        weights = naive_spa_weights(x, module.fc1.weight, module.fc2.weight)
        torch.testing.assert_close(module(x), x * weights[:, :, None, None])


def test_spa_weights_form_for_topologies_b_and_c():
    torch.manual_seed(1)
    module = attnzoo.create("spa", 16).double()
    block_input = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    branch_output = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    weights = module.weights(block_input)
    assert weights.shape == (2, 16, 1, 1)
    expected = naive_spa_weights(block_input, module.fc1.weight, module.fc2.weight)
    torch.testing.assert_close(weights[:, :, 0, 0], expected)
    # topology B: weights from the block input scale the residual branch output
    torch.testing.assert_close(branch_output * weights, branch_output * expected[:, :, None, None])


def test_spa_layers_have_no_bias_and_the_paper_widths():
    module = attnzoo.create("spa", 64)
    assert module.fc1.bias is None and module.fc2.bias is None
    assert module.fc1.in_features == 21 * 64 and module.fc1.out_features == 4
    assert module.fc2.out_features == 64
