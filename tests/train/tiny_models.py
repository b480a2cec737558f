"""Tiny models for engine tests (no BatchNorm, so one process and two DDP ranks agree).

Imported by name (``--model tiny_models:classifier``): tests put this folder on the path.
"""

from __future__ import annotations

import torch
from torch import nn

import attnzoo


class TinyClassifier(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        attention: str | None = None,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.attention = attnzoo.create(attention, 8) if attention else nn.Identity()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.dropout = nn.Dropout(dropout)  # exercises the RNG state of exact resume
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x)).mean(dim=(2, 3))  # (B, 16)
        return self.fc(self.dropout(x))


class TinySegmenter(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, K, H, W)


def classifier(num_classes: int, in_channels: int = 3) -> nn.Module:
    return TinyClassifier(num_classes, in_channels)


def classifier_no_dropout(num_classes: int, in_channels: int = 3) -> nn.Module:
    # Dropout draws differ between one process and two ranks; DDP equivalence needs none.
    return TinyClassifier(num_classes, in_channels, dropout=0.0)


def gala_classifier(num_classes: int, in_channels: int = 3) -> nn.Module:
    return TinyClassifier(num_classes, in_channels, attention="gala")


def segmenter(num_classes: int, in_channels: int = 3) -> nn.Module:
    return TinySegmenter(num_classes, in_channels)


def heavy_classifier(num_classes: int, in_channels: int = 3) -> nn.Module:
    """The tiny classifier carrying 64 MB of ballast, so that writing a checkpoint takes long
    enough for a test to kill the process in the middle of it."""
    model = TinyClassifier(num_classes, in_channels, dropout=0.0)
    model.register_buffer("ballast", torch.zeros(16 * 2**20))
    return model
