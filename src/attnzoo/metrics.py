"""Evaluation metrics: top-k accuracy, segmentation mIoU, and the agreement of attention maps
with human importance maps (mean per-image Spearman ρ and its ceiling-normalised fraction).

Map alignment follows Linsley et al., "Learning what and where to attend" (ICLR 2019,
arXiv:1805.08819): the model's map is resized (bilinear) to the image size and rank-correlated
with the human map, image by image; the mean ρ is divided by the human inter-rater ceiling
(0.65753 on ClickMe, from the authors' later work) to give a fraction of the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CLICKME_CEILING",
    "MapAlignment",
    "accuracy",
    "average_ranks",
    "iou_per_class",
    "map_alignment",
    "mean_iou",
    "spearman",
]

CLICKME_CEILING = 0.65753


def accuracy(logits: torch.Tensor, labels: torch.Tensor, topk: int = 1) -> float:
    """Fraction of rows of (N, K) ``logits`` whose label (N,) is among the top-k scores."""
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"accuracy expects (N, K) logits and (N,) labels, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not 1 <= topk <= logits.shape[1]:
        raise ValueError(f"topk must be in [1, {logits.shape[1]}], got {topk}")
    if logits.shape[0] == 0:
        raise ValueError("accuracy of an empty batch is undefined")
    top = logits.topk(topk, dim=1).indices  # (N, k)
    hits = (top == labels.view(-1, 1)).any(dim=1)  # (N,)
    return hits.float().mean().item()


def iou_per_class(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """IoU of each class (K,) float64; NaN for classes absent from both pred and target.

    ``pred``: (N, H, W) class indices or (N, K, H, W) scores (argmax over K); ``target``:
    (N, H, W) class indices, pixels equal to ``ignore_index`` are left out.
    """
    if pred.dim() == target.dim() + 1:
        if pred.shape[1] != num_classes:
            raise ValueError(f"pred scores have {pred.shape[1]} classes, expected {num_classes}")
        pred = pred.argmax(dim=1)  # (N, H, W)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape"
        )
    valid = torch.ones_like(target, dtype=torch.bool)
    if ignore_index is not None:
        valid = target != ignore_index
    pred, target = pred[valid].long(), target[valid].long()  # (P,)
    for what, values in (("pred", pred), ("target", target)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{what} holds classes outside [0, {num_classes}) (min {values.min().item()}, "
                f"max {values.max().item()}); set ignore_index for void pixels"
            )
    confusion = torch.bincount(target * num_classes + pred, minlength=num_classes**2)
    confusion = confusion.view(num_classes, num_classes).double()  # (K target, K pred)
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.nan)


def mean_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> float:
    """Mean IoU over the classes present in pred or target (see :func:`iou_per_class`)."""
    ious = iou_per_class(pred, target, num_classes, ignore_index)
    present = ~torch.isnan(ious)
    if not present.any():
        raise ValueError("mean IoU is undefined: no valid pixel in pred or target")
    return ious[present].mean().item()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..P along the last dim of (N, P), ties sharing their average rank (float64)."""
    values = values.double().contiguous()
    ordered = values.sort(dim=-1).values  # (N, P)
    below = torch.searchsorted(ordered, values, right=False)  # count of smaller values
    below_or_equal = torch.searchsorted(ordered, values, right=True)
    return (below + below_or_equal + 1).double() / 2  # mean of the tied 1-based positions


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman ρ between the rows of (N, P) ``x`` and ``y`` (N,), NaN for constant rows."""
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"spearman expects two (N, P) tensors, got {x.shape} and {y.shape}")
    rx = average_ranks(x)
    ry = average_ranks(y)
    rx = rx - rx.mean(dim=-1, keepdim=True)
    ry = ry - ry.mean(dim=-1, keepdim=True)
    denominator = rx.norm(dim=-1) * ry.norm(dim=-1)
    rho = (rx * ry).sum(dim=-1) / denominator
    return torch.where(denominator > 0, rho, torch.nan)


@dataclass(frozen=True)
class MapAlignment:
    """Result of :func:`map_alignment`.

    ``rho``: mean per-image ρ over the ``count`` images that have a map and a defined ρ;
    ``fraction`` = rho / ceiling; ``per_image``: (N,) ρ (averaged over layers), NaN where the
    image has no map or ρ is undefined (a constant map); ``undefined``: how many images with a
    map had an undefined ρ; ``per_layer``: mean ρ of each layer. With ``count == 0``, ``rho``
    and ``fraction`` are NaN.
    """

    rho: float
    fraction: float
    ceiling: float
    count: int
    undefined: int
    per_image: torch.Tensor
    per_layer: dict[str, float]


def _as_layers(
    model_maps: nn.Module | Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | torch.Tensor,
) -> dict[str, torch.Tensor]:
    if isinstance(model_maps, nn.Module):
        from attnzoo.supervision import collect_spatial_maps

        return collect_spatial_maps(model_maps)
    if isinstance(model_maps, torch.Tensor):
        return {"map": model_maps}
    if isinstance(model_maps, Mapping):
        return dict(model_maps)
    return {str(i): m for i, m in enumerate(model_maps)}


def _single_channel(value: torch.Tensor, what: str) -> torch.Tensor:
    """(B, H, W) or (B, C, H, W) -> (B, 1, H, W); C > 1 collapses to mean_c(x²) as GALA."""
    if value.dim() == 3:
        return value.unsqueeze(1)  # (B, 1, H, W)
    if value.dim() != 4:
        raise ValueError(f"{what} must be (B, 1, H, W) or (B, H, W), got {tuple(value.shape)}")
    if value.shape[1] > 1:
        return value.double().square().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return value


def map_alignment(
    model_maps: nn.Module | Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | torch.Tensor,
    importance_maps: torch.Tensor,
    has_map: torch.Tensor | None = None,
    *,
    ceiling: float = CLICKME_CEILING,
    align_corners: bool = False,
) -> MapAlignment:
    """Mean per-image Spearman ρ between attention maps and importance maps, and ρ / ceiling.

    ``model_maps``: one (B, 1, h, w) map, a dict or list of them (one per layer: ρ is computed
    per layer and averaged over layers for each image), or a model whose spatial maps were
    recorded (see :mod:`attnzoo.supervision`). Each map is resized bilinearly to the size of
    ``importance_maps`` (B, 1, H, W) or (B, H, W). ``has_map`` (B,) bool leaves images without
    a human map out of the mean.
    """
    if not ceiling > 0:
        raise ValueError(f"ceiling must be > 0, got {ceiling}")
    human = _single_channel(importance_maps, "importance maps")
    if human.shape[1] != 1:
        raise ValueError(f"importance maps must have one channel, got {tuple(human.shape)}")
    batch, _, height, width = human.shape
    if has_map is None:
        has_map = torch.ones(batch, dtype=torch.bool)
    if has_map.shape != (batch,):
        raise ValueError(f"has_map must have shape ({batch},), got {tuple(has_map.shape)}")
    present = has_map.to(device=human.device, dtype=torch.bool)
    layers = _as_layers(model_maps)
    if not layers:
        raise ValueError("no attention maps given: the list or dict of maps is empty")

    human_flat = human.detach().double().reshape(batch, -1)  # (B, H*W)
    per_layer_rho = {}
    rows = []
    for name, value in layers.items():
        value = _single_channel(value.detach(), f"attention map {name!r}").double()
        if value.shape[0] != batch:
            raise ValueError(
                f"attention map {name!r} has batch size {value.shape[0]}, the importance maps "
                f"have {batch}"
            )
        if value.shape[-2:] != (height, width):
            value = F.interpolate(
                value, size=(height, width), mode="bilinear", align_corners=align_corners
            )
        rho = spearman(value.reshape(batch, -1), human_flat)  # (B,)
        rho = torch.where(present, rho, torch.nan)
        rows.append(rho)
        defined = rho[~torch.isnan(rho)]
        per_layer_rho[name] = defined.mean().item() if defined.numel() else math.nan
    per_image = torch.stack(rows).mean(dim=0)  # (B,) NaN if any layer is undefined
    defined = ~torch.isnan(per_image)
    count = int(defined.sum())
    undefined = int((present & ~defined).sum())
    mean_rho = per_image[defined].mean().item() if count else math.nan
    return MapAlignment(
        rho=mean_rho,
        fraction=mean_rho / ceiling,
        ceiling=ceiling,
        count=count,
        undefined=undefined,
        per_image=per_image.cpu(),
        per_layer=per_layer_rho,
    )
