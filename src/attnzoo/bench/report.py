"""The leaderboard's outputs: results.csv, results.json, results.md and the plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from attnzoo.bench.executors import Leaderboard
from attnzoo.bench.stats import COLUMNS
from attnzoo.train.checkpoint import write_json_atomic

__all__ = ["markdown_table", "plot_results", "require_pyplot", "write_outputs"]


def _pct(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


def _count(value: int) -> str:
    return f"{value / 1e6:.3f}M" if value < 1e9 else f"{value / 1e9:.2f}G"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| entry | accuracy % (mean ± std) | Δ vs baseline, pp [95% CI] | params | MACs "
        "| train img/s | map ρ (ceiling fraction) |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        accuracy = _pct(row["accuracy_mean"])
        if row["accuracy_std"] is not None:
            accuracy += f" ± {_pct(row['accuracy_std'])}"
        if row["attention"] == "":
            delta = "(reference)"
        else:
            delta = _pct(row["delta_mean"], sign=True)
            if row["delta_ci_low"] is None:
                delta += " [n/a: one seed]"
            else:
                delta += (
                    f" [{_pct(row['delta_ci_low'], sign=True)}, "
                    f"{_pct(row['delta_ci_high'], sign=True)}]"
                )
        if row["map_rho_mean"] is None:
            alignment = "-"
        else:
            alignment = f"{row['map_rho_mean']:.3f}"
            if row["map_rho_std"] is not None:
                alignment += f" ± {row['map_rho_std']:.3f}"
            alignment += f" ({row['map_fraction_mean']:.2f})"
        cells = [
            row["entry"],
            accuracy,
            delta,
            _count(row["params"]),
            _count(row["macs"]),
            f"{row['images_per_s']:.0f}",
            alignment,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(board: Leaderboard, out: Path, meta: dict[str, Any], plots: bool) -> list[Path]:
    """results.csv, results.json, results.md and (with ``plots``) the two PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.csv", out / "results.json", out / "results.md"]
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(board.rows)
    document = {
        "meta": meta,
        "rows": board.rows,
        "skipped": board.skipped,
        "failed": board.failed,
    }
    write_json_atomic(out / "results.json", document)
    recipe = ", ".join(f"{k}={v}" for k, v in meta["recipe"].items())
    text = [
        f"# Leaderboard: {meta['model']} on {meta['data']}",
        "",
        f"Seeds {meta['seeds']}; {recipe}.",
        f"Device {meta['device']}, {meta['threads']} thread(s), torch {meta['torch']}.",
        "Δ: mean of the per-seed differences with the baseline (same seed = same data and "
        "data order), 95% Student-t interval over seeds. MACs: one forward pass of one image. "
        "Map ρ: mean per-image Spearman correlation of the recorded spatial map with the "
        "importance maps; in brackets, ρ / 0.65753 (the ClickMe human ceiling).",
        "",
        markdown_table(board.rows),
    ]
    if board.skipped:
        text += ["", "Not on the leaderboard:", ""]
        text += [f"- `{s['name']}`: {s['reason']}" for s in board.skipped]
    if board.failed:
        text += ["", "Failed runs (their entries have no row; run the bench again to retry):", ""]
        text += [f"- `{f['entry']}` seed {f['seed']}: {f['error']}" for f in board.failed]
    (out / "results.md").write_text("\n".join(text) + "\n")
    if plots:
        written += plot_results(board.rows, out, f"{meta['model']} on {meta['data']}")
    return written


def require_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "the leaderboard plots need matplotlib (pip install 'attnzoo[plots]'); or pass "
            "--no-plots"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_results(rows: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """accuracy_vs_macs.png and delta.png under ``out``."""
    plt = require_pyplot()
    figure, axes = plt.subplots(figsize=(8, 6))
    for row in rows:
        is_baseline = row["attention"] == ""
        axes.errorbar(
            row["macs"] / 1e6,
            100 * row["accuracy_mean"],
            yerr=100 * (row["accuracy_std"] or 0.0),
            fmt="s" if is_baseline else "o",
            color="black" if is_baseline else "tab:blue",
            capsize=3,
        )
        axes.annotate(
            row["entry"],
            (row["macs"] / 1e6, 100 * row["accuracy_mean"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    axes.set_xlabel("MACs per image (millions)")
    axes.set_ylabel("test accuracy % (mean ± std over seeds)")
    axes.set_title(f"{title}: accuracy vs MACs")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "accuracy_vs_macs.png", dpi=120)
    plt.close(figure)

    entries = [r for r in rows if r["delta_mean"] is not None]
    entries.sort(key=lambda r: r["delta_mean"])
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(entries) + 1.5))
    for position, row in enumerate(entries):
        mean = 100 * row["delta_mean"]
        if row["delta_ci_low"] is not None:
            low, high = 100 * row["delta_ci_low"], 100 * row["delta_ci_high"]
            axes.errorbar(mean, position, xerr=[[mean - low], [high - mean]], fmt="o", capsize=3)
        else:
            axes.plot(mean, position, "o", color="tab:gray")
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(entries)), [r["entry"] for r in entries], fontsize=8)
    axes.set_xlabel("Δ accuracy vs baseline, percentage points (95% CI over seeds)")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "delta.png", dpi=120)
    plt.close(figure)
    return [out / "accuracy_vs_macs.png", out / "delta.png"]
