"""OCR head against the paper's equations, recomputed pixel by pixel in float64."""

import math

import pytest
import torch
import torch.nn.functional as F
from _random_weights import randomize

import attnzoo
from attnzoo.modules.ocr import OCRHead


def cbr(block, v):
    """ConvNormAct (1x1) on one feature vector."""
    conv, norm = block[0], block[1]
    y = conv.weight[:, :, 0, 0] @ v
    return torch.relu(
        (y - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias
    )


def stack(blocks, v):
    for block in blocks:
        v = cbr(block, v)
    return v


def naive_gather(feats, region_logits):
    b, c, h, w = feats.shape
    k = region_logits.shape[1]
    out = torch.zeros(b, c, k, 1, dtype=feats.dtype)
    for n in range(b):
        for cls in range(k):
            logits = [region_logits[n, cls, i, j] for i in range(h) for j in range(w)]
            top = max(logits)
            total = sum(math.exp(v - top) for v in logits)
            for i in range(h):
                for j in range(w):
                    m = math.exp(region_logits[n, cls, i, j] - top) / total
                    out[n, :, cls, 0] += m * feats[n, :, i, j]
    return out


@torch.no_grad()
def naive_ocr(module, x, scale):
    b, _, h, w = x.shape
    aux_logits = module.aux_head(x)  # checked separately below
    feats = module.pixel_reduce(x)  # a plain 3x3 conv-BN-ReLU
    objects = naive_gather(feats, aux_logits)
    k = objects.shape[2]
    logits = torch.empty(b, module.num_classes, h, w, dtype=x.dtype)
    for n in range(b):
        keys = [stack(module.key, objects[n, :, c, 0]) for c in range(k)]
        values = [cbr(module.value, objects[n, :, c, 0]) for c in range(k)]
        for i in range(h):
            for j in range(w):
                x_i = feats[n, :, i, j]
                q = stack(module.query, x_i)
                relation = torch.stack([scale * (q * key).sum() for key in keys])
                weights = torch.softmax(relation, dim=0)  # over the K objects
                y = cbr(module.up, sum(wt * v for wt, v in zip(weights, values, strict=True)))
                z = cbr(module.fuse[0], torch.cat([y, x_i]))
                logits[n, :, i, j] = (
                    module.classifier.weight[:, :, 0, 0] @ z + module.classifier.bias
                )
    return logits, aux_logits


def test_gather_matches_loops():
    torch.manual_seed(0)
    feats = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    region_logits = torch.randn(2, 3, 4, 5, dtype=torch.float64) * 3
    got = OCRHead.gather(feats, region_logits)
    torch.testing.assert_close(got, naive_gather(feats, region_logits))


@pytest.mark.parametrize("scaled,proj_layers", [(True, 1), (False, 1), (True, 2)])
def test_ocr_matches_equation(scaled, proj_layers):
    torch.manual_seed(0)
    module = attnzoo.create(
        "ocr_head",
        8,
        num_classes=3,
        mid_channels=6,
        key_channels=4,
        scaled=scaled,
        proj_layers=proj_layers,
    )
    module = module.double().eval()
    randomize(module)
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    logits, aux = module(x)
    expected, expected_aux = naive_ocr(module, x, 4**-0.5 if scaled else 1.0)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(aux, expected_aux)
    assert len(module.query) == proj_layers and len(module.key) == proj_layers


def test_aux_head_is_conv_bn_relu_then_classifier():
    module = attnzoo.create("ocr_head", 8, num_classes=3, mid_channels=6, key_channels=4)
    module = module.double().eval()
    randomize(module)
    x = torch.randn(1, 8, 3, 2, dtype=torch.float64)
    _, aux = module(x)
    final = module.aux_head[1]
    for i in range(3):
        for j in range(2):
            hidden = cbr(module.aux_head[0], x[0, :, i, j])
            expected = final.weight[:, :, 0, 0] @ hidden + final.bias
            torch.testing.assert_close(aux[0, :, i, j], expected)


def test_loss_weights_the_auxiliary_term_by_0_4():
    torch.manual_seed(0)
    module = attnzoo.create("ocr_head", 8, num_classes=3, mid_channels=6, key_channels=4).eval()
    assert module.aux_loss_weight == 0.4
    x = torch.randn(2, 8, 4, 4)
    outputs = module(x)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0, 0] = 255
    logits, aux = (F.interpolate(t, size=(8, 8), mode="bilinear") for t in outputs)
    main = F.cross_entropy(logits, target, ignore_index=255)
    aux_term = F.cross_entropy(aux, target, ignore_index=255)
    got = module.loss(outputs, target, ignore_index=255)
    torch.testing.assert_close(got, main + 0.4 * aux_term)
    assert not torch.allclose(main + aux_term, got)  # the weight is not 1
    with pytest.raises(ValueError, match="target"):
        module.loss(outputs, target[:, None])


def test_outputs_are_a_pair_in_train_and_eval():
    module = attnzoo.create("ocr_head", 8, num_classes=3, mid_channels=6, key_channels=4)
    x = torch.randn(2, 8, 5, 3)
    for train in (True, False):
        logits, aux = module.train(train)(x)
        assert logits.shape == aux.shape == (2, 3, 5, 3)
