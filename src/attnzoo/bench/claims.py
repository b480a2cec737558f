"""The seed papers' claims that a leaderboard can test, put to a paired test.

One row per claim: an entry, the reference it is claimed to beat and on which metric
(test accuracy, or map alignment ρ), the source, and from the per-seed results (paired by
seed, as the leaderboard's Δ):

- Δ = mean of the per-seed differences (entry − reference) with its 95% Student-t interval;
- the two-sided p-value of the paired t-test (``scipy.stats.ttest_1samp`` on the differences);
- Holm's step-down correction of those p-values across all the rows of the run (family-wise
  error 5%): sort the m p-values ascending, p'_(i) = max_{j<=i} min(1, (m − j + 1) · p_(j));
- a verdict: ``reproduced`` (corrected p < 0.05 and Δ > 0, the claimed direction),
  ``contradicted`` (corrected p < 0.05 and Δ < 0) or ``inconclusive`` (otherwise, or with fewer
  than two seeds).

Every claim is "better than": each paper reports a gain over its reference.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from attnzoo.bench.entries import MAPS_SUFFIX

__all__ = [
    "ALPHA",
    "Claim",
    "claims_from_rows",
    "claims_markdown",
    "default_claims",
    "evaluate_claims",
    "holm",
    "paired_test",
    "registry_sources",
    "t_ppf",
]

ALPHA = 0.05
GALA_SOURCE = "Linsley et al., ICLR 2019 (arXiv 1805.08819)"
GATTANET_SOURCE = "VanRullen & Alamia, 2021 (arXiv 2104.05575)"


def _stats() -> Any:
    try:
        from scipy import stats
    except ImportError:
        raise ValueError(
            "the leaderboard's intervals and tests need scipy (pip install scipy, or "
            "pip install 'attnzoo[bench]')"
        ) from None
    return stats


def t_ppf(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom."""
    return float(_stats().t.ppf(probability, df))


@dataclass(frozen=True)
class Claim:
    """``entry`` is better than ``reference`` on ``metric`` (``accuracy`` or ``map_rho``)."""

    entry: str
    reference: str
    metric: str
    source: str
    statement: str


def default_claims(entries: Sequence[str], papers: dict[str, str]) -> list[Claim]:
    """The claims testable with these entries. ``papers`` maps a module name to its source
    (paper, venue, year, arXiv id); a survey module's claim is that it beats the backbone."""
    present = set(entries)
    claims: list[Claim] = []

    def add(entry: str, reference: str, metric: str, source: str, statement: str) -> None:
        if entry in present and reference in present:
            claims.append(Claim(entry, reference, metric, source, statement))

    add("gala+maps", "gala", "accuracy", GALA_SOURCE, "map supervision improves GALA")
    add("gala+maps", "baseline", "accuracy", GALA_SOURCE, "supervised GALA beats the backbone")
    add("gala", "baseline", "accuracy", GALA_SOURCE, "GALA beats the backbone")
    add(
        "gala+maps",
        "gala",
        "map_rho",
        GALA_SOURCE,
        "map supervision aligns GALA's attention with the importance maps",
    )
    add("gattanet", "baseline", "accuracy", GATTANET_SOURCE, "GAttANet beats its backbone")
    for name in entries:
        module = name.split("+")[0]
        if name in ("baseline", "gattanet") or module == "gala" or module not in papers:
            continue
        if name.endswith(MAPS_SUFFIX):
            # Supervising another module's map is GALA's claim carried over, not a claim of
            # that module's paper: tested against the same module trained without maps.
            statement = f"map supervision improves {module} (GALA's supervision, carried over)"
            add(name, module, "accuracy", GALA_SOURCE, statement)
            continue
        add(name, "baseline", "accuracy", papers[module], f"{module} beats the backbone")
    return claims


