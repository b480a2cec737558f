"""FcaNet against the paper's equation, recomputed naively in float64 from the module's weights."""

import math

import pytest
import torch

import attnzoo
from attnzoo.modules.fca import dct_basis, frequency_indices

TOP16_U = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
TOP16_V = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]


def basis(t, u, length, norm):
    value = math.cos(math.pi * u * (t + 0.5) / length)
    if norm == "ortho":
        value *= (1 / math.sqrt(length)) * (math.sqrt(2) if u != 0 else 1.0)
    return value


def naive_fca(x, u, v, size, norm, w1, w2):
    """DCT pooling with explicit loops over positions, then the SE excitation."""
    batch, channels = x.shape[:2]
    group = channels // len(u)
    pooled = torch.nn.functional.adaptive_avg_pool2d(x, size)
    out = torch.empty_like(x)
    for n in range(batch):
        freq = torch.zeros(channels, dtype=x.dtype)
        for c in range(channels):
            k = c // group
            for i in range(size[0]):
                for j in range(size[1]):
                    weight = basis(i, u[k], size[0], norm) * basis(j, v[k], size[1], norm)
                    freq[c] += pooled[n, c, i, j] * weight
        s = torch.sigmoid(w2 @ torch.relu(w1 @ freq))
        out[n] = x[n] * s[:, None, None]
    return out


def test_dct_basis_matches_formula():
    for length in (7, 14):
        for u in range(length):
            for t in range(length):
                assert dct_basis(t, u, length) == pytest.approx(basis(t, u, length, "ortho"))
                assert dct_basis(t, u, length, "none") == pytest.approx(basis(t, u, length, "none"))
    # the orthonormal basis is orthonormal: B Bᵀ = I
    b = torch.tensor([[dct_basis(t, u, 7) for t in range(7)] for u in range(7)])
    torch.testing.assert_close(b @ b.T, torch.eye(7, dtype=b.dtype), atol=1e-6, rtol=0)


def test_frequency_tables_and_scaling():
    assert frequency_indices("top16") == (TOP16_U, TOP16_V)
    assert frequency_indices("low4") == ([0, 0, 1, 1], [0, 1, 0, 1])
    assert frequency_indices("bot1") == ([6], [6])
    module = attnzoo.create("fca", 32, frequencies="top2", dct_size=14)
    # group 1 uses (u, v) = (0, 1) scaled by 14 // 7 = 2 -> (0, 2)
    expected = torch.tensor(
        [
            [basis(i, 0, 14, "ortho") * basis(j, 2, 14, "ortho") for j in range(14)]
            for i in range(14)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(module.dct_filter[16].double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm", ["ortho", "none"])
def test_fca_matches_equation(norm):
    torch.manual_seed(0)
    module = attnzoo.create("fca", 32, dct_norm=norm).double()
    for h, w in ((7, 7), (9, 5)):
        x = torch.randn(2, 32, h, w, dtype=torch.float64)
        expected = naive_fca(
            x, TOP16_U, TOP16_V, (7, 7), norm, module.fc1.weight, module.fc2.weight
        )
        torch.testing.assert_close(module(x), expected)


def test_fca_larger_grid_and_low_frequencies():
    torch.manual_seed(1)
    module = attnzoo.create("fca", 16, frequencies="low8", dct_size=14).double()
    u, v = frequency_indices("low8")
    x = torch.randn(1, 16, 14, 14, dtype=torch.float64)
    expected = naive_fca(
        x,
        [2 * f for f in u],
        [2 * f for f in v],
        (14, 14),
        "ortho",
        module.fc1.weight,
        module.fc2.weight,
    )
    torch.testing.assert_close(module(x), expected)


def test_fca_rejects_bad_configurations():
    with pytest.raises(ValueError, match=r"divisible by 16.*got 24"):
        attnzoo.create("fca", 24)
    with pytest.raises(ValueError, match=r"frequencies=.top3. is not allowed"):
        attnzoo.create("fca", 32, frequencies="top3")
    with pytest.raises(ValueError, match="dct_size=4 is not allowed; expected an integer >= 7"):
        attnzoo.create("fca", 32, dct_size=4)
    with pytest.raises(ValueError, match="dct_norm"):
        attnzoo.create("fca", 32, dct_norm="l2")
