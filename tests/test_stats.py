import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ecglib.stats import mean_ci, paired_diff, summarise


def test_mean_ci_is_the_t_interval():
    x = [0.80, 0.82, 0.79, 0.85, 0.81]
    mean, low, high = mean_ci(x)
    half = st.t.ppf(0.975, 4) * np.std(x, ddof=1) / math.sqrt(5)
    assert mean == pytest.approx(np.mean(x))
    assert (low, high) == pytest.approx((np.mean(x) - half, np.mean(x) + half))
    _, low90, high90 = mean_ci(x, level=0.90)
    assert low < low90 < mean < high90 < high


def test_mean_ci_small_and_missing():
    assert mean_ci([0.5])[0] == 0.5 and all(math.isnan(v) for v in mean_ci([0.5])[1:])
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0      # a diverged run's missing metric is dropped
    assert mean_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))
    with pytest.raises(ValueError, match="level"):
        mean_ci([1, 2], level=95)


def _runs():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for depth in (1, 4):
            cnn = 0.8 + 0.01 * depth + rng.normal(0, 0.01)
            rows += [{"family": "cnn", "depth": depth, "seed": seed, "f1": cnn},
                     {"family": "lstm", "depth": depth, "seed": seed, "f1": cnn - 0.05 * depth}]
    return pd.DataFrame(rows)


def test_summarise_groups():
    df = _runs()
    s = summarise(df, ["family", "depth"], "f1")
    assert list(s.columns) == ["family", "depth", "mean", "low", "high", "n"]
    assert len(s) == 4 and (s["n"] == 4).all()
    row = s[(s.family == "lstm") & (s.depth == 4)].iloc[0]
    assert row["mean"] == pytest.approx(df[(df.family == "lstm") & (df.depth == 4)]["f1"].mean())
    assert row["low"] < row["mean"] < row["high"]
    assert list(summarise(df, "family", "f1")["family"]) == ["cnn", "lstm"]
    with pytest.raises(ValueError, match="nope"):
        summarise(df, "nope", "f1")


def test_paired_diff_pairs_by_seed():
    df = _runs()
    d = paired_diff(df, "family", "f1", "lstm", "cnn", within=["depth"])
    assert list(d["depth"]) == [1, 4] and (d["n"] == 4).all()
    # differences are exact by construction, so pairing leaves no spread at all
    assert d["mean"].tolist() == pytest.approx([-0.05, -0.20])
    assert d["low"].tolist() == pytest.approx([-0.05, -0.20])
    one = paired_diff(df[df.depth == 1], "family", "f1", "cnn", "lstm")
    assert one.loc[0, "mean"] == pytest.approx(0.05) and one.loc[0, "n"] == 4
    with pytest.raises(ValueError, match="several rows"):
        paired_diff(df, "family", "f1", "lstm", "cnn")            # depth not in `within`: ambiguous pairs
    with pytest.raises(ValueError, match="'gru'"):
        paired_diff(df, "family", "f1", "gru", "cnn", within=["depth"])
