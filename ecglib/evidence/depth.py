"""The depth chapter's analysis: the depth sweeps (shared with the overfitting chapter), gradient attenuation
across layers and across time (one method: stats.attenuation), smallest sufficient depth, and the verdicts
on C1, C4 and C8 (C13, the depth each task needs, is the features chapter's).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch

from .. import experiments, models, stats
from ..ledger import Verdict, fmt_ci
from ..plots import FAMILY_LABELS
from ..verdicts import MIN_RUNS, Judgement, all_of, combine, judge, margin, not_worse
from . import DATASETS, keys, recipe


def depth_sweep(base: dict, conv_families, rnn_families, conv_depths, rnn_depths, seeds) -> list:
    """The depth sweep on one database: every conv family at conv_depths, every recurrent one at rnn_depths.
    Defined once: the depth, overfitting and features chapters read the same stored runs from it."""
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    return (experiments.sweep(base, family=list(conv_families), depth=list(conv_depths), seed=seeds)
            + experiments.sweep(base, family=list(rnn_families), depth=list(rnn_depths), seed=seeds))


# ---- gradient attenuation, per stored run ----

def layer_sizes(config: dict, n_classes: int) -> list[int]:
    """Parameters in each stacked layer, from a model built on the meta device (no memory, no data)."""
    options = {k: config[k] for k in models.OPTIONS[config["family"]]}
    with torch.device("meta"):
        model = models.build_model(config["family"], config["depth"], config["width"], n_classes=n_classes, **options)
    return [sum(p.numel() for p in layer.parameters()) for layer in model.layers]


def rms_profile(norms: dict, record: dict) -> np.ndarray:
    """RMS gradient per weight of layers.0 ... layers.{depth-1}: the layer's L2 norm / sqrt(its size), so a
    layer with more weights does not look stronger."""
    sizes = layer_sizes(record["config"], len(record["classes"]))
    values = [norms.get(f"layers.{i}") for i in range(len(sizes))]
    return np.array([np.nan if v is None else v / math.sqrt(n) for v, n in zip(values, sizes)])


def layer_attenuation(record: dict, when: str = "init") -> float:
    """Orders of magnitude the RMS gradient loses from the last layer to the first: at initialisation
    (`grad_norms_init` probe) or in the last training epoch ("final"). NaN for one layer or missing norms."""
    norms = record["probes"]["grad_norms_init"] if when == "init" else record["history"][-1]["grad_norms"]
    return stats.attenuation(rms_profile(norms, record))["orders"]


def time_attenuation(record: dict) -> dict:
    """stats.attenuation of the input gradient |d logit / d x_t| from the last input step back to the first,
    with `resolved` converted to input samples (the stored curve may be subsampled)."""
    probe = record["probes"]["input_grad"]
    a = stats.attenuation(probe["curve"])
    a["resolved"] = int(round(a["resolved"] * probe["length"] / max(1, len(probe["curve"]))))
    a["steps"] = probe["length"]
    return a


def gradient_table(runs: pd.DataFrame, records: dict[str, dict]) -> pd.DataFrame:
    """One row per run: layer attenuation at init and after training, time attenuation (a lower bound when
    `time_censored`) and the input samples over which the time gradient stayed above float32 resolution."""
    out = runs[["dataset", "family", "depth", "seed", "key", "status"]].copy()
    t = [time_attenuation(records[k]) if "input_grad" in records[k]["probes"] else stats.attenuation([])
         for k in out["key"]]
    out["layer_init"] = [layer_attenuation(records[k], "init") for k in out["key"]]
    out["layer_final"] = [layer_attenuation(records[k], "final") for k in out["key"]]
    out["time"] = [a["orders"] for a in t]
    out["time_censored"] = [a["censored"] for a in t]
    out["time_resolved"] = [a["resolved"] for a in t]
    out["time_steps"] = [a["steps"] for a in t]
    return out


# ---- depth choices ----

def sufficient_depth(df: pd.DataFrame, family: str) -> float:
    """Smallest depth whose mean validation macro-F1 reaches the lower CI bound of the best depth's;
    NaN when the family has no finished run (every run diverged)."""
    s = stats.summarise(df[df["family"] == family], "depth", "val_macro_f1").dropna(subset=["mean"])
    if s.empty:
        return math.nan
    best = s.loc[s["mean"].idxmax()]
    bar = best["low"] if not math.isnan(best["low"]) else best["mean"]
    return int(s[s["mean"] >= bar]["depth"].min())


def best_config(df: pd.DataFrame, families) -> tuple[str, int] | None:
    """(family, depth) with the highest mean validation macro-F1 among `families`; None if no run finished."""
    s = stats.summarise(df[df["family"].isin(families)], ["family", "depth"], "val_macro_f1").dropna(subset=["mean"])
    if s.empty:
        return None
    best = s.loc[s["mean"].idxmax()]
    return best["family"], int(best["depth"])


def depth_effect(df: pd.DataFrame, family: str, metric: str, shallow: int, deep: int) -> pd.Series:
    """Paired over seeds: metric at `deep` minus at `shallow` for one family (NaN row if either is missing)."""
    d = df[(df["family"] == family) & df["depth"].isin([shallow, deep])]
    if d.empty:
        return pd.Series({"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0})
    return stats.paired_diff(d, "depth", metric, deep, shallow, missing="nan").iloc[0]


def best_pair(df: pd.DataFrame, conv_families, rnn_families) -> dict:
    """The best recurrent and best conv configuration (chosen on validation) and their paired test difference."""
    conv, rnn = best_config(df, conv_families), best_config(df, rnn_families)
    nan = pd.Series({"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0})
    if conv is None or rnn is None:
        return {"conv": conv, "rnn": rnn, "diff": nan}
    pick = lambda fd: df[(df["family"] == fd[0]) & (df["depth"] == fd[1])]
    pair = pd.concat([pick(rnn).assign(side="rnn"), pick(conv).assign(side="conv")])
    return {"conv": conv, "rnn": rnn, "diff": stats.paired_diff(pair, "side", "test_macro_f1", "rnn", "conv").iloc[0]}


def label(fd) -> str:
    return "no finished run" if fd is None else f"{FAMILY_LABELS[fd[0]]} at depth {fd[1]}"


def _ci(row) -> str:
    return fmt_ci(row["mean"], row["low"], row["high"])


def _est(values) -> tuple:
    """(mean, low, high, n) of a Series of per-seed values, NaN dropped."""
    v = pd.Series(values, dtype=float).dropna()
    return (*stats.mean_ci(v), len(v))


def _per_seed(df: pd.DataFrame, family: str, metric: str, shallow: int, deep: int) -> pd.Series:
    d = df[df["family"] == family].pivot_table(index="seed", columns="depth", values=metric)
    d = d.reindex(columns=[shallow, deep])  # a depth whose runs all lack the metric stays, as NaN
    return d[deep] - d[shallow]


# ---- verdicts ----

def c1(runs: dict[str, pd.DataFrame], grads: pd.DataFrame, shallow: int, deep: int) -> Verdict:
    """Harder to train (LSTM's training-loss change with depth minus the CNN's, claimed above zero) and because
    gradients vanish across layers (deep LSTM's attenuation at init minus the deep CNN's, claimed above zero)."""
    per, used = {}, []
    for name, df in runs.items():
        harder = _est(_per_seed(df, "lstm", "train_loss", shallow, deep) - _per_seed(df, "cnn", "train_loss", shallow, deep))
        g = grads[(grads["dataset"] == name) & (grads["depth"] == deep)]
        vanish = _est(g[g["family"] == "lstm"].set_index("seed")["layer_init"]
                      - g[g["family"] == "cnn"].set_index("seed")["layer_init"])
        per[DATASETS[name]] = all_of({
            "harder to train": judge(*harder, margin("C1", "train_loss"), what="training-loss change, LSTM - CNN"),
            "gradients vanish more": judge(*vanish, margin("C1", "layer_decay"),
                                           what="orders of gradient lost across layers, LSTM - CNN"),
        })
        used += list(df[df["family"].isin(["lstm", "cnn"]) & df["depth"].isin([shallow, deep])]["key"])
    j = combine(per)
    return Verdict.of(j, claim="C1", chapter="depth", figure="fig-depth-trainloss", runs=used,
                      summary=" ".join(f"{n}: {v.verdict}." for n, v in per.items()),
                      effect=f"{next(iter(per))} training loss, (LSTM depth {deep} - {shallow}) - (CNN depth {deep} - {shallow})")


def c4(runs: dict[str, pd.DataFrame], conv_families, rnn_families) -> tuple[Verdict, dict]:
    """Recurrent families need less depth (smallest sufficient depth smaller) and the best recurrent model is
    not worse than the best CNN (non-inferiority on test macro-F1)."""
    per, best = {}, {}
    for name, df in runs.items():
        b = best_pair(df, conv_families, rnn_families)
        suff = {f: sufficient_depth(df, f) for f in list(conv_families) + list(rnn_families)}
        d_conv = np.nanmin([suff[f] for f in conv_families] + [np.inf])
        d_rnn = np.nanmin([suff[f] for f in rnn_families] + [np.inf])
        best[name] = {**b, "sufficient": suff, "d_conv": d_conv, "d_rnn": d_rnn}
        if np.isinf(d_conv) or np.isinf(d_rnn):
            less = Judgement("inconclusive", "a family group has no finished run to choose a depth from")
        elif b["diff"]["n"] < MIN_RUNS:
            less = Judgement("inconclusive", f"sufficient depths chosen from {int(b['diff']['n'])} seed(s); "
                                             f"a verdict needs at least {MIN_RUNS}")
        elif d_rnn < d_conv:
            less = Judgement("supported", f"smallest sufficient depth {d_rnn:g} (recurrent) < {d_conv:g} (conv)")
        else:
            less = Judgement("refuted", f"smallest sufficient depth {d_rnn:g} (recurrent) >= {d_conv:g} (conv)")
        d = b["diff"]
        per[DATASETS[name]] = all_of({
            "not worse": not_worse(d["mean"], d["low"], d["high"], int(d["n"]), margin("C4", "test_macro_f1"),
                                   what="test macro-F1, best recurrent - best conv"),
            "less depth": less})
    j = combine(per)
    summary = " ".join(
        f"{DATASETS[n]}: smallest sufficient depth {b['d_rnn']:g} (recurrent) vs {b['d_conv']:g} (conv); best "
        f"recurrent {label(b['rnn'])} minus best CNN {label(b['conv'])}, test macro-F1 {_ci(b['diff'])} "
        f"({per[DATASETS[n]].verdict})." for n, b in best.items())
    v = Verdict.of(j, claim="C4", chapter="depth", summary=summary, figure="fig-depth-f1", runs=keys(*runs.values()),
                   effect=f"{next(iter(per))} test macro-F1, best recurrent minus best convolutional model")
    return v, best


def c8_effects(grads: pd.DataFrame, rnn_depths) -> dict[str, dict]:
    """Per dataset, paired by seed: orders of gradient lost across the time steps of a one-layer LSTM minus
    across the layers of the deepest stacked LSTM, both after training; with how many time values are bounds."""
    out = {}
    for name in grads["dataset"].unique():
        g = grads[(grads["dataset"] == name) & (grads["family"] == "lstm")]
        one = g[g["depth"] == min(rnn_depths)].set_index("seed")
        deep = g[g["depth"] == max(rnn_depths)].set_index("seed")["layer_final"]
        out[name] = {"diff": _est(one["time"] - deep), "time": _est(one["time"]), "layers": _est(deep),
                     "censored": int(one["time_censored"].sum()), "n_time": len(one),
                     "resolved": int(one["time_resolved"].min()) if len(one) else 0,
                     "steps": int(one["time_steps"].max()) if len(one) else 0}
    return out


def c8(grads: pd.DataFrame, rnn_depths, runs: pd.DataFrame) -> Verdict:
    e = c8_effects(grads, rnn_depths)
    per = {}
    for name, r in e.items():
        j = judge(*r["diff"], margin("C8", "orders"), what="orders lost across time - across layers")
        if r["censored"]:
            bound = (f"; in {r['censored']} of {r['n_time']} runs the time gradient fell below float32 resolution "
                     f"within {r['resolved']} of {r['steps']} input samples, so those values are lower bounds")
            # a lower bound can support "more across time" but cannot refute it
            j = Judgement("inconclusive" if j.verdict == "refuted" else j.verdict, j.reason + bound,
                          j.mean, j.low, j.high, j.margin, j.n)
        per[DATASETS[name]] = j
    j = combine(per, headline=DATASETS["cinc2017"] if "cinc2017" in e else None)
    summary = " ".join(
        f"{DATASETS[n]}: orders of magnitude of gradient lost across time in one LSTM layer "
        f"{fmt_ci(*r['time'][:3])}{' (at least: below resolution after ' + str(r['resolved']) + ' samples)' if r['censored'] else ''}, "
        f"across {max(rnn_depths)} stacked layers {fmt_ci(*r['layers'][:3])}." for n, r in e.items())
    used = runs[(runs["family"] == "lstm") & runs["depth"].isin([min(rnn_depths), max(rnn_depths)])]
    return Verdict.of(j, claim="C8", chapter="depth", summary=summary, figure="fig-depth-grad-time", runs=keys(used),
                      effect="orders of magnitude lost across time (1 layer) minus across layers (deepest stack)")


# ---- tables and figures (each figure one named function) ----

def describe(base: dict, what: str) -> str:
    """One line of the chapter's setup: the data and training budget of a base config."""
    window = sum(base.get("window", experiments.RunConfig().window))
    extra = (f", {base['crop_s']:g} s crops" if base["dataset"] == "cinc2017"
             else f", {window:g} s windows around each R peak")
    batches = "whole epochs" if base.get("max_batches") is None else f"at most {base['max_batches']} batches per epoch"
    return (f"- **{DATASETS[base['dataset']]}** ({what}): {base['fs']:g} Hz{extra}, "
            f"{base['train_fraction']:.0%} of the training split, width {base['width']}, "
            f"at most {base['epochs']} epoch(s) ({batches}); {recipe(base)}.")


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, family and depth: test/train scores with their intervals, and how many runs diverged.
    A configuration whose runs all diverged keeps its row, with "no finished run" for its scores."""
    rows = []
    for (dataset, family, depth), g in df.groupby(["dataset", "family", "depth"]):
        cell = lambda m: fmt_ci(*stats.ci(g[m], m)) if g[m].notna().any() else "no finished run"
        rows.append({"dataset": dataset, "family": family, "depth": depth, "params": int(g["n_params"].iloc[0]),
                     "test macro-F1": cell("test_macro_f1"), "train loss": cell("train_loss"),
                     "train macro-F1": cell("train_macro_f1"),
                     "runs": len(g), "diverged": int((g["status"] == "diverged").sum())})
    return pd.DataFrame(rows)


def fig_depth_panels(runs: dict[str, pd.DataFrame], metric: str, ylabel: str, title: str):
    """`metric` versus depth, mean and CI per family, one panel per database (fig-depth-f1, fig-depth-trainloss)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, len(runs), figsize=(11, 4.3), squeeze=False)
    for ax, (name, df) in zip(axes[0], runs.items()):
        s = stats.summarise(df, ["family", "depth"], metric).dropna(subset=["mean"])
        if s.empty:
            ax.text(0.5, 0.5, "no finished runs", ha="center", transform=ax.transAxes)
        else:
            plots.ci_lines(ax, s, "depth", logx=True)
        ax.set(xlabel="depth (stacked layers)", ylabel=ylabel, title=DATASETS[name])
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(loc="best", fontsize=9)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def time_curve(record: dict) -> np.ndarray:
    """The input-gradient curve normalised to its mean over the last 10% of the input (the readout end)."""
    c = np.asarray(record["probes"]["input_grad"]["curve"], dtype=float)
    end = np.mean(c[-max(1, len(c) // 10):])
    return c / end if end > 0 else np.full_like(c, np.nan)


def fig_grad_time(runs: dict[str, pd.DataFrame], records: dict, fs: dict[str, float], depths: dict[str, list]):
    """Input gradient across time, normalised at the readout, shallowest and deepest model per family
    (fig-depth-grad-time). depths: family -> the depths swept; values at or below zero are left off the log axis."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, len(runs), figsize=(11, 4.3), squeeze=False)
    for ax, (name, df) in zip(axes[0], runs.items()):
        for family in [f for f in ("cnn", "lstm", "reslstm") if f in depths]:
            for depth, ls in [(min(depths[family]), "-"), (max(depths[family]), "--")]:
                keys_ = df[(df["family"] == family) & (df["depth"] == depth)]["key"]
                curves = [time_curve(records[k]) for k in keys_ if "input_grad" in records[k]["probes"]]
                if not curves:
                    continue
                length = records[keys_.iloc[0]]["probes"]["input_grad"]["length"]
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: a curve with no end
                    c = np.nanmean(curves, axis=0)
                c = np.where(c > 0, c, np.nan)  # exact zeros (float32 underflow) have no place on a log axis
                ax.plot(np.linspace(0, length / fs[name], len(c)), c, ls=ls, color=plots.FAMILY_COLORS[family],
                        label=f"{FAMILY_LABELS[family]} ({depth})")
        if ax.lines:
            ax.set_yscale("log")
        ax.set(xlabel="input time (s)", ylabel="gradient / its mean at the end", title=DATASETS[name])
    if axes[0][0].lines:
        axes[0][0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


# ---- the chapter's settings, the matched sweep, and the remaining figures ----

def check_params(conv_depths, rnn_depths, compare_depths, conv_families, rnn_families) -> None:
    """Fail before training on parameters the verdicts cannot use, naming the parameter and the fix."""
    for name, depths in [("conv_depths", conv_depths), ("rnn_depths", rnn_depths)]:
        missing = [d for d in compare_depths if d not in depths]
        if missing:
            raise ValueError(f"compare_depths {compare_depths} must be in {name} {depths}; missing: {missing}")
    if len(compare_depths) != 2 or compare_depths[0] >= compare_depths[1]:
        raise ValueError(f"compare_depths must be [shallow, deep] with shallow < deep, got {compare_depths}")
    if "cnn" not in conv_families or "lstm" not in rnn_families:
        raise ValueError(f"the claims are about plain CNNs and LSTMs: conv_families {conv_families} needs 'cnn' "
                         f"and rnn_families {rnn_families} needs 'lstm'")


def matched_sweep(base: dict, families, depths, reference, seeds) -> tuple[list, int, dict]:
    """Every (family, depth) at the width that gives it the parameter count of `reference` = [family, depth] at the
    base width (so the reference's own run is shared with the depth sweep): configs, target, widths."""
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    target = models.build_model(reference[0], reference[1], width=base["width"], n_classes=5).n_params
    width = {(f, d): models.width_for_params(f, d, target, n_classes=5) for f in families for d in depths}
    configs = [experiments.RunConfig(**{**base, "family": f, "depth": d, "width": width[f, d], "seed": s})
               for f in families for d in depths for s in seeds]
    return configs, target, width


def matched_table(m: pd.DataFrame, width: dict) -> pd.DataFrame:
    rows = []
    for (f, d), w in width.items():
        g = m[(m["family"] == f) & (m["depth"] == d)]
        rows.append({"family": f, "depth": d, "width": w, "params": int(g["n_params"].iloc[0]) if len(g) else np.nan})
    return pd.DataFrame(rows)


def fig_matched(m: pd.DataFrame):
    """Parameter-matched sweep: test macro-F1 and training loss versus depth (fig-depth-matched)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, (metric, ylabel) in zip(axes, [("test_macro_f1", "test macro-F1"), ("train_loss", "training loss")]):
        plots.ci_lines(ax, stats.summarise(m, ["family", "depth"], metric), "depth", logx=True)
        ax.set(xlabel="depth (stacked layers)", ylabel=ylabel, title=f"{ylabel}, parameters fixed")
    axes[0].legend(loc="best", fontsize=9)
    fig.tight_layout()
    return fig


def train_loss_text(runs: dict[str, pd.DataFrame], families, shallow: int, deep: int) -> str:
    lines = [f"- {DATASETS[name]}: " + "; ".join(
        f"{FAMILY_LABELS[f]} {fmt_ci(*depth_effect(df, f, 'train_loss', shallow, deep)[['mean', 'low', 'high']])}"
        for f in families) for name, df in runs.items()]
    return (f"Change in final training loss from depth {shallow} to depth {deep} (positive: the deeper stack fits its "
            "training data *worse*), mean and 95% CI over seeds:\n\n" + "\n".join(lines))


def _deepest_keys(df: pd.DataFrame, family: str, depths: dict) -> pd.Series:
    return df[(df["family"] == family) & (df["depth"] == max(depths[family]))]["key"]


def fig_grad_layers(runs: dict[str, pd.DataFrame], records: dict, depths: dict[str, list]):
    """RMS gradient per layer at initialisation relative to the last layer, deepest model per family
    (fig-depth-grad-layers). depths: family -> the depths swept."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, len(runs), figsize=(11, 4.3), sharey=True, squeeze=False)
    for ax, (name, df) in zip(axes[0], runs.items()):
        for family in depths:
            profiles = [rms_profile(records[k]["probes"]["grad_norms_init"], records[k])
                        for k in _deepest_keys(df, family, depths)]
            if not profiles:
                continue
            rel = np.nanmean([p / p[-1] for p in profiles], axis=0)
            ax.plot(np.arange(1, len(rel) + 1), rel, marker="o", color=plots.FAMILY_COLORS[family],
                    label=f"{FAMILY_LABELS[family]} ({max(depths[family])} layers)")
        ax.set_yscale("log")
        ax.axhline(1, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="layer (1 = input side)", ylabel="RMS gradient / last layer's", title=DATASETS[name])
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle("Gradient across layers at initialisation", fontweight="bold")
    fig.tight_layout()
    return fig


def fig_grad_decay(grads: pd.DataFrame):
    """Orders of magnitude lost across the stack versus depth, at init and after training (fig-depth-grad-decay)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    styles = {"mitdb": "-", "cinc2017": "--"}
    t = grads[grads["depth"] > 1]
    for ax, (column, when) in zip(axes, [("layer_init", "at initialisation"), ("layer_final", "last training epoch")]):
        s = stats.summarise(t, ["dataset", "family", "depth"], column)
        for (dataset, family), g in s.groupby(["dataset", "family"]):
            ax.plot(g["depth"], g["mean"], marker="o", ls=styles[dataset], color=plots.FAMILY_COLORS[family],
                    label=f"{FAMILY_LABELS[family]}, {dataset}")
            if g["low"].notna().any():
                ax.fill_between(g["depth"], g["low"], g["high"], color=plots.FAMILY_COLORS[family], alpha=0.12, lw=0)
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(t["depth"].unique()))
        ax.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.set(xlabel="depth (stacked layers)", ylabel="orders of magnitude lost, last to first layer", title=when)
    axes[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


def fig_grad_training(runs: dict[str, pd.DataFrame], records: dict, depths: dict[str, list]):
    """Attenuation across the stack epoch by epoch for the deepest model per family (fig-depth-grad-training)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, len(runs), figsize=(11, 4.3), sharey=True, squeeze=False)
    for ax, (name, df) in zip(axes[0], runs.items()):
        for family in depths:
            curves = pd.DataFrame([{"epoch": h["epoch"],
                                    "decay": stats.attenuation(rms_profile(h["grad_norms"], records[k]))["orders"]}
                                   for k in _deepest_keys(df, family, depths) for h in records[k]["history"]])
            if curves.empty or max(depths[family]) < 2:
                continue
            c = curves.groupby("epoch")["decay"].mean()
            ax.plot(c.index, c.values, marker="o", color=plots.FAMILY_COLORS[family],
                    label=f"{FAMILY_LABELS[family]} ({max(depths[family])})")
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="epoch", ylabel="orders of magnitude lost, last to first layer", title=DATASETS[name])
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def c8_text(grads: pd.DataFrame, rnn_depths) -> str:
    """C8's two measures per dataset in words, with how many time values are lower bounds."""
    e = c8_effects(grads, rnn_depths)
    return "\n".join(
        f"- {DATASETS[n]}: orders of magnitude of gradient lost across the time steps of a one-layer LSTM "
        f"{fmt_ci(*r['time'][:3])}"
        + (f" (a lower bound: in {r['censored']} of {r['n_time']} runs the gradient fell below float32 "
           f"resolution within {r['resolved']} of {r['steps']} input samples)" if r["censored"] else "")
        + f"; across the {max(rnn_depths)} layers of a stacked LSTM {fmt_ci(*r['layers'][:3])}; "
        f"difference {fmt_ci(*r['diff'][:3])}." for n, r in e.items())


def fig_epoch_time(depth_runs: pd.DataFrame, records: dict):
    """Training seconds per epoch versus depth, from the histories (fig-depth-cost-depth)."""
    import matplotlib.pyplot as plt

    from .. import plots
    t = depth_runs[["dataset", "family", "depth", "seed", "key"]].assign(
        seconds=[np.mean([h["seconds"] for h in records[k]["history"]]) for k in depth_runs["key"]])
    names = list(dict.fromkeys(t["dataset"]))
    fig, axes = plt.subplots(1, len(names), figsize=(11, 4.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        plots.ci_lines(ax, stats.summarise(t[t["dataset"] == name], ["family", "depth"], "seconds"), "depth", logx=True)
        ax.set_yscale("log")
        ax.set(xlabel="depth (stacked layers)", ylabel="seconds per epoch", title=DATASETS[name])
    axes[0][0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def measure_cost(families, depth: int, lengths, width: int, batch: int, steps: int) -> pd.DataFrame:
    """Samples per second of untrained models (forward + backward) versus input length, on this machine."""
    from .. import diagnostics
    torch.manual_seed(0)
    rows = []
    for family in families:
        for length in lengths:
            model = models.build_model(family, depth, width=width, n_classes=5)
            t = diagnostics.throughput(model, length, batch, steps=steps, warmup=2)
            rows.append({"family": family, "length": length, "samples_per_s": t["samples_per_s"]})
    return pd.DataFrame(rows)


def fig_cost_length(speed: pd.DataFrame, depth: int):
    """Throughput versus input length at fixed depth (fig-depth-cost-length)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, ax = plt.subplots(figsize=(8, 4.3))
    for family, g in speed.groupby("family", sort=False):
        ax.plot(g["length"], g["samples_per_s"], marker="o", color=plots.FAMILY_COLORS[family],
                label=FAMILY_LABELS[family])
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(speed["length"].unique()))
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.set_yscale("log")
    ax.set(xlabel="input length (samples)", ylabel="samples per second (train step)",
           title=f"Throughput versus sequence length, depth {depth}")
    ax.legend(loc="best", fontsize=9)
    return fig


def cost_text(speed: pd.DataFrame, depth: int, batch: int) -> str:
    import platform
    text = (f"<small>Measured on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, batch {batch}.</small>")
    ratio = speed.pivot(index="length", columns="family", values="samples_per_s")
    if {"cnn", "lstm"} <= set(ratio.columns):
        r = ratio["cnn"] / ratio["lstm"]
        text += (f"\n\nAt depth {depth}, the plain CNN trains {r.iloc[0]:.1f}x as many samples per second as the LSTM "
                 f"at {r.index[0]} samples and {r.iloc[-1]:.1f}x at {r.index[-1]} samples.")
    return text


def literature_table(runs: dict[str, pd.DataFrame], best: dict, shallow: int, deep: int) -> pd.DataFrame:
    """Our depth effects beside the published ones they echo."""
    eff = lambda name, family, metric="test_macro_f1": _ci(depth_effect(runs[name], family, metric, shallow, deep))
    pair = lambda name: f"{label(best[name]['rnn'])} minus {label(best[name]['conv'])}: {_ci(best[name]['diff'])}"
    return pd.DataFrame([
        {"source": "Wu et al. 2016 (GNMT), translation",
         "published": "stacked LSTM works up to 4 layers, barely 6, very poorly beyond 8; residual connections needed",
         "ours (MIT-BIH)": f"LSTM test macro-F1, depth {deep} minus {shallow}: {eff('mitdb', 'lstm')}",
         "ours (CinC)": f"same: {eff('cinc2017', 'lstm')}"},
        {"source": "Kim et al. 2017 (residual LSTM), speech",
         "published": "10-layer plain LSTM 13.7% higher WER than 3-layer; 10-layer residual LSTM best",
         "ours (MIT-BIH)": f"residual LSTM, depth {deep} minus {shallow}: {eff('mitdb', 'reslstm')}",
         "ours (CinC)": f"same: {eff('cinc2017', 'reslstm')}"},
        {"source": "He et al. 2016 (ResNet), images",
         "published": "56-layer plain CNN: higher training error than 20-layer; residual nets train at 152+ layers",
         "ours (MIT-BIH)": f"plain CNN training loss, depth {deep} minus {shallow}: {eff('mitdb', 'cnn', 'train_loss')}",
         "ours (CinC)": f"same: {eff('cinc2017', 'cnn', 'train_loss')}"},
        {"source": "Strodthoff et al. 2021 (PTB-XL), macro-AUC",
         "published": "2-layer LSTM .907 vs xresnet1d101 .925 (all); .953 vs .957 (rhythm); .851 vs .896 (form)",
         "ours (MIT-BIH)": f"best recurrent minus best CNN, test macro-F1: {pair('mitdb')}",
         "ours (CinC)": pair("cinc2017")},
    ])
