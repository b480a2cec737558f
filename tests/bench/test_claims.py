"""The claims table: paired t-tests, Holm's correction and verdicts from known per-seed numbers."""

import math
import statistics

import pytest
from scipy import stats

from attnzoo.bench.claims import (
    GALA_SOURCE,
    Claim,
    claims_from_rows,
    claims_markdown,
    default_claims,
    evaluate_claims,
    holm,
    paired_test,
)

SEEDS = [0, 1, 2, 3]
PAPERS = {"se": "Hu et al., CVPR 2018", "cbam": "Woo et al., ECCV 2018", "gala": "Linsley"}


def test_holm_matches_a_hand_computation():
    # Sorted: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06 by the
    # step-down maximum). None is not a test and does not count in m = 3.
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    # Capped at 1.
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_paired_test_matches_a_hand_computation():
    values = [0.82, 0.85, 0.88, 0.86]
    reference = [0.80, 0.82, 0.84, 0.83]
    differences = [0.02, 0.03, 0.04, 0.03]  # mean 0.03, sd sqrt(0.0002 / 3)
    sd = math.sqrt(0.0002 / 3)
    t = 0.03 / (sd / 2)  # 7.348...
    test = paired_test(values, reference)
    assert test["delta"] == pytest.approx(statistics.fmean(differences))
    half = 3.182446305284263 * sd / 2  # t(0.975, 3)
    assert test["low"] == pytest.approx(0.03 - half) and test["high"] == pytest.approx(0.03 + half)
    assert test["p"] == pytest.approx(2 * stats.t.sf(t, 3))
    assert test["p"] == pytest.approx(0.0052079, abs=1e-6)  # t = 7.348, 3 df


def test_paired_test_edge_cases():
    assert paired_test([0.5], [0.4]) == {
        "delta": pytest.approx(0.1),
        "low": None,
        "high": None,
        "p": None,
    }
    same = paired_test([0.5, 0.6], [0.4, 0.5])  # identical differences: no spread
    assert same["p"] == 0.0 and same["low"] == pytest.approx(0.1) == same["high"]
    assert paired_test([0.5, 0.6], [0.5, 0.6])["p"] == 1.0
    with pytest.raises(ValueError, match="equally many"):
        paired_test([0.5, 0.6], [0.5])


def _results():
    per_seed = {
        "baseline": [0.80, 0.82, 0.84, 0.83],
        "se": [0.82, 0.85, 0.88, 0.86],  # +2..+4 pp: p 0.0052
        "cbam": [0.70, 0.71, 0.75, 0.73],  # -10..-9 pp: p ~ 2e-5
        "gala": [0.81, 0.81, 0.86, 0.82],  # +1, -1, +2, -1 pp: p 0.61
        "gala+maps": [0.85, 0.84, 0.90, 0.85],
    }
    rho = {"gala": [0.1, 0.12, 0.09, 0.11], "gala+maps": [0.4, 0.42, 0.38, 0.41]}
    return {
        (name, seed): {"accuracy": values[i], "map_rho": rho.get(name, [None] * 4)[i]}
        for name, values in per_seed.items()
        for i, seed in enumerate(SEEDS)
    }


def test_default_claims_cover_the_seed_papers_and_each_survey_module():
    entries = ["baseline", "se", "cbam", "gala", "gala+maps", "gattanet"]
    claims = default_claims(entries, PAPERS)
    pairs = [(c.entry, c.reference, c.metric) for c in claims]
    assert pairs == [
        ("gala+maps", "gala", "accuracy"),
        ("gala+maps", "baseline", "accuracy"),
        ("gala", "baseline", "accuracy"),
        ("gala+maps", "gala", "map_rho"),
        ("gattanet", "baseline", "accuracy"),
        ("se", "baseline", "accuracy"),
        ("cbam", "baseline", "accuracy"),
    ]
    assert all(c.source for c in claims)
    # Without gala, no GALA claim; without the baseline, nothing against it.
    assert default_claims(["gala+maps", "se"], PAPERS) == []


def test_another_module_with_maps_is_tested_as_galas_claim_against_itself_without_maps():
    # CBAM's paper claims nothing about map supervision: cbam+maps tests GALA's claim carried
    # over, against cbam trained without maps, and cites GALA, not CBAM.
    claims = default_claims(["baseline", "cbam", "cbam+maps", "gala"], PAPERS)
    supervised = [c for c in claims if c.entry == "cbam+maps"]
    assert [(c.reference, c.metric) for c in supervised] == [("cbam", "accuracy")]
    assert supervised[0].source == GALA_SOURCE != PAPERS["cbam"]


