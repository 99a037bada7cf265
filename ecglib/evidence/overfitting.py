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


# ---- the chapter's settings, sweeps, texts and figures (each figure one named function) ----

def check_params(pair_depth: int, conv_depths, rnn_depths, regimes: dict) -> None:
    """Fail before training on parameters the chapter cannot use, naming the parameter and the fix."""
    if pair_depth not in conv_depths or pair_depth not in rnn_depths:
        raise ValueError(f"pair_depth {pair_depth} must be in conv_depths {conv_depths} and rnn_depths {rnn_depths}, "
                         "so the pair's base runs are the depth sweep's")
    if len(regimes) < 2:
        raise ValueError(f"regimes needs a reference (first) and a regularised regime (last); got {list(regimes)}")


def describe(profile: str, seeds: int, mitdb_base: dict, cinc_base: dict, pair_depth: int) -> str:
    return (f"Profile **{profile}**: {seeds} seed(s) per configuration. MIT-BIH beats at {mitdb_base['fs']:g} Hz, "
            f"{mitdb_base['train_fraction']:.0%} of the DS1 training beats, {mitdb_base['epochs']} epoch(s); "
            f"CinC 2017 at {cinc_base['fs']:g} Hz, {cinc_base['crop_s']:g} s crops, "
            f"{cinc_base['train_fraction']:.0%} of the training records, {cinc_base['epochs']} epoch(s). "
            f"The CNN and LSTM compared in experiments 2-6 have {pair_depth} layers of width {mitdb_base['width']}.")


def train(configs, executor="local", fresh=False) -> pd.DataFrame:
    """Stored runs of `configs` (training the missing), with their gaps (diverged and collapsed runs have none)."""
    from .. import experiments
    return with_gaps(experiments.run_sweep(configs, executor=executor, fresh=fresh))


def regime_sweep(base: dict, regimes: dict, pair, seeds) -> tuple[list, dict]:
    """Every regime (a change to `base`) for each family of the pair: configs and key -> regime name."""
    from .. import experiments
    regime_of, configs = {}, []
    for name, options in regimes.items():
        for c in experiments.sweep({**base, **options}, family=list(pair), seed=list(seeds)):
            regime_of[c.key] = name
            configs.append(c)
    return configs, regime_of


def _plt():
    import matplotlib.pyplot as plt
    return plt


def _ci_points(ax, summary, x, order, families, xlabels):
    """Mean and 95% CI per family at each category of `x`, families side by side."""
    from ..plots import FAMILY_COLORS
    for i, family in enumerate(families):
        g = summary[summary["family"] == family].set_index(x).reindex(order)
        pos = np.arange(len(order)) + (i - (len(families) - 1) / 2) * 0.2
        err = np.nan_to_num([g["mean"] - g["low"], g["high"] - g["mean"]])
        ax.errorbar(pos, g["mean"], yerr=err, fmt="o", capsize=3, color=FAMILY_COLORS[family],
                    label=FAMILY_LABELS[family])
    ax.set_xticks(range(len(order)), xlabels)
    ax.set_xlim(-0.5, len(order) - 0.5)


def _log_axis(ax, values, base=2, fmt="{:g}"):
    """A log x axis ticked at the values used, labelled plainly."""
    ax.set_xscale("log", base=base)
    ax.set_xticks(sorted(set(values)), [fmt.format(v) for v in sorted(set(values))])
    ax.xaxis.set_minor_formatter(_plt().NullFormatter())


def _train_test_lines(ax, runs: pd.DataFrame, x: str, label_train: bool):
    """Training (dashed) and test (solid) macro-F1 per family against `x`, with 95% CI bands."""
    from ..plots import FAMILY_COLORS
    for metric, ls in (("train_macro_f1", "--"), ("test_macro_f1", "-")):
        s = stats.summarise(runs[runs["status"] == "ok"], ["family", x], metric)
        for family, g in s.groupby("family", sort=False):
            g = g.sort_values(x)
            c = FAMILY_COLORS[family]
            name = f"{FAMILY_LABELS[family]}, {'train' if ls == '--' else 'test'}" if label_train else (
                FAMILY_LABELS[family] if ls == "-" else None)
            ax.plot(g[x], g["mean"], ls=ls, marker="o", color=c, label=name)
            ax.fill_between(g[x], g["low"], g["high"], color=c, alpha=0.15, lw=0)


