"""Sample efficiency: one leaderboard per training-set size (``--num-images 250,500,1000``).

Each size trains for the same number of steps: ``--epochs`` is the number of epochs of the
default board's size (1,000 images), and a board of N images trains for
``round(epochs · 1000 / N)`` epochs (at least 1): 40 at 250 images, 10 at 1,000, 2 at 4,000
(:func:`epochs_for_size`). Otherwise a small set would also be under-trained, and the curve would
measure steps, not data.

Each size is a complete board under ``OUT/nSIZE/`` (its own runs, results and claims, reused
and resumed like any board). Then, over the sizes, ``OUT/sizes.json``, ``OUT/sizes.md`` and
``OUT/sizes.png``: test accuracy and map ρ of every entry against the training-set size, each
with its 95% Student-t interval over seeds (mean ± t(0.975, n−1)·sd/√n; none with one seed).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from attnzoo.train.checkpoint import write_json_atomic

__all__ = ["epochs_for_size", "parse_sizes", "read_board", "size_curves", "write_size_outputs"]


def epochs_for_size(epochs: int, size: int, reference: int) -> int:
    """Epochs of ``size`` images that take as many steps as ``epochs`` of ``reference``."""
    return max(1, round(epochs * reference / size))


def parse_sizes(text: str | int | None) -> list[int] | None:
    """``"1000"`` -> [1000]; ``"250,500"`` -> [250, 500]; None stays None."""
    if text is None:
        return None
    try:
        sizes = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--num-images: expected a count or a comma list of counts (250,500,1000), got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise ValueError(f"--num-images: expected distinct counts >= 1, got {text!r}")
    return sorted(sizes)


def _interval(values: list[float]) -> tuple[float, float | None, float | None]:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    from attnzoo.bench.claims import t_ppf

    half = t_ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _values(text: str) -> list[float]:
    return [float(item.split(":")[1]) for item in text.split(";") if item]


def size_curves(boards: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One point per (entry, size) from each size's leaderboard rows: accuracy and map ρ
    means with their 95% intervals over seeds."""
    points = []
    for size, rows in sorted(boards.items()):
        for row in rows:
            accuracy = _interval(_values(row["accuracy_per_seed"]))
            rho_values = _values(row.get("map_rho_per_seed", ""))
            rho = _interval(rho_values) if rho_values else (None, None, None)
            points.append(
                {
                    "entry": row["entry"],
                    "num_images": size,
                    "seeds": row["seeds"],
                    "accuracy_mean": accuracy[0],
                    "accuracy_ci_low": accuracy[1],
                    "accuracy_ci_high": accuracy[2],
                    "train_accuracy_mean": row.get("train_accuracy_mean"),
                    "map_rho_mean": rho[0],
                    "map_rho_ci_low": rho[1],
                    "map_rho_ci_high": rho[2],
                    "map_source": row.get("map_source", "-"),
                }
            )
    return points


def _cell(mean: float | None, low: float | None, high: float | None, scale: float) -> str:
    if mean is None:
        return "-"
    digits = 1 if scale == 100 else 3
    text = f"{scale * mean:.{digits}f}"
    if low is not None and high is not None:
        text += f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
    return text


def write_size_outputs(
    out: Path, boards: dict[int, list[dict[str, Any]]], plots: bool = True
) -> list[Path]:
    """sizes.json, sizes.md and (with ``plots``) sizes.png under ``out``."""
    points = size_curves(boards)
    write_json_atomic(out / "sizes.json", {"sizes": sorted(boards), "points": points})
    lines = [
        "# Accuracy and map alignment against the training-set size",
        "",
        "Mean over seeds [95% Student-t interval]; each size's board is under `nSIZE/`.",
        "",
        "| entry | images | test accuracy % | train accuracy % | map ρ | map |",
        "|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p["entry"] != "baseline", p["entry"], p["num_images"])):
        train = p["train_accuracy_mean"]
        lines.append(
            f"| {p['entry']} | {p['num_images']} | "
            f"{_cell(p['accuracy_mean'], p['accuracy_ci_low'], p['accuracy_ci_high'], 100)} | "
            f"{'-' if train is None else f'{100 * train:.1f}'} | "
            f"{_cell(p['map_rho_mean'], p['map_rho_ci_low'], p['map_rho_ci_high'], 1)} | "
            f"{p['map_source']} |"
        )
    (out / "sizes.md").write_text("\n".join(lines) + "\n")
    written = [out / "sizes.json", out / "sizes.md"]
    return [*written, _plot(out, points)] if plots else written


def _plot(out: Path, points: list[dict[str, Any]]) -> Path:
    from attnzoo.bench.report import require_pyplot

    plt = require_pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    entries = list(dict.fromkeys(p["entry"] for p in points))
    for entry in entries:
        mine = [p for p in points if p["entry"] == entry]
        for axis, key, scale in ((axes[0], "accuracy", 100), (axes[1], "map_rho", 1)):
            shown = [p for p in mine if p[f"{key}_mean"] is not None]
            if not shown:
                continue
            x = [p["num_images"] for p in shown]
            y = [scale * p[f"{key}_mean"] for p in shown]
            low = [
                scale * (p[f"{key}_ci_low"] if p[f"{key}_ci_low"] is not None else p[f"{key}_mean"])
                for p in shown
            ]
            high = [
                scale
                * (p[f"{key}_ci_high"] if p[f"{key}_ci_high"] is not None else p[f"{key}_mean"])
                for p in shown
            ]
            yerr = [
                [m - lo for m, lo in zip(y, low, strict=True)],
                [hi - m for m, hi in zip(y, high, strict=True)],
            ]
            style = {"color": "black", "linewidth": 2} if entry == "baseline" else {}
            axis.errorbar(x, y, yerr=yerr, marker="o", capsize=3, label=entry, **style)
    axes[0].set_ylabel("test accuracy % (mean, 95% CI over seeds)")
    axes[1].set_ylabel("map ρ with the importance maps (mean, 95% CI)")
    sizes = sorted({p["num_images"] for p in points})
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xticks(sizes, [str(size) for size in sizes])  # the sizes run, not 10^k
        axis.minorticks_off()
        axis.set_xlabel("training images")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    path = out / "sizes.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def read_board(out: Path) -> list[dict[str, Any]]:
    """The rows of the leaderboard written under ``out``."""
    return list(json.loads((out / "results.json").read_text())["rows"])
