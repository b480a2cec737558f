"""Accuracy under additive Gaussian input noise (the GAttANet paper's robustness test).

``accuracy_under_noise`` evaluates a classifier on ``images + σ·ε``, ε ~ N(0, 1) i.i.d. per
pixel, for each σ. The noise is added to the model's input exactly as given: σ is in the units
of ``images``. The GAttANet paper's σ (0.01 ... 0.2) is on pixel intensities in [0, 1], so pass
[0, 1] images and keep the per-channel normalisation inside the model (or scale σ by hand).
No clipping unless ``clip=(low, high)`` is given.

Deterministic per seed and independent of ``batch_size`` and device: ε is drawn on the CPU,
image by image in dataset order, from one generator seeded with ``seed``, and the same ε is
used for every σ (common random numbers), so the curves of several models compare on identical
noise.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["DEFAULT_SIGMAS", "accuracy_under_noise", "write_noise_report"]

DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.2)


def _unit_noise(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """ε for a batch, drawn on the CPU one image at a time: the stream for image n is the same
    whatever the batch size."""
    noise = torch.empty(shape)
    for index in range(shape[0]):
        noise[index] = torch.randn(shape[1:], generator=generator)
    return noise


def accuracy_under_noise(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    batch_size: int = 256,
    seed: int = 0,
    clip: tuple[float, float] | None = None,
) -> dict[float, float]:
    """Top-1 accuracy of ``model`` on ``images + σ·N(0, 1)`` for each σ: {σ: accuracy}.

    ``images`` (N, ...) in the units the model takes (see the module docstring for the scale),
    ``labels`` (N,) class indices. The model runs in eval mode under ``torch.no_grad`` on the
    device of its parameters; its training flags are restored afterwards.
    """
    if images.dim() < 2:
        raise ValueError(f"images must be (N, ...) with N images, got shape {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels must be (N,) with N = {images.shape[0]} (the number of images), got shape "
            f"{tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("images is empty: nothing to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sigma_list = [float(s) for s in sigmas]
    bad = [s for s in sigma_list if not (s >= 0 and math.isfinite(s))]
    if not sigma_list or bad:
        raise ValueError(f"sigmas must be finite and >= 0 (at least one), got {list(sigmas)}")
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else images.device

    flags = {module: module.training for module in model.modules()}
    correct = dict.fromkeys(sigma_list, 0)
    generator = torch.Generator().manual_seed(seed)
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(device)
                target = labels[start : start + batch_size].to(device)
                noise = _unit_noise(batch.shape, generator).to(device, batch.dtype)
                for sigma in sigma_list:
                    noisy = batch + sigma * noise if sigma > 0 else batch
                    if clip is not None:
                        noisy = noisy.clamp(clip[0], clip[1])
                    logits = model(noisy)
                    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                        got = (
                            tuple(logits.shape)
                            if isinstance(logits, torch.Tensor)
                            else type(logits).__name__
                        )
                        raise ValueError(f"the model must return (B, classes) logits, got {got}")
                    correct[sigma] += int((logits.argmax(dim=1) == target).sum())
    finally:
        for module, flag in flags.items():
            module.training = flag
    return {sigma: correct[sigma] / images.shape[0] for sigma in sigma_list}


def write_noise_report(
    results_by_model: Mapping[str, Mapping[float, float]],
    out_dir: str | Path,
    title: str = "Accuracy under additive Gaussian input noise",
) -> dict[str, Path]:
    """Write ``noise_robustness.csv`` (long form), ``.md`` (one row per model) and ``.png``.

    ``results_by_model``: model name -> the dict returned by :func:`accuracy_under_noise`.
    Returns the paths by kind ("csv", "markdown", "plot"). The plot needs matplotlib
    (``pip install 'attnzoo[plots]'``); the tables are written before it is imported.
    """
    if not results_by_model:
        raise ValueError("results_by_model is empty: nothing to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sigmas = sorted({float(s) for results in results_by_model.values() for s in results})

    csv_path = out / "noise_robustness.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "sigma", "accuracy"])
        for name, results in results_by_model.items():
            for sigma, accuracy in sorted(results.items()):
                writer.writerow([name, f"{float(sigma):g}", f"{accuracy:.6f}"])

    md_path = out / "noise_robustness.md"
    lines = [
        f"# {title}",
        "",
        "| model | " + " | ".join(f"σ = {s:g}" for s in sigmas) + " |",
        "|---|" + "---:|" * len(sigmas),
    ]
    for name, results in results_by_model.items():
        by_sigma = {float(s): a for s, a in results.items()}
        cells = [f"{by_sigma[s]:.4f}" if s in by_sigma else "—" for s in sigmas]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n")

    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"the noise plot needs matplotlib (pip install 'attnzoo[plots]'); the tables were "
            f"written to {csv_path} and {md_path}"
        ) from error
    figure = Figure(figsize=(5, 3.5))
    axes = figure.add_subplot()
    for name, results in results_by_model.items():
        points = sorted((float(s), a) for s, a in results.items())
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    axes.set_xlabel("input noise σ")
    axes.set_ylabel("accuracy")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    png_path = out / "noise_robustness.png"
    figure.savefig(png_path, dpi=120)
    return {"csv": csv_path, "markdown": md_path, "plot": png_path}
