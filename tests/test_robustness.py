"""Accuracy under additive Gaussian input noise, on tiny classifiers whose accuracy is known."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from attnzoo.robustness import accuracy_under_noise, write_noise_report


class SignClassifier(nn.Module):
    """Two classes on one-pixel images: class 1 when the pixel is positive (logits (-x, x))."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.scale * x.flatten(1).sum(1)  # (B,)
        return torch.stack([-v, v], dim=1)  # (B, 2)


class Recorder(nn.Module):
    """Keeps every input it sees; returns class-0 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0], 2) + torch.tensor([1.0, 0.0])


def margin_data(n: int = 4000, margin: float = 0.1):
    """Pixels at ±margin, labels = the sign; the first quarter deliberately mislabelled."""
    labels = torch.arange(n) % 2
    images = ((labels.float() * 2 - 1) * margin).reshape(n, 1, 1, 1)
    noisy_labels = labels.clone()
    noisy_labels[: n // 4] = 1 - noisy_labels[: n // 4]
    return images, labels, noisy_labels


def test_accuracy_at_zero_noise_is_exact_and_follows_the_gaussian_tail_under_noise():
    images, labels, wrong_quarter = margin_data()
    model = SignClassifier()
    results = accuracy_under_noise(model, images, labels, sigmas=(0, 0.05, 0.1, 0.2, 1.0))
    assert list(results) == [0.0, 0.05, 0.1, 0.2, 1.0]
    assert results[0.0] == 1.0
    assert accuracy_under_noise(model, images, wrong_quarter, sigmas=(0,))[0.0] == 0.75
    # a pixel at distance m from the boundary stays right with probability Φ(m / σ)
    for sigma in (0.05, 0.1, 0.2, 1.0):
        expected = 0.5 * (1 + math.erf(0.1 / sigma / math.sqrt(2)))
        assert abs(results[sigma] - expected) < 0.025, (sigma, results[sigma], expected)
    assert results[0.05] > results[0.1] > results[0.2] > results[1.0]


def test_deterministic_per_seed_independent_of_batch_size():
    images, labels, _ = margin_data(n=600)
    model = SignClassifier()
    a = accuracy_under_noise(model, images, labels, sigmas=(0.1, 0.2), batch_size=64, seed=3)
    b = accuracy_under_noise(model, images, labels, sigmas=(0.1, 0.2), batch_size=600, seed=3)
    c = accuracy_under_noise(model, images, labels, sigmas=(0.1, 0.2), batch_size=64, seed=4)
    assert a == b
    assert a != c


def test_noise_is_added_to_the_input_as_given_with_std_sigma_and_shared_across_sigmas():
    images = torch.full((50, 3, 4, 4), 0.5)
    labels = torch.zeros(50, dtype=torch.long)
    model = Recorder().train()
    results = accuracy_under_noise(model, images, labels, sigmas=(0, 0.1, 0.3), batch_size=50)
    assert results == {0.0: 1.0, 0.1: 1.0, 0.3: 1.0}
    assert model.training  # restored after the evaluation
    clean, small, large = model.seen
    assert torch.equal(clean, images)
    noise = (small - images) / 0.1
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05
    torch.testing.assert_close((large - images) / 0.3, noise, rtol=1e-5, atol=1e-5)
    model.seen.clear()
    accuracy_under_noise(model, images, labels, sigmas=(1.0,), clip=(0.0, 1.0))
    assert model.seen[0].min() >= 0 and model.seen[0].max() <= 1


def test_invalid_arguments():
    images, labels, _ = margin_data(n=8)
    model = SignClassifier()
    with pytest.raises(ValueError, match="labels must be"):
        accuracy_under_noise(model, images, labels[:5])
    with pytest.raises(ValueError, match="sigmas"):
        accuracy_under_noise(model, images, labels, sigmas=(-0.1,))
    with pytest.raises(ValueError, match="batch_size"):
        accuracy_under_noise(model, images, labels, batch_size=0)


def test_report_writes_csv_markdown_and_png(tmp_path):
    results = {
        "baseline": {0.0: 0.83, 0.01: 0.82, 0.1: 0.40},
        "gattanet": {0.0: 0.85, 0.01: 0.85, 0.05: 0.6, 0.1: 0.45},
    }
    paths = write_noise_report(results, tmp_path / "report")
    assert set(paths) == {"csv", "markdown", "plot"}
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7
    assert {"model": "gattanet", "sigma": "0.05", "accuracy": "0.600000"} in rows
    table = paths["markdown"].read_text()
    assert "| baseline | 0.8300 | 0.8200 | — | 0.4000 |" in table
    assert "σ = 0.05" in table
    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    with pytest.raises(ValueError, match="empty"):
        write_noise_report({}, tmp_path)
