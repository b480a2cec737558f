"""``attnzoo viz``: attention maps over images, as PNG grids.

``capture_attention(model, images)`` runs one forward pass with map recording on and returns
the spatial map of every attention module that records one (``collect_maps(model,
"spatial")``, (B, 1, h, w) each) and, for a GAttANet-wrapped model, the agreement map of each
participating layer (``model.agreement``: (B, 1, h, w) for conv layers, (B, C) for dense
layers). ``attention_grid`` draws them: one row per image, columns

    image | ground-truth importance map (when given) | one per module map | one per GAttANet layer

(module columns are titled ``qualified.name (registry name)``, e.g. ``layer1.0.bn2.1 (cbam)``).

A map panel is the image with the map upsampled bilinearly to the image size, rescaled to
[0, 1] per panel (min–max), drawn with a colour map at ``alpha``. A dense GAttANet layer has
no positions: its panel is a bar plot of the agreement of each unit. matplotlib is imported
only when drawing (``pip install 'attnzoo[plots]'``); figures are made without pyplot, so no
window or global state is involved.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.layers import collect_maps, recording_maps

__all__ = ["AttentionCapture", "AttentionGrid", "attention_grid", "capture_attention"]


@dataclass
class AttentionCapture:
    """Maps of one forward pass, detached, on the CPU, in float32."""

    spatial: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, 1, h, w)
    agreement: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, 1, h, w) or (B, C)

    @property
    def empty(self) -> bool:
        return not self.spatial and not self.agreement


@dataclass
class AttentionGrid:
    """A drawn grid: the matplotlib figure and what each column shows."""

    figure: Any
    columns: list[str]
    column_kinds: list[str]  # image, ground_truth, spatial, agreement, agreement_dense
    rows: int

    @property
    def panels(self) -> int:
        return self.rows * len(self.columns)

    def save(self, path: str | Path, dpi: int = 100) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure.savefig(path, dpi=dpi)
        return path


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ModuleNotFoundError(
            "drawing attention maps needs matplotlib: pip install 'attnzoo[plots]'"
        ) from None
    return matplotlib, Figure


def capture_attention(model: nn.Module, images: torch.Tensor) -> AttentionCapture:
    """The attention maps of ``model`` on ``images`` (what the model takes, (B, C, H, W)).

    Runs one forward pass in eval mode without gradients (training flag restored). Raises
    ValueError when the model has nothing to show: no module recorded a spatial map and the
    model is not GAttANet-wrapped.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = (
            f"shape {tuple(images.shape)}"
            if isinstance(images, torch.Tensor)
            else type(images).__name__
        )
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {got}")
    from attnzoo.gattanet import GAttANet

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recording_maps(model):
            model(images)
            spatial = {
                name: value.detach().float().cpu()
                for name, value in collect_maps(model, "spatial").items()
            }
        agreement: dict[str, torch.Tensor] = {}
        for name, module in model.named_modules():
            if isinstance(module, GAttANet):
                prefix = f"{name}." if name else ""
                for layer, value in module.agreement.items():
                    agreement[f"{prefix}{layer}"] = value.detach().float().cpu()
    finally:
        model.train(was_training)
    capture = AttentionCapture(spatial=spatial, agreement=agreement)
    if capture.empty:
        raise ValueError(
            f"{type(model).__name__} recorded no spatial attention map: it has no attention "
            "module that exposes one (e.g. cbam, gala, scse, bam, gc, a2, ran, siau, rga_s) "
            "and is not wrapped with GAttANet"
        )
    return capture


def _display_images(images: torch.Tensor, mean: Any | None, std: Any | None) -> torch.Tensor:
    """(B, C, H, W) model inputs -> (B, H, W, 3) or (B, H, W) in [0, 1] for imshow."""
    x = images.detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x * s + m).clamp(0, 1)
    else:
        low = x.amin(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - low) / (high - low).clamp_min(1e-12)
    if x.shape[1] == 1:
        return x[:, 0]  # (B, H, W)
    return x[:, :3].permute(0, 2, 3, 1)  # (B, H, W, 3)


