"""Means and 95% confidence intervals over seeds, paired differences, and gradient attenuation.

Which interval, by what is measured:
- unbounded quantities (losses, differences, log-ratios): Student t interval of the mean
  (`mean_ci`), because a handful of seeds is all a sweep can afford and the normal interval
  would be too narrow;
- metrics bounded to [0, 1] (accuracy, F1): a BCa bootstrap interval of the mean
  (`bootstrap_ci`), which stays inside the range of the data and so inside [0, 1]; the resampling
  is seeded, so a published interval is the same on every build. With three seeds the bootstrap
  has few distinct resamples and is narrower than the t interval: read it as a description of
  the seeds, and base decisions on paired differences (t intervals), as the verdicts do;
- proportions of counts (k of n): the Wilson score interval (`wilson_ci`);
- positive ratios (speed-ups): t interval on the log scale, reported back as a geometric mean
  (`log=True` in `summarise` and `paired_diff`).
Missing values (a diverged run has no test loss) are dropped and show up as a smaller `n`.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student t interval of the mean; no interval from fewer than two values."""
    x, trivial = _values(values, level, np.mean)
    if trivial:
        return trivial
    m = float(x.mean())
    low, high = st.t.interval(level, len(x) - 1, loc=m, scale=st.sem(x))
    return m, float(low), float(high)