def fig_gap_depth(depth_runs: pd.DataFrame):
    """Generalisation gap versus depth per database (fig-overfitting-gap-depth)."""
    from ..plots import ci_lines, legend
    fig, axes = _plt().subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, (dataset, title) in zip(axes, [("mitdb", "MIT-BIH, inter-patient"), ("cinc2017", "CinC 2017")]):
        ci_lines(ax, stats.summarise(depth_runs[depth_runs["dataset"] == dataset], ["family", "depth"], "gap"),
                 x="depth", logx=True)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set(title=title, xlabel="depth (stacked layers)", ylabel="train − test macro-F1")
    legend(fig, axes, ncol=5)
    return fig


def fig_gap_params(depth_runs: pd.DataFrame):
    """MIT-BIH: train and test macro-F1 versus depth, and each run's gap against its parameters."""
    from ..plots import FAMILY_COLORS, legend
    mit = depth_runs[depth_runs["dataset"] == "mitdb"]
    fig, axes = _plt().subplots(1, 2, figsize=(9, 4))
    _train_test_lines(axes[0], mit, "depth", label_train=False)
    _log_axis(axes[0], mit["depth"])
    axes[0].set(title="Train (dashed) and test (solid)", xlabel="depth (stacked layers)", ylabel="macro-F1")
    gaps = mit.dropna(subset=["gap"])   # unusable runs have no gap
    for family, g in gaps.groupby("family", sort=False):
        axes[1].scatter(g["n_params"], g["gap"], color=FAMILY_COLORS[family], label=FAMILY_LABELS[family], s=25)
    if len(gaps):
        axes[1].set_xscale("log")
        axes[1].xaxis.set_minor_formatter(_plt().NullFormatter())
    else:
        axes[1].text(0.5, 0.5, "no usable run has a gap", ha="center", transform=axes[1].transAxes)
    axes[1].axhline(0, color="0.4", lw=0.8)
    axes[1].set(title="Gap versus parameters", xlabel="parameters (log scale)", ylabel="train − test macro-F1")
    legend(fig, axes, ncol=5)
    return fig


def fig_curves(curve_runs: pd.DataFrame, pair_depth: int):
    """Learning curves: train and test macro-F1 versus the share of training beats (fig-overfitting-curves)."""
    fig, ax = _plt().subplots(figsize=(8.5, 4.5))
    _train_test_lines(ax, curve_runs, "train_fraction", label_train=True)
    _log_axis(ax, curve_runs["train_fraction"], base=10, fmt="{:.1%}")
    ax.set(title=f"Learning curves, depth {pair_depth}", xlabel="share of the DS1 training beats (log scale)",
           ylabel="macro-F1")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def c6_text(curve_runs: pd.DataFrame, pair, fractions) -> str:
    small, large = min(fractions), max(fractions)
    c6 = {f: diff(curve_runs[curve_runs["family"] == f], "train_fraction", "gap", small, large) for f in pair}
    return (f"Gap with {small:.1%} minus gap with {large:.1%} of the training beats: "
            + "; ".join(f"{FAMILY_LABELS[f]} {fmt_ci(*c6[f][:3])}" for f in pair) + " (paired by seed).")


def _categories(runs: pd.DataFrame, x: str, order, pair, xlabels, metrics, xlabel: str, zero_on: int | None):
    """Two panels of per-family CI points over the categories of `x` (regimes, splits, label sets)."""
    from ..plots import legend
    fig, axes = _plt().subplots(1, 2, figsize=(9, 4))
    for ax, (metric, label) in zip(axes, metrics):
        _ci_points(ax, stats.summarise(runs, ["family", x], metric), x, order, pair, xlabels)
        ax.set(xlabel=xlabel, ylabel=label, title=label)
    if zero_on is not None:
        axes[zero_on].axhline(0, color="0.4", lw=0.8)
    legend(fig, axes)
    return fig