def test_claims_values_holm_and_verdicts():
    claims = [
        Claim("se", "baseline", "accuracy", "S", "se helps"),
        Claim("cbam", "baseline", "accuracy", "C", "cbam helps"),
        Claim("gala", "baseline", "accuracy", "G", "gala helps"),
        Claim("gala+maps", "gala", "map_rho", "G", "maps align"),
        Claim("se", "gala", "map_rho", "X", "no map for se: left out"),
    ]
    rows = evaluate_claims(claims, SEEDS, _results())
    assert [r["entry"] for r in rows] == ["se", "cbam", "gala", "gala+maps"]
    by = {(r["entry"], r["metric"]): r for r in rows}
    raw = [by[k]["p"] for k in by]
    expected = {
        ("se", "accuracy"): stats.ttest_rel([0.82, 0.85, 0.88, 0.86], [0.80, 0.82, 0.84, 0.83]),
        ("cbam", "accuracy"): stats.ttest_rel([0.70, 0.71, 0.75, 0.73], [0.80, 0.82, 0.84, 0.83]),
        ("gala", "accuracy"): stats.ttest_rel([0.81, 0.81, 0.86, 0.82], [0.80, 0.82, 0.84, 0.83]),
        ("gala+maps", "map_rho"): stats.ttest_rel([0.4, 0.42, 0.38, 0.41], [0.1, 0.12, 0.09, 0.11]),
    }
    for key, reference in expected.items():
        assert by[key]["p"] == pytest.approx(reference.pvalue)
    # Holm by hand over the four p-values.
    order = sorted(range(4), key=lambda i: raw[i])
    hand = [0.0] * 4
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * raw[i]))
        hand[i] = running
    assert [r["p_holm"] for r in rows] == pytest.approx(hand)
    assert by[("se", "accuracy")]["delta"] == pytest.approx(0.03)
    # se has the third smallest p (after the map claim and cbam): 2 x p, unless an earlier
    # adjusted value is larger (the step-down maximum).
    p_se, p_cbam, p_rho = raw[0], raw[1], raw[3]
    assert p_rho < p_cbam < p_se < raw[2]
    assert by[("se", "accuracy")]["p_holm"] == pytest.approx(max(4 * p_rho, 3 * p_cbam, 2 * p_se))
    assert by[("se", "accuracy")]["verdict"] == "reproduced"
    assert by[("cbam", "accuracy")]["verdict"] == "contradicted"
    assert by[("gala", "accuracy")]["verdict"] == "inconclusive"
    assert by[("gala+maps", "map_rho")]["verdict"] == "reproduced"


def test_holm_can_turn_a_nominal_success_inconclusive():
    # Nominal p 0.035 alone is reproduced; with a second, null claim in the family it is not.
    results = {
        ("baseline", s): {"accuracy": v}
        for s, v in zip(SEEDS, [0.80, 0.82, 0.84, 0.83], strict=True)
    }
    results.update(
        {("se", s): {"accuracy": v} for s, v in zip(SEEDS, [0.82, 0.83, 0.87, 0.84], strict=True)}
    )
    results.update(
        {("eca", s): {"accuracy": v} for s, v in zip(SEEDS, [0.81, 0.81, 0.85, 0.82], strict=True)}
    )
    one = evaluate_claims([Claim("se", "baseline", "accuracy", "S", "")], SEEDS, results)
    assert one[0]["p"] < 0.05 and one[0]["verdict"] == "reproduced"
    two = evaluate_claims(
        [
            Claim("se", "baseline", "accuracy", "S", ""),
            Claim("eca", "baseline", "accuracy", "E", ""),
        ],
        SEEDS,
        results,
    )
    assert two[0]["p_holm"] == pytest.approx(2 * one[0]["p"]) and two[0]["p_holm"] > 0.05
    assert two[0]["verdict"] == "inconclusive"


def test_one_seed_is_inconclusive():
    results = {("baseline", 0): {"accuracy": 0.5}, ("se", 0): {"accuracy": 0.9}}
    rows = evaluate_claims([Claim("se", "baseline", "accuracy", "S", "")], [0], results)
    assert rows[0]["p"] is None and rows[0]["p_holm"] is None
    assert rows[0]["verdict"] == "inconclusive"


def test_claims_from_rows_and_markdown():
    results = _results()
    rows = [
        {
            "entry": name,
            "accuracy_per_seed": ";".join(f"{s}:{results[(name, s)]['accuracy']}" for s in SEEDS),
            "map_rho_per_seed": (
                ";".join(f"{s}:{results[(name, s)]['map_rho']}" for s in SEEDS)
                if results[(name, 0)]["map_rho"] is not None
                else ""
            ),
        }
        for name in ("baseline", "se", "cbam", "gala", "gala+maps")
    ]
    claims = claims_from_rows(rows, PAPERS)
    direct = evaluate_claims(default_claims([r["entry"] for r in rows], PAPERS), SEEDS, results)
    assert claims == direct
    table = claims_markdown(claims)
    assert table.count("\n") == len(claims) + 1
    assert "**contradicted**" in table and "gala+maps vs gala" in table
    assert "+0.297" in table  # the map-ρ claim in ρ units, not percentage points
