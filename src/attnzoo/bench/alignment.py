"""Where each entry looks: the final evaluation of a leaderboard run, with map alignment.

Every run is evaluated once more after training, on the whole test split (the per-epoch
validation inside training may use part of it): test accuracy and loss, and, where the data
has importance maps, the mean per-image Spearman ρ between the entry's map and them
(:func:`attnzoo.metrics.map_alignment`). Which map, said in the result's ``map_source``:

- ``attention``: the spatial maps its attention modules record (GALA, CBAM, ...), averaged
  over the modules;
- ``agreement``: GAttANet's key/global-query agreement maps of its spatial layers;
- ``gradcam:LAYER``: otherwise (the baseline, channel attention), Grad-CAM
  (Selvaraju et al., ICCV 2017) of the last stage for the predicted class, computed by the
  maintained ``pytorch-grad-cam`` library on the first :data:`GRADCAM_IMAGES` test images.

``pytorch-grad-cam`` is imported lazily, only here. If it cannot be imported (it imports
torchvision, which fails where the torchvision and torch builds differ) the result says so:
``map_source`` is ``n/a: pytorch-grad-cam unavailable (REASON)`` and a line is logged; no other
map is silently put in its place (the bench logs one line about it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["GRADCAM_IMAGES", "final_evaluation", "gradcam_maps", "last_stage"]

GRADCAM_IMAGES = 1000


def _import_gradcam() -> tuple[Any, str]:
    """(the GradCAM class, "") or (None, the reason it cannot be imported)."""
    try:
        from pytorch_grad_cam import GradCAM
    except Exception as error:  # ImportError, or torchvision's RuntimeError at import
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return None, f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    return GradCAM, ""


def last_stage(model: nn.Module, image_shape: tuple[int, ...]) -> tuple[str, nn.Module]:
    """(name, module) of the model's last top-level child, in execution order, whose output is
    a spatial feature map (4-D with more than one position): the last stage of a CNN."""
    order: list[tuple[str, torch.Tensor]] = []
    handles = [
        child.register_forward_hook(lambda _m, _i, out, name=name: order.append((name, out)))
        for name, child in model.named_children()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *image_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    spatial = [
        name
        for name, out in order
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1
    ]
    if not spatial:
        raise ValueError(f"{type(model).__name__} has no child with a spatial output for Grad-CAM")
    return spatial[-1], model.get_submodule(spatial[-1])


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(x)
        return output if isinstance(output, torch.Tensor) else output[0]


def gradcam_maps(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) Grad-CAM maps of ``layer`` for each image's predicted class (``images``
    normalised as the model expects). ValueError when pytorch-grad-cam cannot be imported."""
    gradcam, reason = _import_gradcam()
    if gradcam is None:
        raise ValueError(f"pytorch-grad-cam unavailable ({reason})")
    was_training = model.training
    model.eval()
    try:
        with gradcam(model=_Logits(model), target_layers=[layer]) as cam:
            maps = cam(input_tensor=images, targets=None)  # numpy (N, H, W)
    finally:
        model.train(was_training)
    return torch.from_numpy(maps).float()[:, None]


def _gattanet_maps_of(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """GAttANet's agreement maps of its spatial layers for ``images``."""
    with torch.no_grad():
        model(images)
    agreement = getattr(model, "agreement", {}) or {}
    return {k: v for k, v in agreement.items() if v.dim() == 4 and v.shape[-2:].numel() > 1}


def _load(run_dir: Path) -> tuple[nn.Module, Any, Any]:
    """(model in eval mode, the whole test split, the run's config) of a finished run. The
    bench wrote the folder itself with the model its user named: its code is trusted."""
    from attnzoo.train.engine import build_model, load_split, match_channels
    from attnzoo.train.runfolder import load_run, load_weights

    weights, meta, _, config = load_run(run_dir, trust_code=True)
    config.limit_val = None
    data = load_split(config, "test")
    model = build_model(config, data)
    load_weights(model, weights, run_dir)
    model.eval()
    data = match_channels(data, model, config)
    # Normalised with the training split's statistics, as during training.
    data.mean, data.std = tuple(meta["mean"]), tuple(meta["std"])
    return model, data, config


def final_evaluation(run_dir: Path) -> dict[str, Any]:
    """accuracy, loss, map_rho, map_fraction and map_source of the run's final checkpoint on
    its whole test split (map fields None where the data has no importance maps)."""
    from attnzoo import metrics
    from attnzoo.data import DeviceLoader
    from attnzoo.gattanet import GAttANet
    from attnzoo.train.engine import evaluate, has_spatial_maps

    model, data, config = _load(run_dir)
    spatial = data.maps is not None and has_spatial_maps(model)
    loader = DeviceLoader(data, config.eval_batch_size, torch.device("cpu"))
    result = evaluate(model, loader, config, with_maps=spatial)
    out: dict[str, Any] = {
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "map_rho": result.get("map_rho"),
        "map_fraction": result.get("map_fraction"),
        "map_source": "attention" if spatial else None,
    }
    if data.maps is None or spatial:
        return out
    # In batches of eval_batch_size (each image's map depends on that image only).
    batches = list(DeviceLoader(data.subset(GRADCAM_IMAGES), config.eval_batch_size, loader.device))
    human = torch.cat([batch["map"] for batch in batches])
    has_map = torch.cat([batch["has_map"] for batch in batches])
    if isinstance(model, GAttANet):
        maps = [_gattanet_maps_of(model, batch["image"]) for batch in batches]
        joined = {key: torch.cat([part[key] for part in maps]) for key in maps[0]}
        alignment = metrics.map_alignment(joined, human, has_map)
        out["map_source"] = "agreement"
    else:
        name, layer = last_stage(model, tuple(batches[0]["image"].shape[1:]))
        try:
            cams = torch.cat([gradcam_maps(model, layer, batch["image"]) for batch in batches])
        except ValueError as error:
            out["map_source"] = f"n/a: {error}"  # the bench logs it once
            return out
        alignment = metrics.map_alignment(cams, human, has_map)
        out["map_source"] = f"gradcam:{name}"
    out["map_rho"], out["map_fraction"] = alignment.rho, alignment.fraction
    return out
