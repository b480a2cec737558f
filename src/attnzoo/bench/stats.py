"""The leaderboard's statistics: one row per entry from its per-seed runs.

- accuracy on the test split, mean ± sample standard deviation over seeds;
- Δ against the baseline, paired by seed: the mean of the per-seed differences with a 95%
  Student-t interval ``mean ± t(0.975, n-1) · sd / √n`` (n = seeds); with one seed there is
  no interval ("n/a"). The t quantile is ``scipy.stats.t`` (:func:`attnzoo.bench.claims.paired_test`);
- training accuracy (last epoch) and map alignment with the map each entry used.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from attnzoo.bench.claims import paired_test
from attnzoo.bench.entries import Entry

__all__ = ["COLUMNS", "paired_interval", "summarise"]

# The columns of a row (results.csv), in order.
COLUMNS = (
    "entry", "attention", "map_weight", "seeds", "accuracy_mean", "accuracy_std",
    "train_accuracy_mean", "delta_mean", "delta_ci_low", "delta_ci_high", "params", "macs",
    "images_per_s", "map_rho_mean", "map_rho_std", "map_fraction_mean", "map_source",
    "accuracy_per_seed", "map_rho_per_seed",
)  # fmt: skip


def paired_interval(
    values: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> tuple[float, float | None, float | None]:
    """(mean difference, low, high) of ``values - reference`` paired by position: a Student-t
    interval on the per-pair differences; low and high are None with a single pair."""
    test = paired_test(values, reference, confidence)
    return test["delta"], test["low"], test["high"]


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _std(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.stdev(present) if len(present) >= 2 else None


def _per_seed(seeds: list[int], values: list[float | None]) -> str:
    """``seed:value;...`` (6 decimals); empty when a value is missing."""
    if any(v is None for v in values):
        return ""
    return ";".join(f"{s}:{v:.6f}" for s, v in zip(seeds, values, strict=True))


def _sources(runs: list[dict[str, Any]]) -> str:
    """The map the entry's runs used (``-`` for none; runs from before maps had a source:
    ``attention`` where they have a ρ)."""
    sources = {
        r.get("map_source") or ("attention" if r.get("map_rho") is not None else "-") for r in runs
    }
    return ";".join(sorted(sources))


def summarise(
    entries: list[Entry], seeds: list[int], results: dict[tuple[str, int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per entry (the baseline first) from the per-(entry, seed) results. An entry
    with a run missing (failed) has no row; without every baseline run, no row has a Δ."""
    complete = [e for e in entries if all((e.name, s) in results for s in seeds)]
    baseline = None
    if any(e.attention is None for e in complete):
        baseline = [results[("baseline", s)]["accuracy"] for s in seeds]
    rows = []
    for entry in complete:
        runs = [results[(entry.name, s)] for s in seeds]
        accuracies = [r["accuracy"] for r in runs]
        row: dict[str, Any] = {
            "entry": entry.name,
            "attention": entry.attention or "",
            "map_weight": entry.map_weight,
            "seeds": len(seeds),
            "accuracy_mean": statistics.fmean(accuracies),
            "accuracy_std": _std(list(accuracies)),
            "train_accuracy_mean": statistics.fmean(r["train_accuracy"] for r in runs),
            "delta_mean": None,
            "delta_ci_low": None,
            "delta_ci_high": None,
            "params": runs[0]["params"],
            "macs": runs[0]["macs"],
            "images_per_s": statistics.fmean(r["images_per_s"] for r in runs),
            "map_rho_mean": _mean([r["map_rho"] for r in runs]),
            "map_rho_std": _std([r["map_rho"] for r in runs]),
            "map_fraction_mean": _mean([r["map_fraction"] for r in runs]),
            "map_source": _sources(runs),
            "accuracy_per_seed": _per_seed(seeds, accuracies),
            "map_rho_per_seed": _per_seed(seeds, [r["map_rho"] for r in runs]),
        }
        if entry.attention is not None and baseline is not None:
            mean, low, high = paired_interval(accuracies, baseline)
            row.update(delta_mean=mean, delta_ci_low=low, delta_ci_high=high)
        rows.append(row)
    return rows
