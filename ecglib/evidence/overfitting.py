"""The overfitting chapter's analysis: generalisation gaps (collapsed and diverged runs excluded), gradient flow
against the gap, and the verdicts on C2, C5, C6 and C9. The depth sweep is evidence.depth's.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats
from ..ledger import Verdict, fmt_ci
from ..plots import FAMILY_LABELS
from ..verdicts import Judgement, all_of, combine, judge, margin, not_worse
from ..protocol import is_usable
from . import DATASETS, keys


def with_gaps(df: pd.DataFrame) -> pd.DataFrame:
    """Add the generalisation gaps (training minus held-out macro-F1), for the runs protocol.is_usable keeps:
    a diverged run has none, nor has a collapsed one (its gap of ~0 measures a failure to fit, not
    generalisation) or an unconverged one (still fitting)."""
    ok = is_usable(df)
    return df.assign(gap=(df["train_macro_f1"] - df["test_macro_f1"]).where(ok),
                     val_gap=(df["train_macro_f1"] - df["val_macro_f1"]).where(ok))


def diff(df: pd.DataFrame, by: str, metric: str, a, b) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of metric at by == a minus by == b, paired by seed; NaN and n = 0 if a side is missing."""
    if df.empty:
        return math.nan, math.nan, math.nan, 0
    d = stats.paired_diff(df, by, metric, a, b, missing="nan").iloc[0]
    return d["mean"], d["low"], d["high"], int(d["n"])


def _excluded(df: pd.DataFrame) -> str:
    n = int((~is_usable(df)).sum())
    return f"; {n} diverged or collapsed run(s) left out of the gaps" if n else ""


def c2_effects(runs: pd.DataFrame, shallow: int, deep: int) -> dict:
    """C2's two comparisons on one dataset: LSTM gap deep minus shallow, and LSTM minus CNN gap over shared depths."""
    lstm = runs[runs["family"] == "lstm"]
    growth = diff(lstm, "depth", "gap", deep, shallow)
    shared = sorted(set(lstm["depth"]) & set(runs.loc[runs["family"] == "cnn", "depth"]))
    both = runs[runs["family"].isin(["lstm", "cnn"]) & runs["depth"].isin(shared)]
    per_seed = both.pivot_table(index="seed", columns="family", values="gap", aggfunc="mean").reindex(
        columns=["cnn", "lstm"])
    d = (per_seed["lstm"] - per_seed["cnn"]).dropna()
    versus = (*stats.mean_ci(d), len(d))
    m = margin("C2", "gap")
    j = all_of({"deeper LSTMs overfit more": judge(*growth, m, what=f"LSTM gap, depth {deep} - {shallow}"),
                "LSTMs overfit more than CNNs": judge(*versus, m, what="LSTM gap - CNN gap")})
    j = Judgement(j.verdict, j.reason + _excluded(both), j.mean, j.low, j.high, j.margin, j.n)
    return {"growth": growth, "versus": versus, "deep": deep, "shallow": shallow, "judgement": j}


def c2_table(c2: dict) -> pd.DataFrame:
    rows = []
    for d, r in c2.items():
        for what, e in ((f"LSTM gap, depth {r['deep']} minus depth {r['shallow']}", r["growth"]),
                        ("LSTM gap minus CNN gap (shared depths)", r["versus"])):
            rows.append({"dataset": DATASETS[d], "comparison": what, "mean": e[0], "low": e[1], "high": e[2],
                         "pairs": e[3], "verdict": r["judgement"].verdict})
    return pd.DataFrame(rows)


def c2(c2: dict, memo: dict, pair, runs) -> Verdict:
    j = combine({DATASETS[d]: r["judgement"] for d, r in c2.items()})
    m = c2[next(iter(c2))]
    summary = (" ".join(f"{DATASETS[d]}: the LSTM's gap changed by {fmt_ci(*r['growth'][:3])} from depth "
                        f"{r['shallow']} to {r['deep']}, and exceeded the CNN's by {fmt_ci(*r['versus'][:3])} "
                        f"({r['judgement'].verdict})." for d, r in c2.items())
               + " With random labels the last-epoch training macro-F1 was "
               + "; ".join(f"{FAMILY_LABELS[f]} {fmt_ci(*memo[(f, True)])}" for f in pair if (f, True) in memo) + ".")
    return Verdict.of(j, claim="C2", chapter="overfitting", summary=summary, figure="fig-overfitting-gap-depth",
                      runs=keys(*runs),
                      effect=f"{DATASETS[next(iter(c2))]}: LSTM train−test macro-F1 gap, depth {m['deep']} minus depth {m['shallow']}")