def estimate(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of per-seed values, missing ones dropped: the shape the evidence tables print."""
    v = pd.Series(values, dtype=float).dropna()
    return (*mean_ci(v, level), len(v))


def _values(values, level, statistic):
    """The non-missing values, and the answer when no interval is to be computed (else None):
    all NaN for no values, no interval from one value, a zero-width one from identical values
    (scipy would answer NaN)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return x, (math.nan, math.nan, math.nan)
    est = float(statistic(x))
    if len(x) == 1:
        return x, (est, math.nan, math.nan)
    if np.ptp(x) == 0:
        return x, (est, est, est)
    return x, None


BOOTSTRAP_SEED = 0       # fixed, so every build publishes the same interval
BOOTSTRAP_RESAMPLES = 9999
BOUNDED_SUFFIXES = ("acc", "macro_f1", "f1", "score")  # metric names whose values lie in [0, 1]


def is_bounded(metric: str) -> bool:
    """True for the metrics in [0, 1] (test_acc, val_macro_f1, train_f1, ...), by name."""
    return metric.split("_", 1)[-1] in BOUNDED_SUFFIXES or metric in BOUNDED_SUFFIXES


def bootstrap_ci(values, statistic=np.mean, level: float = 0.95, seed: int = BOOTSTRAP_SEED,
                 n_resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float]:
    """(statistic, low, high): seeded BCa bootstrap interval; NaN dropped; no interval from fewer than two values."""
    x, trivial = _values(values, level, statistic)
    if trivial:
        return trivial
    est = float(statistic(x))
    ci = st.bootstrap((x,), statistic, confidence_level=level, method="BCa", n_resamples=n_resamples,
                      rng=np.random.default_rng(seed)).confidence_interval
    return est, float(ci.low), float(ci.high)


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """(k/n, low, high): Wilson score interval of a proportion; NaN for n = 0."""
    if n == 0:
        return math.nan, math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    ci = st.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def _columns(df: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"{what} {missing} not in the table; columns are: {', '.join(map(str, df.columns))}")


def _as_list(by) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def ci(values, metric: str = "", level: float = 0.95, bounded: bool | None = None) -> tuple[float, float, float]:
    """The interval the book uses for `metric`: BCa bootstrap if it is bounded to [0, 1], else the t interval."""
    bounded = is_bounded(metric) if bounded is None else bounded
    return bootstrap_ci(values, level=level) if bounded else mean_ci(values, level)


def summarise(df: pd.DataFrame, by, metric: str, level: float = 0.95, bounded: bool | None = None,
              log: bool = False) -> pd.DataFrame:
    """One row per group of `by`: by..., mean, low, high, n (n counts the non-missing values).

    bounded: None decides by the metric's name (`is_bounded`). log: geometric mean and t interval on the
    log scale, for positive quantities (speeds, times), so intervals stay positive and ratios symmetric.
    """
    by = _as_list(by)
    _columns(df, by + [metric], "columns")
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        v = g[metric].astype(float)
        if log:
            mean, low, high = (math.exp(c) if not math.isnan(c) else c for c in mean_ci(np.log(v), level))
        else:
            mean, low, high = ci(v, metric, level, bounded)
        rows.append((*key, mean, low, high, int(v.notna().sum())))
    return pd.DataFrame(rows, columns=by + ["mean", "low", "high", "n"])


def paired_diff(df: pd.DataFrame, by: str, metric: str, a, b, within=(), pair: str = "seed",
                level: float = 0.95, log: bool = False, missing: str = "raise") -> pd.DataFrame:
    """Mean and t interval of `metric` at by == a minus by == b, paired by `pair` (seed).

    Pairing removes what two runs of the same seed share (validation records, batch order), so the
    interval is about the difference itself. `within` lists columns to compare inside, e.g.
    `paired_diff(runs, "family", "test_macro_f1", "lstm", "cnn", within=["depth"])` gives one row
    per depth: within..., mean, low, high, n (number of pairs). log: the ratio a / b of a positive
    metric, as a geometric mean with its interval. missing: "raise" when a side has no rows, or
    "nan" for a row of NaN with n = 0 (a family whose runs all failed must not break a page).
    """
    within = _as_list(within)
    _columns(df, [by, metric, pair] + within, "columns")
    if missing not in ("raise", "nan"):
        raise ValueError(f"missing must be 'raise' or 'nan', got {missing!r}")
    for v in (a, b):
        if not (df[by] == v).any():
            if missing == "nan" and not within:
                return pd.DataFrame([[math.nan, math.nan, math.nan, 0]], columns=["mean", "low", "high", "n"])
            raise ValueError(f"no rows with {by} == {v!r}; values present: {sorted(df[by].unique(), key=str)}")
    if log:
        df = df.assign(**{metric: np.log(df[metric].astype(float))})
    keys = within + [pair]
    sides = []
    for v in (a, b):
        side = df[df[by] == v]
        dup = side.duplicated(keys)
        if dup.any():
            raise ValueError(
                f"{by} == {v!r} has several rows for the same {keys} (e.g. {side[dup][keys].iloc[0].to_dict()}); "
                "filter the table or add the column that tells them apart to `within`"
            )
        sides.append(side.set_index(keys)[metric])
    diff = (sides[0] - sides[1]).dropna().rename("diff").reset_index()
    back = (lambda t: tuple(math.exp(c) if not math.isnan(c) else c for c in t)) if log else (lambda t: t)
    if not within:
        return pd.DataFrame([[*back(mean_ci(diff["diff"], level)), len(diff)]], columns=["mean", "low", "high", "n"])
    rows = [(*(key if isinstance(key, tuple) else (key,)), *back(mean_ci(g["diff"], level)), len(g))
            for key, g in diff.groupby(within, sort=True, dropna=False)]
    return pd.DataFrame(rows, columns=within + ["mean", "low", "high", "n"])


def challenge_f1(record: dict) -> float:
    """The PhysioNet/CinC 2017 score of a stored run: mean test F1 over N, A and O (noise is not scored)."""
    f1 = dict(zip(record["classes"], record["test"]["f1"]))
    return float(np.mean([math.nan if f1[c] is None else f1[c] for c in ("N", "A", "O")]))


# Gradient attenuation, one method for every profile (across time or across layers, both read from one
# diagnostics.state_gradients matrix): orders of magnitude between the readout end and the far end of a profile of
# gradient magnitudes, each end the mean of its outer `window` share (at least one point), computed in float64
# logs. Values below `floor` are below the resolution of the arithmetic that produced them (subnormal or flushed to
# zero): a far end there is not extrapolated; the attenuation is reported as a lower bound, with the number of
# steps over which the gradient stayed resolved. The matrix is computed in float64, so the floor is float64's;
# FLOAT32_FLOOR is the one for profiles computed in float32.
FLOAT32_FLOOR = float(np.finfo(np.float32).tiny)  # 1.2e-38, the smallest normal float32
FLOAT64_FLOOR = float(np.finfo(np.float64).tiny)  # 2.2e-308


def attenuation(profile, window: float = 0.1, floor: float = FLOAT64_FLOOR) -> dict:
    """Orders of magnitude a gradient loses from the readout end (last entry) to the far end (first entry).

    Returns {orders, censored, resolved, steps}: orders = log10(near / far) (positive: the gradient shrinks
    away from the readout); censored = the far end is below `floor`: orders is then log10(near / floor), a lower
    bound on what is lost within resolved + 1 entries of the readout, never an extrapolation; resolved = how many entries, counted from the readout end, stay at or above the floor
    before the first that falls below it; steps = the profile's length. NaN orders if the profile is shorter
    than two entries or its readout end is itself below the floor.
    """
    p = np.asarray(profile, dtype=np.float64).ravel()
    p = np.where(np.isfinite(p), np.abs(p), np.nan)
    out = {"orders": math.nan, "censored": False, "resolved": 0, "steps": len(p)}
    if len(p) < 2 or np.isnan(p).any():
        return out
    w = max(1, int(len(p) * window))
    below = np.flatnonzero(p < floor)
    out["resolved"] = int(len(p) - (below[-1] + 1)) if len(below) else len(p)
    near, far = p[-w:].mean(), p[:w]
    if near < floor:
        return out
    out["censored"] = bool((far < floor).any())
    far_mean = floor if out["censored"] else far.mean()
    out["orders"] = float(np.log10(near) - np.log10(far_mean))
    return out
