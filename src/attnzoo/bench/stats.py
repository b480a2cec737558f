"""The leaderboard's statistics: one row per entry from its per-seed runs.

- accuracy on the test split, mean ± sample standard deviation over seeds;
- Δ against the baseline, paired by seed: the mean of the per-seed differences with a 95%
  Student-t interval ``mean ± t(0.975, n-1) · sd / √n`` (n = seeds); with one seed there is
  no interval ("n/a").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from attnzoo.bench.entries import Entry

__all__ = ["COLUMNS", "paired_interval", "summarise", "t_quantile"]

# The columns of a row (results.csv), in order.
COLUMNS = (
    "entry", "attention", "map_weight", "seeds", "accuracy_mean", "accuracy_std",
    "delta_mean", "delta_ci_low", "delta_ci_high", "params", "macs", "images_per_s",
    "map_rho_mean", "map_rho_std", "map_fraction_mean", "accuracy_per_seed",
)  # fmt: skip


def _two_sided_t_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            # cos θ + 2/3 cos³θ + (2·4)/(3·5) cos⁵θ + ... up to cos^(df-2)θ
            total += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):
        # 1 + 1/2 cos²θ + (1·3)/(2·4) cos⁴θ + ... up to cos^(df-2)θ
        total += term
        term *= cos2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile (> 0.5) of Student's t with integer ``df`` >= 1."""
    if not 0.5 < probability < 1 or df < 1:
        raise ValueError(f"expected 0.5 < probability < 1 and df >= 1, got {probability}, {df}")
    target = 2 * probability - 1  # two-sided coverage
    low, high = 0.0, 1.0
    while _two_sided_t_cdf(high, df) < target:
        high *= 2
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _two_sided_t_cdf(middle, df) < target:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def paired_interval(
    values: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> tuple[float, float | None, float | None]:
    """(mean difference, low, high) of ``values - reference`` paired by position: a Student-t
    interval on the per-pair differences; low and high are None with a single pair."""
    if len(values) != len(reference) or not values:
        raise ValueError(
            f"paired_interval needs equally many (>= 1) values and references, got "
            f"{len(values)} and {len(reference)}"
        )
    differences = [v - r for v, r in zip(values, reference, strict=True)]
    mean = statistics.fmean(differences)
    n = len(differences)
    if n < 2:
        return mean, None, None
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _std(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.stdev(present) if len(present) >= 2 else None


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
            "delta_mean": None,
            "delta_ci_low": None,
            "delta_ci_high": None,
            "params": runs[0]["params"],
            "macs": runs[0]["macs"],
            "images_per_s": statistics.fmean(r["images_per_s"] for r in runs),
            "map_rho_mean": _mean([r["map_rho"] for r in runs]),
            "map_rho_std": _std([r["map_rho"] for r in runs]),
            "map_fraction_mean": _mean([r["map_fraction"] for r in runs]),
            "accuracy_per_seed": ";".join(
                f"{s}:{a:.4f}" for s, a in zip(seeds, accuracies, strict=True)
            ),
        }
        if entry.attention is not None and baseline is not None:
            mean, low, high = paired_interval(accuracies, baseline)
            row.update(delta_mean=mean, delta_ci_low=low, delta_ci_high=high)
        rows.append(row)
    return rows
