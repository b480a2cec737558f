"""One leaderboard run: its folder, reuse and resume, and its result.

Every (entry, seed) run has its own folder ``OUT/runs/ENTRY/seedS``. A run with a
``result.json`` is reused; one with a checkpoint but no result continues with
``train(..., resume=True)``; a folder made with other settings is an error, never overwritten.
The result holds the final model's test accuracy and loss on the whole test split, its
training accuracy (last epoch), map alignment (mean per-image Spearman ρ with the importance
maps and the fraction of the ClickMe ceiling, with the map it used: :mod:`.alignment`),
parameters, MACs of one forward pass of one image
(``torch.utils.flop_counter``, counted as multiply-accumulates like
:mod:`attnzoo.bench.profile`) and training images per second.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from attnzoo.bench.alignment import final_evaluation
from attnzoo.train.checkpoint import write_json_atomic
from attnzoo.train.config import TrainConfig

__all__ = ["check_run_folder", "run_one"]

# Settings that do not change a run's result (its weights and its final evaluation on the whole
# test split): a run folder may differ in these. Runs made before val_every existed validated
# on 250 test images per epoch in batches of 500; their results are the same.
_IGNORED_KEYS = (
    "progress", "log_every", "save_every", "val_every", "limit_val", "eval_batch_size",
)  # fmt: skip


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    clean = json.loads(json.dumps(config))
    return {k: v for k, v in clean.items() if k not in _IGNORED_KEYS}


def _check_same_settings(run_dir: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    now, before = _comparable(config.to_dict()), _comparable(saved)
    differing = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    if differing:
        details = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differing)
        raise ValueError(
            f"{run_dir} holds a run made with other settings ({details}); choose another --out "
            "or delete that folder to retrain it"
        )


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run wrote no metrics (was it interrupted?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


_COSTS: dict[str, tuple[int, int]] = {}


def _model_cost(config: TrainConfig) -> tuple[int, int]:
    """(parameters, MACs of one forward pass of one image) of the run's model: counted once
    per entry in a process (the seed does not change the architecture)."""
    key = json.dumps(asdict(replace(config, seed=0)), sort_keys=True, default=str)
    if key not in _COSTS:
        _COSTS[key] = _count_cost(config)
    return _COSTS[key]


def _count_cost(config: TrainConfig) -> tuple[int, int]:
    from torch.utils.flop_counter import FlopCounterMode

    from attnzoo.train.engine import build_model, load_split, match_channels

    data = load_split(replace(config, limit_val=1), "test")
    model = build_model(config, data).eval()
    data = match_channels(data, model, config)  # greyscale data fed to an RGB model
    params = sum(p.numel() for p in model.parameters())
    image = torch.zeros(1, data.channels, *data.image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(image)
    # The counter reports FLOPs = 2 x multiply-accumulates, as profile.py does.
    return params, int(counter.get_total_flops() // 2)


def _summarise_run(run_dir: Path, config: TrainConfig, seconds: float) -> dict[str, Any]:
    records = _read_metrics(run_dir)
    if not records:
        raise ValueError(f"{run_dir}/metrics.jsonl is empty: the run finished no epoch")
    last = records[-1]
    images = sum(r["throughput"] * r["time"] for r in records)
    train_time = sum(r["time"] for r in records)
    params, macs = _model_cost(config)
    final = final_evaluation(run_dir)  # the whole test split, and a map for every entry
    return {
        "config": config.to_dict(),
        "accuracy": final["accuracy"],
        "loss": final["loss"],
        "train_accuracy": last["train_accuracy"],
        "map_rho": final["map_rho"],
        "map_fraction": final["map_fraction"],
        "map_source": final["map_source"],
        "images_per_s": images / max(train_time, 1e-9),
        "epochs": last["epoch"],
        "steps": last["step"],
        "params": params,
        "macs": macs,
        "wall_s": seconds,
    }


def check_run_folder(config: TrainConfig, run_dir: Path) -> None:
    """ValueError if ``run_dir`` holds a result or a checkpoint made with other settings."""
    result_file = run_dir / "result.json"
    if result_file.is_file():
        _check_same_settings(run_dir, json.loads(result_file.read_text())["config"], config)
    elif (run_dir / "checkpoints" / "latest.json").is_file():
        _check_same_settings(run_dir, json.loads((run_dir / "config.json").read_text()), config)


def run_one(
    config: TrainConfig, run_dir: Path, tensorboard: bool = False
) -> tuple[dict[str, Any], str]:
    """(result, how) for one (entry, seed): how is ``reused``, ``resumed`` or ``trained``.
    With ``tensorboard``, the run also writes a TensorBoard event file beside metrics.jsonl."""
    from attnzoo.train.engine import train

    check_run_folder(config, run_dir)
    result_file = run_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text()), "reused"
    start = time.perf_counter()
    checkpoints = run_dir / "checkpoints"
    resume = (checkpoints / "latest.json").is_file()
    if not resume:
        # Killed while writing its first checkpoint: nothing to continue from, start over
        # (train() refuses a fresh run into a folder with another run's metrics lines).
        shutil.rmtree(checkpoints, ignore_errors=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    explicit = {"progress", "log_every", "save_every"}
    if tensorboard:
        from attnzoo.train.tensorboard import TensorBoardLog

        with TensorBoardLog(run_dir) as board:
            train(config, run_dir, resume=resume, explicit=explicit, on_record=board.add_record)
    else:
        train(config, run_dir, resume=resume, explicit=explicit)
    result = _summarise_run(run_dir, config, time.perf_counter() - start)
    write_json_atomic(result_file, result)
    return result, "resumed" if resume else "trained"
