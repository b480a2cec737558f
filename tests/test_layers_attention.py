"""layers.attention_fp32 (the SDPA path) against an explicit N×M softmax, and the
positions_first / positions_last reshapes."""

import pytest
import torch
from torch.profiler import profile

from attnzoo.layers import attention_fp32, positions_first, positions_last


def explicit(q, k, v, scale):
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


@pytest.mark.parametrize(("d", "dv"), [(8, 8), (4, 16), (16, 4)])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_sdpa_path_matches_explicit_attention(d, dv, scale):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 1, 30, d, dtype=torch.float64, generator=g)
    k = torch.randn(2, 1, 11, d, dtype=torch.float64, generator=g)
    v = torch.randn(2, 1, 11, dv, dtype=torch.float64, generator=g)
    out = attention_fp32(q, k, v, scale)
    assert out.shape == (2, 1, 30, dv) and out.dtype == torch.float64
    torch.testing.assert_close(out, explicit(q, k, v, scale))


def test_unequal_widths_and_transposed_views_keep_the_fused_kernel():
    q = torch.randn(1, 1, 8, 40).transpose(-1, -2)  # (1, 1, 40, 8), last dim not contiguous
    k = torch.randn(1, 1, 8, 40).transpose(-1, -2)
    v = torch.randn(1, 1, 40, 32)
    with profile() as prof:
        out = attention_fp32(q, k, v, 1.0)
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names
    torch.testing.assert_close(out, explicit(q, k, v, 1.0), rtol=1e-5, atol=1e-5)


def test_softmax_runs_in_float32_under_autocast_with_large_logits():
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 1, 20, 8, generator=g) * 100 for _ in range(2))
    v = torch.randn(1, 1, 20, 8, generator=g)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            out = attention_fp32(q.to(dtype), k.to(dtype), v.to(dtype), 1.0)
        assert out.dtype == dtype and torch.isfinite(out).all()
        ref = explicit(q.to(dtype).double(), k.to(dtype).double(), v.to(dtype).double(), 1.0)
        torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


def test_positions_first_and_last_round_trip_for_any_layout_and_rank():
    x = torch.randn(2, 5, 3, 4)
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        tokens = positions_first(t)
        assert tokens.shape == (2, 1, 12, 5) and tokens.stride(-1) == 1
        assert torch.equal(tokens[1, 0, 3 * 4 - 1], x[1, :, 2, 3])  # position (h=2, w=3)
        assert torch.equal(positions_last(tokens, (3, 4)), x)
    video = torch.randn(1, 3, 2, 2, 2)
    assert torch.equal(positions_last(positions_first(video), (2, 2, 2)), video)