GAP, TEST_F1 = ("gap", "train − test macro-F1"), ("test_macro_f1", "test macro-F1")


def fig_regimes(reg_runs: pd.DataFrame, regimes: dict, pair):
    order = list(regimes)
    fig = _categories(reg_runs, "regime", order, pair, order, [GAP, TEST_F1], "regime", 0)
    for ax in fig.axes:
        ax.tick_params(axis="x", rotation=25)
    return fig


def regime_text(reg_runs: pd.DataFrame, regimes: dict, n_epochs: dict) -> str:
    """The regimes and how many runs early stopping ended early. n_epochs: key -> epochs run (from the records)."""
    stopped = reg_runs["status"].eq("ok") & (reg_runs["key"].map(n_epochs) < reg_runs["epochs"])
    return ("Regimes: " + "; ".join(f"**{name}** {options or '(the base settings)'}" for name, options in regimes.items())
            + f". The reference is *{list(regimes)[0]}*. Early stopping ended {int(stopped.sum())} of {len(reg_runs)} "
            "runs before their last epoch.")


def regime_table(reg_runs: pd.DataFrame, regimes: dict, pair) -> pd.DataFrame:
    """Each regime minus the reference (the first), paired by seed: change in gap and in test macro-F1."""
    reference = list(regimes)[0]
    rows = []
    for name in list(regimes)[1:]:
        for family in pair:
            f = reg_runs[reg_runs["family"] == family]
            g, t = diff(f, "regime", "gap", name, reference), diff(f, "regime", "test_macro_f1", name, reference)
            rows.append({"regime": name, "family": FAMILY_LABELS[family], "Δ gap (95% CI)": fmt_ci(*g[:3]),
                         "Δ test macro-F1 (95% CI)": fmt_ci(*t[:3]), "pairs": g[3]})
    return pd.DataFrame(rows)


def memo_curves(records: list[dict]) -> pd.DataFrame:
    """Training macro-F1 per epoch of each run, from its history: family, shuffled, seed, epoch, train_f1."""
    return pd.DataFrame([{**{k: r["config"][k] for k in ("family", "shuffle_labels", "seed")},
                          "epoch": h["epoch"], "train_f1": h["train_f1"]}
                         for r in records for h in r["history"]]).rename(columns={"shuffle_labels": "shuffled"})


def fig_memorisation(curves: pd.DataFrame):
    from ..plots import FAMILY_COLORS
    fig, ax = _plt().subplots(figsize=(8.5, 4.5))
    for shuffled, ls in ((False, "-"), (True, "--")):
        s = stats.summarise(curves[curves["shuffled"] == shuffled], ["family", "epoch"], "train_f1")
        for family, g in s.groupby("family", sort=False):
            c = FAMILY_COLORS[family]
            ax.plot(g["epoch"], g["mean"], ls=ls, marker="o", ms=3, color=c,
                    label=f"{FAMILY_LABELS[family]}, {'random' if shuffled else 'true'} labels")
            ax.fill_between(g["epoch"], g["low"], g["high"], color=c, alpha=0.15, lw=0)
    ax.set(title="Fitting true and random labels", xlabel="epoch", ylabel="training macro-F1 (running, per epoch)",
           ylim=(0, 1.02))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def memorised(curves: pd.DataFrame) -> dict:
    """(family, shuffled) -> (mean, low, high) of the training macro-F1 at each run's last epoch."""
    last = curves[curves["epoch"] == curves.groupby(["family", "shuffled", "seed"])["epoch"].transform("max")]
    return {(f, sh): stats.mean_ci(g["train_f1"]) for (f, sh), g in last.groupby(["family", "shuffled"])}


