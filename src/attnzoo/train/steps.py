"""One optimisation step, the learning-rate schedule, and evaluation over a split."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from attnzoo.data import IGNORE_INDEX, DeviceLoader
from attnzoo.errors import DataError
from attnzoo.train.config import TrainConfig
from attnzoo.train.setup import Dist

# ----------------------------------------------------------------------------- optimisation


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW in their fused form (one kernel for all parameters) where PyTorch has it
    (floating-point parameters on CPU or CUDA), else their multi-tensor (``foreach``) form.

    On one CPU core an AdamW step of ResNet-8 runs about 3.5x faster fused than foreach
    (0.3-0.5 ms against 1.1-1.7, of a 30 ms training step; benchmarks/small_kernels.py). The
    fused step computes the same update in another order of floating-point operations: after
    a dozen steps it differs from the per-tensor one by float rounding (3e-7 for AdamW, 2e-5
    for SGD at lr 0.1), not to the bit (tests/train/test_optimizer.py)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            foreach=not fused,
            fused=fused,
        )
    return torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, foreach=not fused, fused=fused
    )


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate of global step ``step`` (0-based): linear warm-up then the schedule."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        span = max(1, total_steps - warmup)
        return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
    milestones = config.milestones or [int(config.epochs * 0.5), int(config.epochs * 0.75)]
    epoch = step // steps_per_epoch
    return config.lr * config.gamma ** sum(epoch >= m for m in milestones)


def _logits(output: Any) -> torch.Tensor:
    """Models may return logits, or a tuple/dict whose first/"logits"/"out" entry is them."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        for key in ("logits", "out"):
            if key in output:
                return output[key]
    if isinstance(output, (tuple, list)) and output:
        return _logits(output[0])
    raise ValueError(f"cannot find logits in the model's output of type {type(output).__name__}")


def task_loss(
    config: TrainConfig, logits: torch.Tensor, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mean loss, number correct, number counted) for the batch."""
    logits = logits.float()
    if config.task == "segment":
        mask = batch["mask"]
        if logits.shape[-2:] != mask.shape[-2:]:
            logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear")
        loss = F.cross_entropy(
            logits, mask, ignore_index=IGNORE_INDEX, label_smoothing=config.label_smoothing
        )
        valid = mask != IGNORE_INDEX
        correct = ((logits.argmax(1) == mask) & valid).sum()
        return loss, correct, int(valid.sum())
    if logits.dim() != 2:
        raise ValueError(
            f"a classifier must return (B, classes) logits, got {tuple(logits.shape)}; "
            "use --task segment for dense outputs"
        )
    labels = batch["label"]
    loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
    return loss, (logits.argmax(1) == labels).sum(), labels.shape[0]


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _all_reduce(values: list[float], world: Dist, device: torch.device) -> list[float]:
    if not world.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    config: TrainConfig,
    world: Dist | None = None,
    with_maps: bool = False,
) -> dict[str, float]:
    """Loss and accuracy over the split (all ranks' shares), mIoU when segmenting, and map
    alignment (mean per-image Spearman ρ) when ``with_maps`` and the data has maps."""
    from attnzoo import metrics
    from attnzoo.layers import record_maps

    world = world or Dist()
    device = loader.device
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "correct": 0.0, "count": 0.0, "rho": 0.0, "rho_count": 0.0}
    num_classes = loader.data.num_mask_classes or 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    if with_maps:
        record_maps(model, True)
    try:
        with torch.no_grad():
            for batch in loader:
                with _autocast(config, device):
                    logits = _logits(model(batch["image"]))
                loss, correct, count = task_loss(config, logits, batch)
                sums["loss"] += float(loss) * count
                sums["correct"] += float(correct)
                sums["count"] += count
                if config.task == "segment":
                    confusion += _confusion(logits, batch["mask"], num_classes)
                if with_maps and "map" in batch:
                    alignment = metrics.map_alignment(model, batch["map"], batch["has_map"])
                    if alignment.count:
                        sums["rho"] += alignment.rho * alignment.count
                        sums["rho_count"] += alignment.count
    finally:
        if with_maps:
            record_maps(model, False)
        model.train(was_training)
    keys = list(sums)
    totals = dict(zip(keys, _all_reduce([sums[k] for k in keys], world, device), strict=True))
    if world.enabled and config.task == "segment":
        dist.all_reduce(confusion)
    if totals["count"] == 0:
        raise DataError(
            f"evaluation saw 0 {'pixels' if config.task == 'segment' else 'images'} of dataset "
            f"{config.data!r}: an accuracy over nothing is undefined; give the split some data"
        )
    result = {
        "loss": totals["loss"] / totals["count"],
        "accuracy": totals["correct"] / totals["count"],
    }
    if config.task == "segment":
        result["miou"] = _miou(confusion)
    if with_maps and totals["rho_count"]:
        result["map_rho"] = totals["rho"] / totals["rho_count"]
        result["map_fraction"] = result["map_rho"] / metrics.CLICKME_CEILING
    return result


def _confusion(logits: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts of (true class, predicted class) over the valid pixels of a batch."""
    pred = F.interpolate(logits.float(), size=mask.shape[-2:]).argmax(1)  # (B, H, W)
    valid = mask != IGNORE_INDEX
    index = mask[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def _miou(confusion: torch.Tensor) -> float:
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean())


def has_spatial_maps(model: nn.Module) -> bool:
    from attnzoo.supervision import spatial_map_modules

    return bool(spatial_map_modules(model))


def train_step(
    config: TrainConfig,
    module: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    supervise: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    from attnzoo.layers import record_maps

    if supervise:
        record_maps(model, True)
    try:
        with _autocast(config, device):
            logits = _logits(module(batch["image"]))
        loss, correct, count = task_loss(config, logits, batch)
        total = loss
        if supervise:
            from attnzoo.supervision import importance_map_loss

            total = loss + importance_map_loss(
                model,
                batch["map"],
                batch["has_map"],
                weight=config.map_weight,
                **config.map_options,
            )
    finally:
        if supervise:
            record_maps(model, False)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    if config.clip_grad is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), correct, count
