"""GAttANet's noise-robustness claim, measured: the toy CNN with and without the global
attention system, trained with the same recipe and seeds, then evaluated under additive
Gaussian input noise (σ in [0, 1] pixel units, the same noise draws for both models).

    python benchmarks/gattanet_noise.py --data fashion-mnist --epochs 2 --limit-train 10000 \
        --seeds 0,1 --out benchmarks/results/gattanet_noise

The paper (VanRullen & Alamia 2021) reports this on CIFAR-10; CIFAR cannot be fetched on our
machines, so the committed run uses Fashion-MNIST (Debian's dataset-fashion-mnist files).
Completed runs under OUT/runs are reused, so an interrupted experiment resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from attnzoo.robustness import write_noise_report
from attnzoo.train import TrainConfig, evaluate_checkpoint, train

SIGMAS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3)


def run_one(args: argparse.Namespace, attention: str | None, seed: int) -> dict:
    name = attention or "baseline"
    run_dir = args.out / "runs" / f"{name}_seed{seed}"
    result_path = run_dir / "noise_eval.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    config = TrainConfig(
        model="gattanet_toy",
        attention=attention,
        data=args.data,
        data_root=args.data_root,
        epochs=args.epochs,
        batch_size=128,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=5e-4,
        schedule="cosine",
        augment=False,
        limit_train=args.limit_train,
        seed=seed,
        deterministic=True,
        progress="plain",
        log_every=20,
    )
    started = time.perf_counter()
    train(config, run_dir, resume=(run_dir / "latest.json").exists())
    result = evaluate_checkpoint(run_dir, noise_sigmas=list(args.sigmas), noise_seed=seed)
    result["train_seconds"] = time.perf_counter() - started
    result_path.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit-train", type=int, default=10000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--sigmas", type=lambda s: [float(v) for v in s.split(",")], default=SIGMAS)
    parser.add_argument("--out", type=Path, default=Path("runs/gattanet_noise"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    per_seed: dict[str, list[dict[float, float]]] = {}
    for attention in (None, "gattanet"):
        for seed in seeds:
            result = run_one(args, attention, seed)
            curve = {float(s): acc for s, acc in result["accuracy_under_noise"].items()}
            per_seed.setdefault(attention or "baseline", []).append(curve)
            print(f"{attention or 'baseline'} seed {seed}: {curve}", flush=True)

    means = {
        name: {sigma: statistics.fmean(c[sigma] for c in curves) for sigma in curves[0]}
        for name, curves in per_seed.items()
    }
    title = f"gattanet_toy on {args.data}: accuracy vs input noise (mean of seeds {args.seeds})"
    paths = write_noise_report(means, args.out, title=title)
    meta = {
        "command": "python benchmarks/gattanet_noise.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "sigmas"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "per_seed": {name: curves for name, curves in per_seed.items()},
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    print(json.dumps({k: str(v) for k, v in paths.items()}))


if __name__ == "__main__":
    main()
