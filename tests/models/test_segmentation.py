"""segnet_resnet: output stride 8, the head slot (fcn, head, fusion and gate modules)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attnzoo
from attnzoo import models

HEADS = ["fcn", *attnzoo.list_modules(kind="head"), *attnzoo.list_modules(kind="fusion")]


def test_backbone_has_output_stride_8():
    model = models.create("segnet_resnet", num_classes=3).eval()
    b = model.backbone
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        assert b.layer4(b.layer3(b.layer2(b.layer1(x)))).shape == (1, 512, 8, 6)
    assert b.layer4[0].conv1.dilation == (2, 2) and b.layer4[1].conv1.dilation == (4, 4)


@pytest.mark.parametrize("head", [*HEADS, "cca", "apnb"])
def test_heads_give_logits_at_input_resolution_and_train(head):
    torch.manual_seed(0)
    model = models.create("segnet_resnet", num_classes=4, head=head)
    x = torch.randn(2, 3, 40, 36)
    out = model(x)
    outputs = (out,) if isinstance(out, torch.Tensor) else out
    target = torch.randint(0, 4, (2, 40, 36))
    loss = sum(F.cross_entropy(o, target) for o in outputs)
    assert all(o.shape == (2, 4, 40, 36) for o in outputs)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None


def test_gate_heads_keep_their_identity_init():
    model = models.create("segnet_resnet", num_classes=4, head="cca").eval()
    assert attnzoo.module_info("cca").identity_at_init
    head = model.head
    x = torch.randn(1, 512, 6, 5)
    with torch.no_grad():
        reduced = head.relu(head.bn(head.conv(x)))
        torch.testing.assert_close(head.gate(reduced), reduced)


def test_unsuitable_heads_are_rejected():
    with pytest.raises(ValueError, match="head slot"):
        models.create("segnet_resnet", head="sk")
    with pytest.raises(ValueError, match="depth"):
        models.create("segnet_resnet", depth=101)
