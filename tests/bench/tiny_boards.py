"""A tiny leaderboard for the execution tests, and what two boards must share exactly."""

import json
from pathlib import Path

from safetensors.torch import load_file

# 2 entries x 2 seeds, 2 epochs of 3 steps each: four runs of a second or so.
BOARD = [
    "--attentions", "se", "--seeds", "2", "--epochs", "2", "--image-size", "8",
    "--num-images", "48", "--num-test", "16", "--batch-size", "16", "--no-plots",
]  # fmt: skip
RUNS = [f"{entry}/seed{seed}" for entry in ("baseline", "se") for seed in (0, 1)]
TIMING = ("wall_s", "images_per_s")  # how long a run took: differs between any two runs


def run_results(out: Path) -> dict[str, dict]:
    """Each run's result.json without its timing, and its final weights."""
    found = {}
    for run in RUNS:
        result = json.loads((out / "runs" / run / "result.json").read_text())
        del result["config"]["save_every"]  # when to checkpoint changes nothing computed
        final = max((out / "runs" / run / "checkpoints").glob("step_*"))
        weights = load_file(str(final / "model.safetensors"))
        found[run] = {
            "result": {k: v for k, v in result.items() if k not in TIMING},
            "weights": {k: v.numpy().tobytes() for k, v in weights.items()},
        }
    return found


def board_rows(out: Path) -> list[dict]:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return [{k: v for k, v in row.items() if k != "images_per_s"} for row in rows]