def flow_ratio(record: dict) -> float:
    """log10 of first- over last-layer gradient norm, averaged over the epochs of one run."""
    ratios = []
    for h in record["history"]:
        norms = [v for k, v in h["grad_norms"].items() if k.startswith("layers.")]
        if len(norms) >= 2 and norms[0] and norms[-1]:
            ratios.append(math.log10(norms[0] / norms[-1]))
    return float(np.mean(ratios)) if ratios else math.nan


def c5(rec: pd.DataFrame) -> Verdict:
    """Spearman rho between gradient flow to the first layer and the gap over recurrent runs: C5 predicts a
    negative correlation (weaker flow, larger gap), its critic a positive one."""
    rho, low, high, n = stats.spearman_ci(rec["flow"], rec["gap"])
    j = judge(rho, low, high, n, margin("C5", "spearman"), claimed="below", what="Spearman rho",
              min_runs=4)
    return Verdict.of(j, claim="C5", chapter="overfitting", figure="fig-overfitting-gradflow", runs=keys(rec),
                      summary=f"Across {n} recurrent runs with two or more layers, the rank correlation between the "
                              f"gradient reaching the first layer (relative to the last) and the train−test gap was "
                              f"{fmt_ci(rho, low, high, 2) if not math.isnan(rho) else 'undefined'}; C5 predicts a "
                              "negative correlation, its critic a positive one.",
                      effect="Spearman ρ, log10 first/last-layer gradient norm vs gap (bootstrap CI over runs)")


def c6(curve_runs: pd.DataFrame, leak_runs: pd.DataFrame, fractions) -> Verdict:
    small, large = min(fractions), max(fractions)
    e = {f: diff(curve_runs[curve_runs["family"] == f], "train_fraction", "gap", small, large) for f in ("cnn", "lstm")}
    leak = diff(leak_runs[leak_runs["family"] == "cnn"], "split", "test_macro_f1", "intra", "inter")
    j = judge(*e["cnn"], margin("C6", "gap"), what=f"CNN gap, {small:.1%} - {large:.1%} of the data")
    return Verdict.of(j, claim="C6", chapter="overfitting", figure="fig-overfitting-curves",
                      runs=keys(curve_runs, leak_runs),
                      summary=f"The CNN's gap with {small:.1%} of the training beats minus with {large:.1%} was "
                              f"{fmt_ci(*e['cnn'][:3])} (LSTM: {fmt_ci(*e['lstm'][:3])}); on the leaky intra-patient "
                              f"split its test macro-F1 rose by {fmt_ci(*leak[:3])}, memorisation of patients.",
                      effect=f"CNN train−test macro-F1 gap, {small:.1%} minus {large:.1%} of the training beats")


def c9(reg_runs: pd.DataFrame, regimes: dict) -> Verdict:
    """The strongest regime narrows the LSTM's gap (claimed below zero) without costing test macro-F1
    (the test difference claimed not below -margin)."""
    reference, strongest = list(regimes)[0], list(regimes)[-1]
    lstm = reg_runs[reg_runs["family"] == "lstm"]
    g = diff(lstm, "regime", "gap", strongest, reference)
    t = diff(lstm, "regime", "test_macro_f1", strongest, reference)
    j = all_of({"the gap narrows": judge(*g, margin("C9", "gap"), claimed="below",
                                         what=f"LSTM gap, '{strongest}' - '{reference}'"),
                "test score kept": not_worse(*t, margin("C9", "test_macro_f1"), what="test macro-F1 change")})
    j = Judgement(j.verdict, j.reason + _excluded(lstm), j.mean, j.low, j.high, j.margin, j.n)
    return Verdict.of(j, claim="C9", chapter="overfitting", figure="fig-overfitting-regularisation", runs=keys(lstm),
                      summary=f"The '{strongest}' regime {regimes[strongest]} changed the LSTM's gap by "
                              f"{fmt_ci(*g[:3])} and its test macro-F1 by {fmt_ci(*t[:3])} against '{reference}'. "
                              "Whether depth is driven by architecture rather than by gradients is the depth "
                              "chapter's question.",
                      effect=f"LSTM train−test macro-F1 gap, '{strongest}' minus '{reference}' regime")
