"""Metrics against scipy (Spearman) and naive loops (accuracy, mIoU)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

import attnzoo
from attnzoo.metrics import (
    CLICKME_CEILING,
    accuracy,
    average_ranks,
    iou_per_class,
    map_alignment,
    mean_iou,
    spearman,
)


def test_average_ranks_and_spearman_match_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (6, 40), generator=g).double()  # many ties
    y = torch.randint(0, 7, (6, 40), generator=g).double() + 0.3 * x
    from scipy.stats import rankdata

    np.testing.assert_array_equal(average_ranks(x).numpy(), rankdata(x.numpy(), axis=1))
    rho = spearman(x, y)
    for n in range(6):
        expected = spearmanr(x[n].numpy(), y[n].numpy()).statistic
        assert rho[n].item() == pytest.approx(expected, abs=1e-12)
    assert math.isnan(spearman(torch.ones(1, 5), torch.arange(5.0).view(1, 5)).item())


def test_map_alignment_resizes_and_averages_like_scipy():
    g = torch.Generator().manual_seed(1)
    model_map = torch.rand(4, 1, 4, 5, generator=g)
    human = torch.rand(4, 1, 16, 20, generator=g)
    human[2] = torch.round(human[2] * 3)  # ties in one human map
    has_map = torch.tensor([True, True, False, True])
    result = map_alignment(model_map, human, has_map)
    resized = F.interpolate(model_map.double(), size=(16, 20), mode="bilinear", align_corners=False)
    expected = [
        spearmanr(resized[n].flatten().numpy(), human[n].double().flatten().numpy()).statistic
        for n in (0, 1, 3)
    ]
    assert result.count == 3 and result.undefined == 0
    assert result.rho == pytest.approx(float(np.mean(expected)), abs=1e-12)
    assert result.fraction == pytest.approx(result.rho / CLICKME_CEILING, abs=1e-12)
    assert math.isnan(result.per_image[2].item())
    assert result.per_image[[0, 1, 3]].tolist() == pytest.approx(expected, abs=1e-12)
    other = map_alignment(model_map, human, has_map, ceiling=0.5)
    assert other.fraction == pytest.approx(other.rho / 0.5)


def test_map_alignment_perfect_and_inverted_and_undefined():
    g = torch.Generator().manual_seed(2)
    human = torch.rand(3, 1, 8, 8, generator=g)
    assert map_alignment(human * 4 + 1, human).rho == pytest.approx(1.0)
    assert map_alignment(-human, human).rho == pytest.approx(-1.0)
    constant = human.clone()
    constant[1] = 0.5
    result = map_alignment(constant, human)
    assert result.count == 2 and result.undefined == 1
    assert map_alignment(human, human, torch.zeros(3, dtype=torch.bool)).count == 0


def test_map_alignment_of_a_recording_model_averages_its_layers():
    torch.manual_seed(0)
    model = nn.Sequential(
        attnzoo.create("gala", 8),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        attnzoo.create("gala", 8),
    )
    human = torch.rand(2, 1, 12, 12)
    with attnzoo.recording_maps(model):
        model(torch.randn(2, 8, 12, 12))
        result = map_alignment(model, human)
        maps = attnzoo.collect_maps(model)
    per_layer = [map_alignment(m, human).per_image for m in maps.values()]
    torch.testing.assert_close(result.per_image, (per_layer[0] + per_layer[1]) / 2)
    assert set(result.per_layer) == {"0", "2"}


def test_map_alignment_rejects_bad_inputs():
    with pytest.raises(ValueError, match="batch size 3"):
        map_alignment(torch.rand(3, 1, 4, 4), torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="ceiling"):
        map_alignment(torch.rand(2, 1, 4, 4), torch.rand(2, 8, 8), ceiling=0.0)
    with pytest.raises(ValueError, match="has_map"):
        map_alignment(torch.rand(2, 1, 4, 4), torch.rand(2, 8, 8), torch.ones(3, dtype=torch.bool))


def test_accuracy_against_a_loop():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 7, generator=g)
    labels = torch.randint(0, 7, (50,), generator=g)
    for k in (1, 3):
        hits = 0
        for n in range(50):
            order = sorted(range(7), key=lambda c, n=n: -logits[n, c].item())
            hits += int(labels[n].item() in order[:k])
        assert accuracy(logits, labels, topk=k) == pytest.approx(hits / 50)
    with pytest.raises(ValueError, match="labels"):
        accuracy(logits, labels[:10])


def naive_iou(pred, target, num_classes, ignore_index):
    ious = []
    for c in range(num_classes):
        inter = union = 0
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True):
            if t == ignore_index:
                continue
            inter += p == c and t == c
            union += p == c or t == c
        ious.append(inter / union if union else math.nan)
    return ious


def test_mean_iou_against_a_loop_with_ignored_and_absent_classes():
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 4, (2, 6, 7), generator=g)  # class 4 never appears
    target[0, 0, :] = 255
    scores = torch.randn(2, 5, 6, 7, generator=g)
    pred = scores.argmax(1)
    pred[pred == 4] = 0
    scores[:, 4] = -100  # argmax never picks class 4 either
    expected = naive_iou(pred, target, 5, 255)
    got = iou_per_class(pred, target, 5, ignore_index=255)
    np.testing.assert_allclose(got.numpy(), np.array(expected), rtol=1e-12)
    assert math.isnan(got[4].item())
    assert mean_iou(pred, target, 5) == pytest.approx(float(np.nanmean(expected)))
    scores_iou = mean_iou(scores, target, 5)
    expected_scores = naive_iou(scores.argmax(1), target, 5, 255)
    assert scores_iou == pytest.approx(float(np.nanmean(expected_scores)))
    with pytest.raises(ValueError, match="outside"):
        mean_iou(pred, target, 5, ignore_index=None)