def _upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) -> (B, H, W), bilinear, each map rescaled to [0, 1]."""
    up = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    high = up.amax(dim=(1, 2), keepdim=True)
    return (up - low) / (high - low).clamp_min(1e-12)


def attention_grid(
    model: nn.Module,
    images: torch.Tensor,
    importance_maps: torch.Tensor | None = None,
    mean: Any | None = None,
    std: Any | None = None,
    row_titles: list[str] | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    panel_size: float = 1.6,
) -> AttentionGrid:
    """Draw the attention maps of ``model`` over ``images`` (see the module docstring).

    ``images``: what the model takes (B, C, H, W); ``mean``/``std`` undo its normalisation for
    display (otherwise each image is min–max scaled). ``importance_maps``: optional (B, 1, H, W)
    ground truth, shown as its own column (a map of all zeros, i.e. none, is left blank).
    """
    matplotlib, Figure = _matplotlib()
    capture = capture_attention(model, images)
    if importance_maps is not None and (
        importance_maps.dim() != 4 or importance_maps.shape[0] != images.shape[0]
    ):
        raise ValueError(
            f"importance_maps must be (B, 1, H, W) with B = {images.shape[0]}, got "
            f"{tuple(importance_maps.shape)}"
        )
    if row_titles is not None and len(row_titles) != images.shape[0]:
        raise ValueError(f"expected {images.shape[0]} row titles, got {len(row_titles)}")
    shown = _display_images(images, mean, std)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    columns: list[tuple[str, str, torch.Tensor | None]] = [("image", "image", None)]
    if importance_maps is not None:
        columns.append(("ground truth", "ground_truth", importance_maps.detach().float().cpu()))
    from attnzoo.supervision import spatial_map_modules

    registry_names = spatial_map_modules(model)  # qualified name -> registry name
    columns += [
        (f"{name} ({registry_names[name]})" if name in registry_names else name, "spatial", value)
        for name, value in capture.spatial.items()
    ]
    for name, layer_map in capture.agreement.items():
        kind = "agreement" if layer_map.dim() == 4 else "agreement_dense"
        columns.append((f"GAttANet {name}", kind, layer_map))

    rows = int(images.shape[0])
    figure = Figure(figsize=(panel_size * len(columns), panel_size * rows), layout="constrained")
    axes = figure.subplots(rows, len(columns), squeeze=False)
    colour_map = matplotlib.colormaps[cmap]
    image_cmap = "gray" if shown.dim() == 3 else None
    for col, (title, kind, value) in enumerate(columns):
        overlay = _upsampled(value, size) if value is not None and value.dim() == 4 else None
        # Ground truth of all zeros = no map for that image: left blank, not min-max scaled.
        present = (
            value.flatten(1).amax(dim=1) > 0
            if kind == "ground_truth" and value is not None
            else torch.ones(rows, dtype=torch.bool)
        )  # (B,)
        for row in range(rows):
            ax = axes[row][col]
            if kind == "agreement_dense" and value is not None:
                ax.bar(range(value.shape[1]), value[row].numpy(), width=1.0)
                ax.tick_params(labelsize=5)
            else:
                ax.imshow(shown[row].numpy(), cmap=image_cmap)
                if overlay is not None and bool(present[row]):
                    ax.imshow(overlay[row].numpy(), cmap=colour_map, alpha=alpha, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=6)
            if col == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[row], fontsize=6)
    return AttentionGrid(
        figure=figure,
        columns=[title for title, _, _ in columns],
        column_kinds=[kind for _, kind, _ in columns],
        rows=rows,
    )


# ----------------------------------------------------------------------------- command line


def add_viz_arguments(parser: argparse.ArgumentParser) -> None:
    from attnzoo.weights.commands import add_weights_options

    parser.add_argument("--checkpoint", help="run folder or checkpoint folder")
    add_weights_options(parser)
    parser.add_argument(
        "--data", help="dataset to draw images from (default: the checkpoint's test split)"
    )
    parser.add_argument("--data-root", help="folder of the dataset's files")
    parser.add_argument("--num-images", type=int, default=8, help="images (rows), default 8")
    parser.add_argument(
        "--rows-per-grid", type=int, default=8, help="rows per PNG file (default 8)"
    )
    parser.add_argument("--out", default="viz", help="output folder (default ./viz)")
    parser.add_argument("--cmap", default="jet", help="matplotlib colour map (default jet)")
    parser.add_argument("--alpha", type=float, default=0.5, help="map opacity (default 0.5)")
    from attnzoo.train.cli import add_trust_argument

    add_trust_argument(parser)


def run_viz(args: argparse.Namespace) -> int:
    from attnzoo.train.checkpoint import find_checkpoint
    from attnzoo.train.runfolder import load_run, load_weights
    from attnzoo.train.setup import build_model, load_split, match_channels
    from attnzoo.weights.commands import pretrained_split, source_of

    for name, value in (("--num-images", args.num_images), ("--rows-per-grid", args.rows_per_grid)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    try:
        _matplotlib()
    except ImportError as error:
        raise ValueError(str(error)) from None
    if source_of(args) == "weights":
        model, plan, data = pretrained_split(
            args.weights,
            args.weights_format,
            args.data,
            args.data_root,
            image_size=args.image_size,
            limit=args.num_images,
        )
        stats = (list(plan.mean), list(plan.std))
        return _write_grids(model, data, stats, args, ("weights", args.weights, args.data))
    weights, meta, _, config = load_run(args.checkpoint, trust_code=args.trust_run_folder)
    if args.data is not None and args.data != config.data:
        config.data, config.data_options, config.data_root = args.data, {}, None
    if args.data_root is not None:
        config.data_root = args.data_root
    config.limit_val = args.num_images
    data = load_split(config, "test")
    model = build_model(config, data)
    load_weights(model, weights, find_checkpoint(args.checkpoint))
    model.eval()
    data = match_channels(data, model, config)
    stats = (meta["mean"], meta["std"])
    return _write_grids(model, data, stats, args, ("checkpoint", args.checkpoint, config.data))


def _write_grids(
    model: nn.Module,
    data: Any,
    stats: tuple[list[float], list[float]],
    args: argparse.Namespace,
    source: tuple[str, str, str],
) -> int:
    """The PNG grids and ``viz.json`` of ``model`` over ``data`` (a TensorData split), with
    inputs normalised by ``stats`` (mean, std); ``source``: (kind, path, dataset name)."""
    mean_values, std_values = stats
    kind, path, data_name = source
    mean = torch.tensor(mean_values).view(1, -1, 1, 1)
    std = torch.tensor(std_values).view(1, -1, 1, 1)
    out = Path(args.out)
    files, summary = [], None
    for start in range(0, len(data), args.rows_per_grid):
        stop = min(start + args.rows_per_grid, len(data))
        images = data.images[start:stop].float().div(255)  # (n, C, H, W) in [0, 1]
        maps = None
        if data.maps is not None:
            maps = data.maps[start:stop].float()  # (n, 1, H, W)
            if data.has_map is not None:
                maps = maps * data.has_map[start:stop].view(-1, 1, 1, 1)  # blank where none
        titles = [f"#{i} {data.classes[int(data.labels[i])]}" for i in range(start, stop)]
        grid = attention_grid(
            model,
            (images - mean) / std,
            importance_maps=maps,
            mean=mean_values,
            std=std_values,
            row_titles=titles,
            cmap=args.cmap,
            alpha=args.alpha,
        )
        files.append(str(grid.save(out / f"attention_{start // args.rows_per_grid:03d}.png")))
        summary = {"columns": grid.columns, "column_kinds": grid.column_kinds}
    notes = []
    if data.maps is None:
        notes.append(f"dataset {data_name!r} has no importance maps: no ground-truth column")
    record = {
        kind: str(path),
        "images": len(data),
        "files": files,
        **(summary or {}),
        "notes": notes,
    }
    (out / "viz.json").write_text(json.dumps(record, indent=2) + "\n")
    for file in files:
        print(f"wrote {file}")
    if summary:
        print(f"columns: {', '.join(summary['columns'])}")
    for note in notes:
        print(f"note: {note}")
    return 0
