"""Evaluate a saved model: accuracy, mIoU, map alignment, accuracy under input noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnzoo.data import DeviceLoader
from attnzoo.errors import DataError, UsageError
from attnzoo.train.checkpoint import find_checkpoint
from attnzoo.train.runfolder import load_run, load_weights
from attnzoo.train.setup import build_model, load_split, match_channels, pick_device
from attnzoo.train.steps import evaluate, has_spatial_maps


class _Normalised(nn.Module):
    """Takes [0, 1] pixels, normalises as in training: noise σ is then in pixel units."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return self.model((x - mean) / std)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | None = None,
    data_root: str | None = None,
    data_options: dict[str, Any] | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int | None = None,
    noise_sigmas: list[float] | None = None,
    noise_seed: int = 0,
    device: str = "auto",
    trust_code: bool = False,
) -> dict[str, Any]:
    """Metrics of the checkpoint's model on a split (by default the test split it was
    validated on). Normalisation statistics are the training run's. A checkpoint whose config
    names a model builder to import (``package.module:function``) needs ``trust_code=True``."""
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    target = pick_device(device)
    weights, meta, _, config = load_run(checkpoint, trust_code=trust_code)
    if data is not None and data != config.data:
        config.data, config.data_options, config.data_root = data, {}, None
    if data_root is not None:
        config.data_root = data_root
    if data_options:
        config.data_options = {**config.data_options, **data_options}
    config.limit_train = config.limit_val = limit
    split_data = load_split(config, split)
    expected = meta["num_mask_classes"] if config.task == "segment" else meta["num_classes"]
    got = split_data.num_mask_classes if config.task == "segment" else split_data.num_classes
    if got != expected:
        raise DataError(
            f"the model was trained for {expected} classes, dataset {config.data!r} has {got}"
        )
    model = build_model(config, split_data)
    load_weights(model, weights, find_checkpoint(checkpoint))
    model.to(target).eval()
    split_data = match_channels(split_data, model, config)
    split_data.mean, split_data.std = tuple(meta["mean"]), tuple(meta["std"])
    loader = DeviceLoader(split_data, batch_size or config.eval_batch_size, target)
    with_maps = split_data.maps is not None and has_spatial_maps(model)
    result: dict[str, Any] = {
        "checkpoint": str(find_checkpoint(checkpoint)),
        "data": config.data,
        "split": split,
        "images": len(split_data),
        **evaluate(model, loader, config, with_maps=with_maps),
    }
    if noise_sigmas:
        if config.task != "classify":
            raise ValueError("--noise-sigmas evaluates classifiers (accuracy), not segmentation")
        from attnzoo.robustness import accuracy_under_noise

        images = split_data.images.float().div(255)  # (N, C, H, W) pixels in [0, 1]
        wrapped = _Normalised(model, meta["mean"], meta["std"]).to(target)
        curve = accuracy_under_noise(
            wrapped,
            images,
            split_data.labels,
            sigmas=noise_sigmas,
            batch_size=loader.batch_size,
            seed=noise_seed,
        )
        result["accuracy_under_noise"] = {f"{sigma:g}": acc for sigma, acc in curve.items()}
    return result
