"""``--weights PATH`` for ``attnzoo eval``, ``viz`` and ``export``: a released checkpoint in
place of a run folder. The model is built from the file alone (its layout says which); images
are normalised with the file's statistics (ImageNet's for every supported release) and resized
to ``--image-size`` (224 by default, the releases' training size)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import nn

from attnzoo.data import TensorData
from attnzoo.weights.build import load_pretrained
from attnzoo.weights.layouts import Plan

__all__ = ["add_weights_options", "evaluate_pretrained", "pretrained_split", "source_of"]


def add_weights_options(parser: argparse.ArgumentParser, image_size: bool = True) -> None:
    parser.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="a released checkpoint (see docs/pretrained.md) instead of --checkpoint",
    )
    parser.add_argument(
        "--weights-format", default=None, help="force the file's layout (default: detect it)"
    )
    if image_size:
        parser.add_argument(
            "--image-size", type=int, default=224, help="with --weights: input size (default 224)"
        )


def source_of(args: argparse.Namespace) -> str:
    """Which of --checkpoint / --weights was given (exactly one must be)."""
    checkpoint, weights = getattr(args, "checkpoint", None), getattr(args, "weights", None)
    if (checkpoint is None) == (weights is None):
        raise ValueError("give exactly one of --checkpoint RUN_FOLDER and --weights FILE")
    return "weights" if weights is not None else "checkpoint"


def pretrained_split(
    weights: str | Path,
    weights_format: str | None,
    data: str | None,
    data_root: str | None,
    *,
    data_options: dict[str, Any] | None = None,
    image_size: int = 224,
    limit: int | None = None,
    split: str = "test",
) -> tuple[nn.Module, Plan, TensorData]:
    """(model in eval mode, its plan, the split resized to ``image_size``, normalised with the
    plan's statistics)."""
    from attnzoo.train.config import TrainConfig
    from attnzoo.train.engine import load_split, match_channels

    if data is None:
        raise ValueError("--weights needs --data (e.g. --data folder --data-root DIR)")
    if image_size < 8:
        raise ValueError(f"--image-size must be >= 8, got {image_size}")
    model, plan = load_pretrained(weights, weights_format)
    config = TrainConfig(
        data=data,
        data_root=data_root,
        data_options=dict(data_options or {}),
        image_size=image_size,
        limit_val=limit,
        limit_train=limit,
    )
    split_data = match_channels(load_split(config, split), model, config)
    split_data.mean, split_data.std = tuple(plan.mean), tuple(plan.std)
    return model, plan, split_data


def evaluate_pretrained(
    weights: str | Path,
    weights_format: str | None,
    data: str | None,
    data_root: str | None,
    *,
    data_options: dict[str, Any] | None = None,
    image_size: int = 224,
    split: str = "test",
    limit: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Top-1 accuracy and loss of a released checkpoint on a split whose class folders are in
    the file's class order (an ImageNet validation tree sorted by WordNet id is)."""
    from attnzoo.data import DeviceLoader
    from attnzoo.train.config import TrainConfig
    from attnzoo.train.engine import evaluate, pick_device

    model, plan, split_data = pretrained_split(
        weights,
        weights_format,
        data,
        data_root,
        data_options=data_options,
        image_size=image_size,
        limit=limit,
        split=split,
    )
    if split_data.num_classes is not None and split_data.num_classes > plan.num_classes:
        raise ValueError(
            f"{weights} classifies {plan.num_classes} classes; dataset {data!r} has "
            f"{split_data.num_classes}"
        )
    target = pick_device(device)
    model.to(target).eval()
    loader = DeviceLoader(split_data, batch_size or 64, target)
    metrics = evaluate(model, loader, TrainConfig(data=data or ""), with_maps=False)
    return {
        "weights": str(weights),
        "layout": plan.layout,
        "model": plan.arch + (f"+{plan.attention}" if plan.attention else ""),
        "data": data,
        "split": split,
        "images": len(split_data),
        **metrics,
    }