def paired_test(
    values: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> dict[str, Any]:
    """Mean paired difference, its Student-t interval and the two-sided paired t-test p-value.

    With one pair there is no interval and no p-value (None). With identical differences
    (zero spread) the interval is that value and p is 0 (a nonzero difference) or 1 (zero).
    """
    if len(values) != len(reference) or not values:
        raise ValueError(
            f"a paired test needs equally many (>= 1) values and references, got "
            f"{len(values)} and {len(reference)}"
        )
    differences = [v - r for v, r in zip(values, reference, strict=True)]
    mean = statistics.fmean(differences)
    n = len(differences)
    if n < 2:
        return {"delta": mean, "low": None, "high": None, "p": None}
    sd = statistics.stdev(differences)
    if sd == 0.0:
        return {"delta": mean, "low": mean, "high": mean, "p": 0.0 if mean != 0 else 1.0}
    half = t_ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    p = float(_stats().ttest_1samp(differences, 0.0).pvalue)
    return {"delta": mean, "low": mean - half, "high": mean + half, "p": p}


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values in the input order; None (no test) stays None and does not
    count in the family."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def _verdict(delta: float, p_holm: float | None) -> str:
    if p_holm is None or p_holm >= ALPHA:
        return "inconclusive"
    return "reproduced" if delta > 0 else "contradicted"


def evaluate_claims(
    claims: Sequence[Claim],
    seeds: Sequence[int],
    results: dict[tuple[str, int], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per claim from the per-(entry, seed) results (keys ``accuracy``, ``map_rho``).
    A claim whose metric is missing for some seed (no map) is left out."""
    rows: list[dict[str, Any]] = []
    for claim in claims:
        values = [results[(claim.entry, s)].get(claim.metric) for s in seeds]
        reference = [results[(claim.reference, s)].get(claim.metric) for s in seeds]
        if any(v is None for v in values) or any(r is None for r in reference):
            continue
        test = paired_test(
            [float(v) for v in values if v is not None],
            [float(r) for r in reference if r is not None],
        )
        rows.append(
            {
                "entry": claim.entry,
                "reference": claim.reference,
                "metric": claim.metric,
                "claim": claim.statement,
                "source": claim.source,
                "seeds": len(seeds),
                "delta": test["delta"],
                "ci_low": test["low"],
                "ci_high": test["high"],
                "p": test["p"],
            }
        )
    for row, adjusted in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = adjusted
        row["verdict"] = _verdict(row["delta"], adjusted)
    return rows


def _parse_per_seed(text: str) -> dict[int, float]:
    pairs = (item.split(":") for item in text.split(";") if item)
    return {int(seed): float(value) for seed, value in pairs}


def claims_from_rows(
    rows: Sequence[dict[str, Any]], papers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The claims of :func:`default_claims` tested on a leaderboard's rows (their
    ``accuracy_per_seed`` and ``map_rho_per_seed``). ``papers`` defaults to the registry's."""
    if papers is None:
        papers = registry_sources()
    results: dict[tuple[str, int], dict[str, Any]] = {}
    seeds: list[int] = []
    for row in rows:
        accuracy = _parse_per_seed(row["accuracy_per_seed"])
        rho = _parse_per_seed(row.get("map_rho_per_seed", ""))
        seeds = list(accuracy)
        for seed, value in accuracy.items():
            results[(row["entry"], seed)] = {"accuracy": value, "map_rho": rho.get(seed)}
    claims = default_claims([row["entry"] for row in rows], papers)
    return evaluate_claims(claims, seeds, results)


def registry_sources() -> dict[str, str]:
    """Module name -> "Authors, VENUE YEAR (arXiv ID)" for every registered module."""
    from attnzoo.registry import list_modules, module_info

    sources = {}
    for name in list_modules():
        info = module_info(name)
        arxiv = f" (arXiv {info.arxiv})" if info.arxiv else ""
        sources[name] = f"{info.authors}, {info.venue} {info.year}{arxiv}"
    return sources


def _number(value: float | None, metric: str, sign: bool = True) -> str:
    if value is None:
        return "n/a"
    if metric == "accuracy":
        return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def claims_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The claims table (Δ in percentage points for accuracy, in ρ for alignment)."""
    lines = [
        "| claim | entry vs reference | metric | Δ [95% CI] | p | p (Holm) | verdict | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        metric = row["metric"]
        delta = _number(row["delta"], metric)
        if row["ci_low"] is not None:
            delta += f" [{_number(row['ci_low'], metric)}, {_number(row['ci_high'], metric)}]"
        unit = "accuracy (pp)" if metric == "accuracy" else "map ρ"
        p = "n/a" if row["p"] is None else f"{row['p']:.3g}"
        p_holm = "n/a" if row["p_holm"] is None else f"{row['p_holm']:.3g}"
        cells = [
            row["claim"],
            f"{row['entry']} vs {row['reference']}",
            unit,
            delta,
            p,
            p_holm,
            f"**{row['verdict']}**",
            row["source"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