def memo_text(memo: dict, pair) -> str:
    part = lambda shuffled: "; ".join(f"{FAMILY_LABELS[f]} {fmt_ci(*memo[(f, shuffled)])}" for f in pair
                                      if (f, shuffled) in memo)
    return (f"Training macro-F1 at the last epoch with **random** labels: {part(True)}. "
            f"With the true labels: {part(False)}.")


def fig_leakage(leak_runs: pd.DataFrame, pair):
    return _categories(leak_runs[leak_runs["status"] == "ok"], "split", ["inter", "intra"], pair,
                       ["inter-patient", "intra-patient"], [TEST_F1, ("test_acc", "test accuracy")], "split", None)


# DS2 normal beats / all DS2 beats, de Chazal's reference counts (shared/anchors.md)
DS2_MAJORITY = 44259 / 49712


def leakage_table(leak_runs: pd.DataFrame, pair_depth: int) -> pd.DataFrame:
    m = DS2_MAJORITY
    rows = [{"source": "de Chazal et al. 2004, linear discriminant", "split": "inter-patient (DS1 → DS2)",
             "accuracy": "0.862", "macro-F1": "not reported"},
            {"source": "Kachuee et al. 2018, residual CNN", "split": "by beat (patients shared), 125 Hz",
             "accuracy": "0.934", "macro-F1": "not reported"},
            {"source": "always 'normal'", "split": "inter-patient (DS2)", "accuracy": f"{m:.3f}",
             "macro-F1": f"{2 * m / (1 + m) / 5:.3f}"}]
    for (family, split), g in leak_runs[leak_runs["status"] == "ok"].groupby(["family", "split"]):
        rows.append({"source": f"this book: {FAMILY_LABELS[family]}, depth {pair_depth}",
                     "split": {"inter": "inter-patient (DS1 → DS2)", "intra": "by beat (patients shared)"}[split],
                     "accuracy": fmt_ci(*stats.ci(g["test_acc"], "test_acc")),
                     "macro-F1": fmt_ci(*stats.ci(g["test_macro_f1"], "test_macro_f1"))})
    return pd.DataFrame(rows)


def paired_text(runs: pd.DataFrame, pair, by: str, metric: str, a, b, what: str) -> str:
    """'<what>: LSTM 0.1 [..]; CNN ..' for metric at a minus at b, per family, paired by seed."""
    d = {f: diff(runs[runs["family"] == f], by, metric, a, b) for f in pair}
    return f"{what} (paired by seed): " + "; ".join(f"{FAMILY_LABELS[f]} {fmt_ci(*d[f][:3])}" for f in pair) + "."


def fig_label_noise(noise_runs: pd.DataFrame, pair):
    return _categories(noise_runs, "labels", ["final", "original"], pair, ["final labels", "original labels"],
                       [TEST_F1, GAP], "training labels (test: final)", 1)


def flow_table(depth_runs: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """MIT-BIH depth-sweep runs of two or more layers with a gap, and their gradient flow ratio."""
    flow = depth_runs.merge(pd.DataFrame({"key": r["key"], "flow": flow_ratio(r)} for r in records), on="key")
    return flow[(flow["dataset"] == "mitdb") & (flow["depth"] >= 2)].dropna(subset=["flow", "gap"])


def fig_gradflow(flow: pd.DataFrame, rnn_families, rho: float):
    from ..plots import FAMILY_COLORS
    fig, ax = _plt().subplots(figsize=(8.5, 4.5))
    for family, g in flow.groupby("family", sort=False):
        ax.scatter(g["flow"], g["gap"], color=FAMILY_COLORS[family], s=18 + 6 * g["depth"],
                   alpha=0.8 if family in rnn_families else 0.35, label=FAMILY_LABELS[family])
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set(title=f"Gradient flow and overfitting (recurrent runs: Spearman ρ = {rho:.2f})",
           xlabel="log10(first-layer / last-layer gradient norm)", ylabel="train − test macro-F1")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="marker size ∝ depth")
    return fig
