"""Every branch of the verdict rule, from runs tables with several seeds, as the chapters build them."""
import math

import numpy as np
import pandas as pd
import pytest

from ecglib import ledger, stats
from ecglib.verdicts import MARGINS, MIN_RUNS, Judgement, Margin, all_of, combine, judge, margin, not_worse

M = Margin(0.02, "macro-F1", "test margin")


def runs(deltas, seeds=4, base=0.7, noise=0.0):
    """A runs table: family "a" and "b" per seed, a - b = deltas[seed % len(deltas)] (+ noise)."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(seeds):
        b = base + rng.normal(0, 0.05)
        rows += [{"family": "b", "seed": s, "f1": b},
                 {"family": "a", "seed": s, "f1": b + deltas[s % len(deltas)] + rng.normal(0, noise)}]
    return pd.DataFrame(rows)


def judged(df, claimed="above"):
    d = stats.paired_diff(df, "family", "f1", "a", "b").iloc[0]
    return judge(d["mean"], d["low"], d["high"], int(d["n"]), M, claimed=claimed, what="a - b")


@pytest.mark.parametrize("deltas, seeds, claimed, verdict, words", [
    ([0.10, 0.12, 0.11], 3, "above", "supported", "beyond the margin"),          # clear effect, claimed side
    ([0.10, 0.12, 0.11, 0.09, 0.1], 5, "below", "refuted", "opposite side"),    # clear effect, other side
    ([-0.10, -0.12, -0.11], 4, "below", "supported", "beyond the margin"),
    ([0.001, -0.002, 0.0015, -0.001], 4, "above", "refuted", "inside the no-effect band"),  # equivalence
    ([0.3, -0.3, 0.25, -0.2], 4, "above", "inconclusive", "straddles zero"),    # the [-0.5, 0.4] case
    ([0.012, 0.014, 0.013, 0.03], 4, "above", "inconclusive", "mean is within"),  # real but small effect
    ([0.1, 0.11], 2, "above", "inconclusive", "needs at least 3"),              # too few seeds
])
def test_judge_every_branch(deltas, seeds, claimed, verdict, words):
    j = judged(runs(deltas, seeds), claimed)
    assert j.verdict == verdict and words in j.reason
    assert j.margin == M.value and j.n == seeds


def test_sign_of_the_mean_alone_never_refutes():
    # C11's old rule refuted on a mean at or below zero; a wide CI across zero is not evidence of no effect
    j = judge(-0.05, -0.5, 0.4, 5, M)
    assert j.verdict == "inconclusive"
    assert judge(-0.002, -0.012, 0.008, 5, M).verdict == "refuted"   # narrow, inside the band


def test_missing_estimates_say_what_is_missing():
    assert "no estimate" in judge(math.nan, math.nan, math.nan, 0, M, min_runs=0).reason
    j = judge(0.5, math.nan, math.nan, 12, M)
    assert j.verdict == "inconclusive" and "12 values" in j.reason and "needs" not in j.reason
    assert "1 run(s)" in judge(0.5, None, None, 1, M).reason
    assert judge(0.5, 0.5, 0.5, None, Margin(0.0, "x", "exact")).verdict == "supported"   # exact, n=None
    with pytest.raises(ValueError, match="claimed"):
        judge(0, 0, 0, 3, M, claimed="up")


@pytest.mark.parametrize("mean, low, high, verdict", [
    (0.0, -0.01, 0.01, "supported"), (-0.1, -0.15, -0.05, "refuted"), (0.0, -0.1, 0.1, "inconclusive")])
def test_not_worse(mean, low, high, verdict):
    assert not_worse(mean, low, high, 4, M).verdict == verdict


S, R, I = (Judgement(v, v) for v in ("supported", "refuted", "inconclusive"))


@pytest.mark.parametrize("parts, verdict", [
    ({"x": S, "y": S}, "supported"), ({"x": S, "y": R}, "refuted"), ({"x": S, "y": I}, "inconclusive"),
    ({"x": I, "y": I}, "inconclusive")])
def test_all_of(parts, verdict):
    assert all_of(parts).verdict == verdict


@pytest.mark.parametrize("settings, verdict, words", [
    ({"MIT-BIH": S, "CinC": S}, "supported", "every setting"),
    ({"MIT-BIH": R, "CinC": R}, "refuted", "every setting"),
    ({"MIT-BIH": S, "CinC": R}, "depends", "depends"),
    ({"MIT-BIH": S, "CinC": I}, "supported", "left open by CinC"),
    ({"MIT-BIH": I, "CinC": I}, "inconclusive", "every setting"),
])
def test_combine(settings, verdict, words):
    j = combine(settings)
    assert j.verdict == verdict and words in j.reason
    assert all(name in j.reason for name in settings)


def test_combine_from_runs_per_database():
    per_db = {"MIT-BIH": judged(runs([0.1, 0.12, 0.09], 3)), "CinC": judged(runs([-0.1, -0.12, -0.09], 5))}
    j = combine(per_db, headline="CinC")
    assert j.verdict == "depends" and j.mean == pytest.approx(per_db["CinC"].mean)


def test_margins_table_is_complete_and_justified():
    assert set(MARGINS) == set(ledger.CLAIMS)
    for claim, quantities in MARGINS.items():
        for q, m in quantities.items():
            assert m.value >= 0 and m.unit and len(m.why) > 10, (claim, q)
    with pytest.raises(KeyError, match="declare it"):
        margin("C1", "nonsense")


def test_ledger_verdict_carries_margin_and_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGLIB_RESULTS", str(tmp_path))
    j = judged(runs([0.1, 0.12, 0.11], 3))
    v = ledger.Verdict.of(j, claim="C2", chapter="x", summary="s", effect="e", runs=["k1", "k2"])
    assert (v.verdict, v.margin, v.reason, v.value) == ("supported", 0.02, j.reason, j.mean)
    ledger.save("x", [v])
    row = ledger.load().iloc[0]
    assert row["reason"] == j.reason and row["margin"] == 0.02
