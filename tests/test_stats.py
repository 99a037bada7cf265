import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ecglib.stats import (FLOAT32_FLOOR, attenuation, bootstrap_ci, ci, estimate, is_bounded, mean_ci, paired_diff,
                          summarise, wilson_ci)


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


def test_estimate_counts_the_values_it_used():
    seeds = pd.Series([0.2, float("nan"), 0.4, 0.6], index=[0, 1, 2, 3])     # seed 1 failed to train
    mean, low, high, n = estimate(seeds)
    assert n == 3 and (mean, low, high) == pytest.approx(mean_ci([0.2, 0.4, 0.6]))
    assert estimate([])[3] == 0 and math.isnan(estimate([])[0])


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


def test_bounded_metrics_get_an_interval_inside_0_1():
    x = [0.55, 0.98, 0.99]                           # a t interval here reaches above 1
    assert mean_ci(x)[2] > 1
    mean, low, high = bootstrap_ci(x)
    assert 0 <= low <= mean <= high <= 1
    assert bootstrap_ci(x) == bootstrap_ci(x)       # seeded: the published number is the same every build
    assert ci(x, "test_macro_f1") == bootstrap_ci(x) and ci(x, "train_loss") == mean_ci(x)
    assert is_bounded("val_acc") and is_bounded("train_f1") and not is_bounded("gap")
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7)) and math.isnan(bootstrap_ci([0.7])[1])
    s = summarise(pd.DataFrame({"g": ["a"] * 3, "test_acc": x}), "g", "test_acc")
    assert s[["mean", "low", "high"]].iloc[0].tolist() == pytest.approx(list(bootstrap_ci(x)))


def test_wilson_interval():
    p, low, high = wilson_ci(7, 10)
    assert p == 0.7 and (low, high) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert wilson_ci(0, 5)[1] == 0 and wilson_ci(5, 5)[2] == pytest.approx(1)
    assert math.isnan(wilson_ci(0, 0)[0])
    with pytest.raises(ValueError, match="k <= n"):
        wilson_ci(6, 5)


def test_paired_ratio_on_log_scale_and_missing_sides():
    df = pd.DataFrame({"m": ["a", "b"] * 4, "seed": np.repeat(range(4), 2),
                       "speed": [4.0, 1.0, 8.0, 2.0, 2.0, 0.5, 4.4, 1.1]})
    r = paired_diff(df, "m", "speed", "a", "b", log=True).iloc[0]
    assert r["mean"] == pytest.approx(4.0) and r["low"] == pytest.approx(4.0)
    nan_row = paired_diff(df, "m", "speed", "a", "c", missing="nan").iloc[0]
    assert nan_row["n"] == 0 and math.isnan(nan_row["mean"])
    with pytest.raises(ValueError, match="no rows"):
        paired_diff(df, "m", "speed", "a", "c")
    g = summarise(df, "m", "speed", log=True).set_index("m")
    assert g.loc["a", "mean"] == pytest.approx(np.exp(np.log([4, 8, 2, 4.4]).mean()))


def test_attenuation_same_method_across_time_and_layers():
    layers = np.array([1e-3, 1e-2, 1e-1, 1.0])           # 3 orders from the readout (last) to the input side
    a = attenuation(layers)
    assert a["orders"] == pytest.approx(3) and not a["censored"] and a["resolved"] == 4
    time = 10.0 ** -np.linspace(5, 0, 200)               # 5 orders across 200 steps, ends averaged over 20
    t = attenuation(time)
    assert 4 < t["orders"] < 5 and not t["censored"]
    under = np.r_[np.zeros(50), 1e-44, 10.0 ** -np.linspace(30, 0, 149)]   # float32 underflow at the far end
    u = attenuation(under, floor=FLOAT32_FLOOR)
    assert u["censored"] and u["resolved"] == 149
    assert u["orders"] == pytest.approx(np.log10(under[-20:].mean() / FLOAT32_FLOOR))   # a bound, not a fit
    assert u["orders"] < 40                               # never extrapolated past the floor
    assert math.isnan(attenuation([1.0])["orders"]) and math.isnan(attenuation([1.0, np.nan])["orders"])
    assert math.isnan(attenuation([1.0, 0.0])["orders"])  # readout end below resolution
    # the default floor is float64's (state_gradients works in float64): 1e-44 is resolved there
    assert not attenuation([1e-44, 1.0])["censored"] and attenuation([1e-44, 1.0])["orders"] == pytest.approx(44)
