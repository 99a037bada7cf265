"""Means and 95% confidence intervals over seeds, and paired differences between two conditions.

Every number the book reports is a mean over independent seeds with a t interval, because a
handful of seeds is all a depth sweep can afford and the normal interval would be too narrow.
Missing values (a diverged run has no test loss) are dropped and show up as a smaller `n`.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student t interval of the mean; no interval from fewer than two values."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) == 1:
        return m, math.nan, math.nan
    if np.ptp(x) == 0:  # identical values: scipy would answer nan for a zero-width interval
        return m, m, m
    low, high = st.t.interval(level, len(x) - 1, loc=m, scale=st.sem(x))
    return m, float(low), float(high)


def _columns(df: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"{what} {missing} not in the table; columns are: {', '.join(map(str, df.columns))}")


def _as_list(by) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def summarise(df: pd.DataFrame, by, metric: str, level: float = 0.95) -> pd.DataFrame:
    """One row per group of `by`: by..., mean, low, high, n (n counts the non-missing values)."""
    by = _as_list(by)
    _columns(df, by + [metric], "columns")
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        mean, low, high = mean_ci(g[metric], level)
        rows.append((*key, mean, low, high, int(g[metric].notna().sum())))
    return pd.DataFrame(rows, columns=by + ["mean", "low", "high", "n"])


def paired_diff(df: pd.DataFrame, by: str, metric: str, a, b, within=(), pair: str = "seed",
                level: float = 0.95) -> pd.DataFrame:
    """Mean and CI of `metric` at by == a minus by == b, paired by `pair` (seed).

    Pairing removes what two runs of the same seed share (validation records, batch order), so the
    interval is about the difference itself. `within` lists columns to compare inside, e.g.
    `paired_diff(runs, "family", "test_macro_f1", "lstm", "cnn", within=["depth"])` gives one row
    per depth: within..., mean, low, high, n (number of pairs).
    """
    within = _as_list(within)
    _columns(df, [by, metric, pair] + within, "columns")
    for v in (a, b):
        if not (df[by] == v).any():
            raise ValueError(f"no rows with {by} == {v!r}; values present: {sorted(df[by].unique(), key=str)}")
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
    if not within:
        return pd.DataFrame([[*mean_ci(diff["diff"], level), len(diff)]], columns=["mean", "low", "high", "n"])
    rows = [(*key, *mean_ci(g["diff"], level), len(g)) for key, g in diff.groupby(within, sort=True)]
    return pd.DataFrame(rows, columns=within + ["mean", "low", "high", "n"])


def challenge_f1(record: dict) -> float:
    """The PhysioNet/CinC 2017 score of a stored run: mean test F1 over N, A and O (noise is not scored)."""
    f1 = dict(zip(record["classes"], record["test"]["f1"]))
    return float(np.mean([math.nan if f1[c] is None else f1[c] for c in ("N", "A", "O")]))
