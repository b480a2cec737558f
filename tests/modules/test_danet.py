"""DANet PAM, CAM and head against the paper's equations, recomputed naively in float64 with
explicit N×N / C×C matrices and loops from the modules' own weights."""

import pytest
import torch
import torch.nn.functional as F
from _random_weights import randomized
from torch.profiler import profile

import attnzoo


def conv1x1(conv, x_flat):
    """(C, N) -> (C', N) by explicit matrix product."""
    return conv.weight[:, :, 0, 0] @ x_flat + conv.bias[:, None]


def naive_pam(module, x):
    batch, channels, height, width = x.shape
    n = height * width
    out = torch.empty_like(x)
    for b in range(batch):
        flat = x[b].reshape(channels, n)
        q, k, v = (conv1x1(c, flat) for c in (module.query, module.key, module.value))
        s = torch.empty(n, n, dtype=x.dtype)
        for i in range(n):
            logits = torch.stack([q[:, i] @ k[:, j] for j in range(n)])  # unscaled
            e = torch.exp(logits - logits.max())
            s[i] = e / e.sum()
        e_out = torch.stack([sum(s[i, j] * v[:, j] for j in range(n)) for i in range(n)], 1)
        out[b] = (module.gamma * e_out + flat).reshape(channels, height, width)
    return out


def naive_cam(module, x, invert_energy):
    batch, channels, height, width = x.shape
    out = torch.empty_like(x)
    for b in range(batch):
        flat = x[b].reshape(channels, -1)
        energy = torch.empty(channels, channels, dtype=x.dtype)
        for i in range(channels):
            for j in range(channels):
                energy[i, j] = (flat[i] * flat[j]).sum()
        if invert_energy:
            energy = energy.max(dim=1, keepdim=True).values - energy
        att = torch.exp(energy - energy.max(dim=1, keepdim=True).values)
        att = att / att.sum(dim=1, keepdim=True)
        out[b] = (module.gamma * (att @ flat) + flat).reshape(channels, height, width)
    return out


def test_pam_matches_equation():
    module = randomized("pam", 16)
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(module(x), naive_pam(module, x))


@pytest.mark.parametrize("invert_energy", [True, False])
def test_cam_matches_equation_in_both_forms(invert_energy):
    module = randomized("cam", 6, invert_energy=invert_energy)
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64) * 0.3
    expected = naive_cam(module, x, invert_energy)
    torch.testing.assert_close(module(x), expected)
    other = naive_cam(module, x, not invert_energy)
    assert not torch.allclose(module(x), other)


def test_pam_and_cam_are_identity_at_init():
    x = torch.randn(2, 16, 5, 5)
    for name in ("pam", "cam"):
        module = attnzoo.create(name, 16)
        assert module.gamma.item() == 0
        torch.testing.assert_close(module(x), x)


def test_pam_uses_the_fused_sdpa_kernel_and_matches_explicit_path():
    module = randomized("pam", 16).float()
    x = torch.randn(1, 16, 6, 7, requires_grad=True)
    with profile() as prof:
        out = module(x)
        out.sum().backward()
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names
    q = module.query(x).flatten(2).transpose(1, 2)  # (B, N, d)
    k = module.key(x).flatten(2)  # (B, d, N)
    v = module.value(x).flatten(2)  # (B, C, N)
    explicit = v @ torch.softmax(q @ k, dim=-1).transpose(1, 2)  # (B, C, N)
    torch.testing.assert_close(out, module.gamma * explicit.view_as(x) + x, rtol=1e-5, atol=1e-5)


def naive_conv_bn_relu(block, x):
    conv, bn = block[0], block[1]
    y = F.conv2d(x, conv.weight, padding=1)
    y = (y - bn.running_mean[None, :, None, None]) / torch.sqrt(
        bn.running_var[None, :, None, None] + bn.eps
    )
    return torch.relu(y * bn.weight[None, :, None, None] + bn.bias[None, :, None, None])


def classify(head, x):
    conv = head[1]
    return (
        torch.einsum("kc,bchw->bkhw", conv.weight[:, :, 0, 0], x) + conv.bias[None, :, None, None]
    )


@pytest.mark.parametrize("aux_outputs", [True, False])
def test_danet_head_is_the_sum_of_both_branches(aux_outputs):
    head = randomized("danet_head", 16, num_classes=3, aux_outputs=aux_outputs)
    x = torch.randn(2, 16, 4, 3, dtype=torch.float64)
    pam_features = naive_conv_bn_relu(
        head.pam_out, naive_pam(head.pam, naive_conv_bn_relu(head.pam_in, x))
    )
    cam_in = naive_conv_bn_relu(head.cam_in, x)
    cam_features = naive_conv_bn_relu(head.cam_out, naive_cam(head.cam, cam_in, True))
    fused = classify(head.classifier, pam_features + cam_features)
    out = head(x)
    assert head.pam.channels == 4  # C/4 inner channels
    if aux_outputs:
        assert isinstance(out, tuple) and len(out) == 3
        torch.testing.assert_close(out[0], fused)
        torch.testing.assert_close(out[1], classify(head.pam_classifier, pam_features))
        torch.testing.assert_close(out[2], classify(head.cam_classifier, cam_features))
    else:
        assert isinstance(out, torch.Tensor)
        torch.testing.assert_close(out, fused)
        assert not hasattr(head, "pam_classifier")


def test_danet_head_output_shape_and_dropout_in_training():
    head = attnzoo.create("danet_head", 32, num_classes=7).train()
    out = head(torch.randn(2, 32, 9, 5))
    assert [tuple(t.shape) for t in out] == [(2, 7, 9, 5)] * 3
    assert head.classifier[0].p == 0.1


def test_masks_and_softmax_are_safe_in_bf16_and_float64():
    for name in ("pam", "cam"):
        module = randomized(name, 16)
        with torch.no_grad():
            module.gamma.fill_(1.0)
        out = module(torch.randn(1, 16, 5, 5, dtype=torch.float64) * 100)
        assert out.dtype == torch.float64 and torch.isfinite(out).all()
        module = module.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(torch.randn(1, 16, 5, 5) * 100)
        assert torch.isfinite(out).all()
