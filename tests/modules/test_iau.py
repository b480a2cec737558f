"""CIAU / SIAU (image and video forms) against the IAU equations, recomputed in float64 with
explicit loops over channels, parts, frames and graph edges."""

import pytest
import torch
from _random_weights import randomize

import attnzoo


def bn(v, m):
    return (v - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias


def w(conv):
    return conv.weight[:, :, 0, 0]


def naive_ciau(module, x):
    """x (B, C, [T,] H, W); the nodes are channels (image) or (channel, frame) pairs (video)."""
    b, c = x.shape[:2]
    out = x.clone()
    for n in range(b):
        nodes = x[n].reshape(-1, x.shape[-2] * x.shape[-1])  # (C·T, N), channel-major
        m = nodes.shape[0]
        logits = torch.empty(m, m, dtype=x.dtype)
        for i in range(m):
            for j in range(m):
                logits[i, j] = sum(nodes[i, k] * nodes[j, k] for k in range(nodes.shape[1]))
        f = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        f = f / f.sum(dim=1, keepdim=True)
        y = (f @ nodes).reshape(c, -1)  # (C, T·N)
        update = bn((w(module.proj) @ y).t(), module.norm).t()  # per position: conv then BN
        out[n] = x[n] + update.reshape(x.shape[1:])
    return out


def naive_siau(module, x, video):
    if not video:
        x = x.unsqueeze(2)  # (B, C, T=1, H, W)
    b, c, t_len, h, wd = x.shape
    parts = module.parts
    out = x.clone()
    all_maps = torch.empty(b, parts, t_len, h, wd, dtype=x.dtype)
    for n in range(b):
        feats = x[n].reshape(c, t_len, h * wd)
        a = torch.empty(parts, t_len, h * wd, dtype=x.dtype)
        for t in range(t_len):
            for i in range(h * wd):
                a[:, t, i] = torch.sigmoid(
                    bn(w(module.part_conv) @ feats[:, t, i], module.part_norm)
                )
        all_maps[n] = a.reshape(parts, t_len, h, wd)
        u = feats.mean(dim=(1, 2))
        nodes, keys = [], []
        for t in range(t_len):
            for p in range(parts):
                xp = sum(a[p, t, i] * feats[:, t, i] for i in range(h * wd))
                nodes.append(w(module.reduce) @ xp)
                keys.append((t, p))
        u_hat = w(module.reduce) @ u
        m = len(nodes)
        updated = []
        for i in range(m):
            ti, pi = keys[i]
            logits, neighbours = [], []
            for j in range(m):
                tj, pj = keys[j]
                linked = (ti == tj and pi != pj) or (ti != tj and pi == pj)
                if not linked:
                    continue
                edge_in = torch.cat([(nodes[i] - nodes[j]).abs(), u_hat])
                logits.append(bn(w(module.edge_conv) @ edge_in, module.edge_norm)[0])
                neighbours.append(nodes[j])
            weights = torch.softmax(torch.stack(logits), dim=0)
            context = sum(wt * nb for wt, nb in zip(weights, neighbours, strict=True))
            s = torch.relu(
                bn(w(module.update_conv) @ torch.cat([nodes[i], context]), module.update_norm)
            )
            updated.append(s)
        for t in range(t_len):
            frame_mean = sum(updated[t * parts + p] for p in range(parts)) / parts
            o = bn(w(module.out_conv) @ torch.cat([frame_mean, u_hat]), module.out_norm)
            out[n, :, t] = x[n, :, t] + o[:, None, None]
    if not video:
        return out[:, :, 0], all_maps[:, :, 0]
    return out, all_maps


@pytest.mark.parametrize("name", ["ciau", "ciau3d"])
def test_ciau_matches_equation(name):
    torch.manual_seed(0)
    module = attnzoo.create(name, 6).double().eval()
    randomize(module)
    shape = (2, 6, 3, 4, 5) if name == "ciau3d" else (2, 6, 4, 5)
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(module(x), naive_ciau(module, x))


@pytest.mark.parametrize("name,video", [("siau", False), ("siau3d", True)])
def test_siau_matches_equation_and_records_part_maps(name, video):
    torch.manual_seed(0)
    module = attnzoo.create(name, 8).double().eval()
    randomize(module)
    shape = (2, 8, 3, 4, 5) if video else (2, 8, 4, 5)
    x = torch.randn(*shape, dtype=torch.float64)
    expected, part_maps = naive_siau(module, x, video)
    with attnzoo.recording_maps(module):
        got = module(x)
        maps = dict(module.maps)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(maps["parts"], part_maps)
    strongest = part_maps.amax(dim=1, keepdim=True)
    if video:
        strongest = strongest.mean(dim=2)  # (B, 1, H, W): averaged over frames
    torch.testing.assert_close(maps["spatial"], strongest)
    assert maps["parts"].shape[1] == 4  # P = 4 parts by default
    assert module.reduce.out_channels == 4  # C / 2


def test_siau_graph_links_other_parts_in_a_frame_and_the_same_part_across_frames():
    module = attnzoo.create("siau3d", 8, parts=3)
    allowed = module._allowed_edges(2, torch.device("cpu"))
    # nodes: frame 0 parts 0..2, frame 1 parts 0..2
    expected = torch.tensor(
        [
            [0, 1, 1, 1, 0, 0],
            [1, 0, 1, 0, 1, 0],
            [1, 1, 0, 0, 0, 1],
            [1, 0, 0, 0, 1, 1],
            [0, 1, 0, 1, 0, 1],
            [0, 0, 1, 1, 1, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)


def test_iau_is_identity_at_init_and_rejects_bad_options():
    x = torch.randn(2, 8, 3, 5)
    for name in ("ciau", "siau"):
        module = attnzoo.create(name, 8).train()
        torch.testing.assert_close(module(x), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="parts=1 is not allowed; expected an integer >= 2"):
        attnzoo.create("siau", 8, parts=1)
    with pytest.raises(ValueError, match="rank 5"):
        attnzoo.create("siau3d", 8)(x)


def test_ciau_softmax_stays_finite_under_fp16_scale_logits():
    module = attnzoo.create("ciau", 4).eval()
    randomize(module)
    module.float()
    x = torch.full((1, 4, 8, 8), 60.0)  # X Xᵀ = 230400 > fp16 max
    with torch.autocast("cpu", dtype=torch.float16):
        out = module(x)
    assert torch.isfinite(out).all()
