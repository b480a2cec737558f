"""Does GAttANet's global query separate the classes? (the paper's PCA/UMAP figure)

Collects q_avg (B, d) of a trained GAttANet model over the test split and reports how well a
nearest-class-centroid rule recovers the label from q_avg alone (centroids from one half of the
test images, accuracy on the other half; chance = 1 / classes), and plots the test images'
q_avg projected on its first two principal components, coloured by class:

    python benchmarks/gattanet_query.py --checkpoint runs/gattanet_noise/runs/gattanet_seed0 \
        --out benchmarks/results/gattanet_noise
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from attnzoo.data import DeviceLoader
from attnzoo.train import TrainConfig, build_model, load_checkpoint
from attnzoo.train.engine import load_split, match_channels


@torch.no_grad()
def global_queries(checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    weights, meta, _ = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(meta["config"])
    data = load_split(config, "test")
    model = build_model(config, data)
    model.load_state_dict(weights)
    model.eval()
    if not hasattr(model, "global_query"):
        raise ValueError(f"{checkpoint} is not a GAttANet model (no global_query)")
    data = match_channels(data, model, config)
    data.mean, data.std = tuple(meta["mean"]), tuple(meta["std"])
    queries, labels = [], []
    for batch in DeviceLoader(data, 500, torch.device("cpu")):
        model(batch["image"])
        queries.append(model.global_query.clone())  # (B, d)
        labels.append(batch["label"])
    return torch.cat(queries), torch.cat(labels), list(getattr(data, "classes", []) or [])


def nearest_centroid_accuracy(queries: torch.Tensor, labels: torch.Tensor) -> float:
    """Centroids from the even-indexed images, accuracy on the odd-indexed ones."""
    fit, test = slice(0, None, 2), slice(1, None, 2)
    classes = labels.unique()
    centroids = torch.stack([queries[fit][labels[fit] == c].mean(0) for c in classes])  # (K, d)
    predicted = classes[torch.cdist(queries[test], centroids).argmin(1)]
    return float((predicted == labels[test]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    queries, labels, _ = global_queries(args.checkpoint)
    accuracy = nearest_centroid_accuracy(queries, labels)
    centred = queries - queries.mean(0)
    _, singular, basis = torch.linalg.svd(centred, full_matrices=False)
    projected = centred @ basis[:2].T  # (N, 2)
    explained = (singular[:2] ** 2 / (singular**2).sum()).tolist()
    classes = int(labels.max()) + 1
    result = {
        "checkpoint": str(args.checkpoint),
        "images": len(labels),
        "d": queries.shape[1],
        "nearest_centroid_accuracy": accuracy,
        "chance": 1 / classes,
        "pca_explained_variance": explained,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "global_query.json").write_text(json.dumps(result, indent=1))
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5))
    axes = figure.subplots()
    scatter = axes.scatter(*projected.T, c=labels, cmap="tab10", s=3, alpha=0.6)
    figure.colorbar(scatter, ax=axes, label="class")
    axes.set_title(f"q_avg, first two principal components ({explained[0] + explained[1]:.0%})")
    figure.savefig(args.out / "global_query_pca.png", dpi=100, bbox_inches="tight")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
