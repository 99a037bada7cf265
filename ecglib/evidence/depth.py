"""The depth chapter's analysis: the depth sweeps (shared with the overfitting chapter), gradient attenuation
across layers and across time (one method: stats.attenuation), smallest sufficient depth, and the verdicts
on C1, C4 and C8 (C13, the depth each task needs, is the features chapter's).
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import torch

from .. import experiments, models, protocol, stats
from ..ledger import Verdict, fmt_ci
from ..plots import FAMILY_LABELS
from ..verdicts import MIN_RUNS, Judgement, all_of, combine, judge, margin, not_worse
from . import DATASETS, keys, recipe, seed_list


def depth_sweep(base: dict, conv_families, rnn_families, conv_depths, rnn_depths, seeds) -> list:
    """The depth sweep on one database: every conv family at conv_depths, every recurrent one at rnn_depths.
    Defined once: the depth, overfitting and features chapters read the same stored runs from it, each at the
    learning rate protocol.tune_lr chose for its family and depth."""
    seeds = seed_list(seeds)
    return (experiments.sweep(base, family=list(conv_families), depth=list(conv_depths), seed=seeds)
            + experiments.sweep(base, family=list(rnn_families), depth=list(rnn_depths), seed=seeds))


# ---- gradient across depth and time: one matrix per run (diagnostics.state_gradients, the grad_states probe) ----

def state_matrix(record: dict, when: str = "init") -> tuple[np.ndarray, np.ndarray]:
    """(matrix [layers, columns], input sample of each column) of a run's grad_states probe, at "init" or
    "final" (after training)."""
    p = record["probes"]["grad_states"]
    return np.asarray(p[when], dtype=float), np.asarray(p["t"])


def edges(record: dict, when: str = "init") -> dict:
    """The matrix's two edges from the readout (top layer, last step), by one method (stats.attenuation):
    across layers (its last column: the path through the stack only) and across time (its top row: the path
    through the top layer's steps only). Orders lost, per layer and per 100 input samples."""
    m, t = state_matrix(record, when)
    depth, time = stats.attenuation(m[:, -1]), stats.attenuation(m[-1])
    span = max(1, t[-1] - t[0])
    return {"depth": depth["orders"], "per_layer": depth["orders"] / max(1, len(m) - 1),
            "time": time["orders"], "per_100": 100 * time["orders"] / span, "time_censored": time["censored"],
            "steps": int(record["probes"]["grad_states"]["length"])}


def gradient_table(runs: pd.DataFrame, records: dict[str, dict]) -> pd.DataFrame:
    """One row per run: orders of gradient lost across the layers (`layer_*`) and across the time steps of the
    top layer (`time_*`), at initialisation and after training, from the one grad_states matrix; NaN for runs
    without the probe."""
    out = runs[["dataset", "family", "depth", "seed", "key", "status"]].copy()
    for when in ("init", "final"):
        e = [edges(records[k], when) if "grad_states" in records[k]["probes"] else {} for k in out["key"]]
        out[f"layer_{when}"] = [x.get("depth", math.nan) for x in e]
        out[f"per_layer_{when}"] = [x.get("per_layer", math.nan) for x in e]
        out[f"time_{when}"] = [x.get("time", math.nan) for x in e]
        out[f"per_100_{when}"] = [x.get("per_100", math.nan) for x in e]
        out[f"time_censored_{when}"] = [x.get("time_censored", False) for x in e]
    out["steps"] = [x.get("steps", 0) for x in e]
    return out


# ---- depth choices ----

def sufficient_depth(df: pd.DataFrame, family: str) -> float:
    """Smallest depth whose mean validation score reaches the lower CI bound of the best depth's (a t interval:
    a decision from three seeds); NaN when the family has no finished run (every run diverged)."""
    s = stats.summarise(df[df["family"] == family], "depth", "val_score", bounded=False).dropna(subset=["mean"])
    if s.empty:
        return math.nan
    best = s.loc[s["mean"].idxmax()]
    bar = best["low"] if not math.isnan(best["low"]) else best["mean"]
    return int(s[s["mean"] >= bar]["depth"].min())


def best_config(df: pd.DataFrame, families) -> tuple[str, int] | None:
    """(family, depth) with the highest mean validation score among `families`; None if no run finished."""
    s = stats.summarise(df[df["family"].isin(families)], ["family", "depth"], "val_score").dropna(subset=["mean"])
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
    """The best recurrent and best conv configuration (chosen on validation among usable runs) and their paired
    test-score difference."""
    df = protocol.usable(df)
    conv, rnn = best_config(df, conv_families), best_config(df, rnn_families)
    nan = pd.Series({"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0})
    if conv is None or rnn is None:
        return {"conv": conv, "rnn": rnn, "diff": nan}
    pick = lambda fd: df[(df["family"] == fd[0]) & (df["depth"] == fd[1])]
    pair = pd.concat([pick(rnn).assign(side="rnn"), pick(conv).assign(side="conv")])
    return {"conv": conv, "rnn": rnn, "diff": stats.paired_diff(pair, "side", "test_score", "rnn", "conv").iloc[0]}


def label(fd) -> str:
    return "no usable run" if fd is None else f"{FAMILY_LABELS[fd[0]]} at depth {fd[1]}"


def _ci(row) -> str:
    return fmt_ci(row["mean"], row["low"], row["high"])


def _per_seed(df: pd.DataFrame, family: str, metric: str, shallow: int, deep: int) -> pd.Series:
    d = df[df["family"] == family].pivot_table(index="seed", columns="depth", values=metric)
    d = d.reindex(columns=[shallow, deep])  # a depth whose runs all lack the metric stays, as NaN
    return d[deep] - d[shallow]


# ---- verdicts ----

def _failed(all_runs: pd.DataFrame, family: str, depth: int) -> pd.Series:
    """Per seed: 1.0 if no run of `family` at `depth` is usable (protocol.is_usable), 0.0 if one is."""
    return protocol.failed_by_seed(all_runs[(all_runs["family"] == family) & (all_runs["depth"] == depth)])


def _count(failed: pd.Series) -> str:
    return f"{int(failed.sum())} of {len(failed)} seeds"


def harder_to_train(all_runs: pd.DataFrame, shallow: int, deep: int) -> tuple[Judgement, str]:
    """C1's first part on one database. Failing to train is the strongest form of "harder to train", so it is read
    first: per seed, failed at `deep` minus failed at `shallow`, the LSTM's minus the CNN's (a share of seeds,
    margin C1/fail_share). Where that share is not supported, the training-loss change of the usable runs decides
    (margin C1/train_loss). An LSTM that already fails at `shallow` in most seeds leaves nothing to compare: from a
    floor, depth cannot make training visibly worse. Returns the judgement and the name of the measure it read."""
    f = {(fam, d): _failed(all_runs, fam, d) for fam in ("lstm", "cnn") for d in (shallow, deep)}
    counts = (f"the LSTM failed to train in {_count(f['lstm', deep])} at depth {deep} and {_count(f['lstm', shallow])}"
              f" at depth {shallow}; the CNN in {_count(f['cnn', deep])} and {_count(f['cnn', shallow])}")
    if len(f["lstm", shallow]) and f["lstm", shallow].mean() > 0.5:
        return Judgement("inconclusive", f"{counts}: the LSTM fails at depth {shallow} already, so depth's effect "
                                         f"on training cannot be seen", n=len(f["lstm", shallow])), "failures"
    share = stats.estimate((f["lstm", deep] - f["lstm", shallow]) - (f["cnn", deep] - f["cnn", shallow]))
    by_failure = judge(*share, margin("C1", "fail_share"), what="share of seeds failing, LSTM - CNN")
    if by_failure.verdict == "supported":
        return dataclasses.replace(by_failure, reason=f"{counts}; {by_failure.reason}"), "failures"
    df = protocol.usable(all_runs)
    by_loss = judge(*stats.estimate(_per_seed(df, "lstm", "train_loss", shallow, deep)
                          - _per_seed(df, "cnn", "train_loss", shallow, deep)),
                    margin("C1", "train_loss"), what="training-loss change of the usable runs, LSTM - CNN")
    return dataclasses.replace(by_loss, reason=f"{counts}; {by_loss.reason}"), "loss"


def c1(runs: dict[str, pd.DataFrame], grads: pd.DataFrame, shallow: int, deep: int,
       layernorm: pd.DataFrame | None = None) -> Verdict:
    """Harder to train (harder_to_train: seeds failing to train, then the training-loss change with depth, LSTM
    minus CNN) and because gradients vanish across layers (deep LSTM's orders lost across its layers at init minus
    the deep CNN's, from the one state-gradient matrix, claimed above zero). The gradients at initialisation come
    from every run, since they are measured before training. `layernorm` (the ablation's LSTMs with LayerNorm
    between layers, MIT-BIH) does not enter the verdict; the summary says how many of its seeds trained at `deep`,
    the standard remedy beside the finding."""
    per, used, measure = {}, [], {}
    for name, all_runs in runs.items():
        hard, measure[name] = harder_to_train(all_runs, shallow, deep)
        # the gradient at initialisation is measured before training: every run has one, trained well or not
        g = grads[(grads["dataset"] == name) & (grads["depth"] == deep) & grads["key"].isin(all_runs["key"])]
        vanish = stats.estimate(g[g["family"] == "lstm"].set_index("seed")["layer_init"]
                      - g[g["family"] == "cnn"].set_index("seed")["layer_init"])
        per[DATASETS[name]] = all_of({
            "harder to train": hard,
            "gradients vanish more": judge(*vanish, margin("C1", "layer_decay"),
                                           what="orders of gradient lost across layers, LSTM - CNN"),
        })
        used += list(all_runs[all_runs["family"].isin(["lstm", "cnn"]) & all_runs["depth"].isin([shallow, deep])]["key"])
    j = combine(per)
    first = next(iter(runs))
    summary = " ".join(f"{n}: {v.verdict}." for n, v in per.items())
    if layernorm is not None and len(ln := layernorm[(layernorm["family"] == "lstm") & (layernorm["depth"] == deep)]):
        summary += (f" With LayerNorm between its layers, the {deep}-layer LSTM trained in "
                    f"{_trained(ln.assign(usable=protocol.is_usable(ln)), deep)} ({DATASETS[ln['dataset'].iloc[0]]}).")
    quantity = "share of seeds failing to train" if measure[first] == "failures" else "training loss of usable runs"
    return Verdict.of(j, claim="C1", chapter="depth", figure="fig-depth-trainloss", runs=used,
                      summary=summary, effect=f"{DATASETS[first]} {quantity}, (LSTM depth {deep} - {shallow}) - (CNN depth {deep} - {shallow})")


def c4(runs: dict[str, pd.DataFrame], conv_families, rnn_families) -> tuple[Verdict, dict]:
    """Recurrent families need less depth (smallest sufficient depth smaller) and the best recurrent model is
    not worse than the best CNN (non-inferiority on the test score)."""
    per, best = {}, {}
    for name, df in runs.items():
        df = protocol.usable(df)
        b = best_pair(df, conv_families, rnn_families)
        suff = {f: sufficient_depth(df, f) for f in list(conv_families) + list(rnn_families)}
        d_conv = np.nanmin([suff[f] for f in conv_families] + [np.inf])
        d_rnn = np.nanmin([suff[f] for f in rnn_families] + [np.inf])
        best[name] = {**b, "sufficient": suff, "d_conv": d_conv, "d_rnn": d_rnn}
        if np.isinf(d_conv) or np.isinf(d_rnn):
            less = Judgement("inconclusive", "a family group has no usable run (each diverged, collapsed or did "
                                             "not converge) to choose a depth from")
        elif b["diff"]["n"] < MIN_RUNS:
            less = Judgement("inconclusive", f"sufficient depths chosen from {int(b['diff']['n'])} seed(s); "
                                             f"a verdict needs at least {MIN_RUNS}")
        elif d_rnn < d_conv:
            less = Judgement("supported", f"smallest sufficient depth {d_rnn:g} (recurrent) < {d_conv:g} (conv)")
        else:
            less = Judgement("refuted", f"smallest sufficient depth {d_rnn:g} (recurrent) >= {d_conv:g} (conv)")
        d = b["diff"]
        per[DATASETS[name]] = all_of({
            "not worse": not_worse(d["mean"], d["low"], d["high"], int(d["n"]), margin("C4", "test_score"),
                                   what="test score, best recurrent - best conv"),
            "less depth": less})
    j = combine(per)
    depth = lambda d: "none (no run trained)" if np.isinf(d) else f"{d:g}"

    def versus(b) -> str:
        if b["rnn"] is None or b["conv"] is None:
            side = "recurrent" if b["rnn"] is None else "convolutional"
            return f"no {side} model trained at any depth, so there is no pair to compare"
        return f"best recurrent {label(b['rnn'])} minus best CNN {label(b['conv'])}, test score {_ci(b['diff'])}"
    summary = " ".join(
        f"{DATASETS[n]}: smallest sufficient depth {depth(b['d_rnn'])} (recurrent) vs {depth(b['d_conv'])} (conv); "
        f"{versus(b)} ({per[DATASETS[n]].verdict})." for n, b in best.items())
    v = Verdict.of(j, claim="C4", chapter="depth", summary=summary, figure="fig-depth-f1", runs=keys(*runs.values()),
                   effect=f"{next(iter(per))} test score, best recurrent minus best convolutional model")
    return v, best


def c8_effects(grads: pd.DataFrame, deep: int, when: str = "init") -> dict[str, dict]:
    """Per dataset, paired by seed, in the same LSTM of `deep` layers: orders of gradient lost across the time
    steps of its top layer minus across its layers, both from its one matrix at `when`. Pass the runs to read: at
    initialisation every run (measured before training), after training usable runs only."""
    out = {}
    for name in grads["dataset"].unique():
        g = grads[(grads["dataset"] == name) & (grads["family"] == "lstm") & (grads["depth"] == deep)].set_index("seed")
        out[name] = {"diff": stats.estimate(g[f"time_{when}"] - g[f"layer_{when}"]), "time": stats.estimate(g[f"time_{when}"]),
                     "layers": stats.estimate(g[f"layer_{when}"]), "per_100": stats.estimate(g[f"per_100_{when}"]),
                     "per_layer": stats.estimate(g[f"per_layer_{when}"]), "censored": int(g[f"time_censored_{when}"].sum()),
                     "n": len(g), "steps": int(g["steps"].max()) if len(g) else 0}
    return out


def c8_gradient(grads: pd.DataFrame, deep: int) -> dict[str, Judgement]:
    """The gradient part of C8 per dataset, at initialisation: across time minus across layers, above zero."""
    per = {}
    for name, r in c8_effects(grads, deep).items():
        j = judge(*r["diff"], margin("C8", "orders"), what="orders lost across time - across layers, same LSTM")
        if r["censored"]:   # a lower bound can support "more across time" but cannot refute it
            j = Judgement("inconclusive" if j.verdict == "refuted" else j.verdict,
                          j.reason + f"; in {r['censored']} of {r['n']} runs the time gradient fell below float64 "
                          "resolution, so those values are lower bounds", j.mean, j.low, j.high, j.margin, j.n)
        per[DATASETS[name]] = j
    return per


def c8(grads: pd.DataFrame, deep: int, runs: pd.DataFrame, lag: Judgement | None = None,
       lag_runs: pd.DataFrame | None = None) -> Verdict:
    """C8 from the one measure (per database) and, where given, the lag task's behavioural check; the settings
    are combined (agreeing decisive verdicts stand, support against refutation depends on the setting). The
    gradient is measured at initialisation, before training, so every run counts, whether it then trained or not."""
    measured = runs[runs["key"].isin(grads["key"])]
    per = c8_gradient(grads[grads["key"].isin(measured["key"])], deep)
    if lag is not None:
        per["lag task"] = lag
    j = combine(per, headline=DATASETS["cinc2017"] if DATASETS["cinc2017"] in per else None)
    used = measured[(measured["family"] == "lstm") & (measured["depth"] == deep)]
    summary = c8_text(grads[grads["key"].isin(measured["key"])], deep) or f"No {deep}-layer LSTM run to measure."
    if lag is not None:
        summary += f" Lag task: {lag.reason}."
    return Verdict.of(j, claim="C8", chapter="depth", summary=summary,
                      figure="fig-depth-grad-time",
                      runs=keys(used, *([protocol.usable(lag_runs)] if lag_runs is not None else [])),
                      effect=f"orders of magnitude lost across the time steps minus across the layers of one "
                             f"{deep}-layer LSTM at initialisation")


# ---- tables and figures (each figure one named function) ----

def describe(base: dict, what: str, lrs=None) -> str:
    """One line of the chapter's setup: the data and training budget of a base config."""
    window = sum(base.get("window", experiments.RunConfig().window))
    extra = (f", {base['crop_s']:g} s crops" if base["dataset"] == "cinc2017"
             else f", {window:g} s windows around each R peak")
    c = experiments.RunConfig(**base)
    batches = "whole epochs" if c.max_batches is None else f"at most {c.max_batches} batches per epoch"
    cap = "" if c.cap_per_class is None else f", at most {c.cap_per_class} of each class"
    return (f"- **{DATASETS[c.dataset]}** ({what}): {c.fs:g} Hz{extra}, "
            f"{c.train_fraction:.0%} of the training split{cap}, width {c.width}, "
            f"at most {c.epochs} epoch(s) ({batches}); {recipe(base, lrs)}.")


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, family and depth: the learning rate (the one validation chose, when `df` is protocol.tuned),
    test/train scores with their intervals, and how many runs diverged.
    A configuration whose runs all diverged keeps its row, with "no finished run" for its scores."""
    rows = []
    for (dataset, family, depth), g in df.groupby(["dataset", "family", "depth"]):
        cell = lambda m: fmt_ci(*stats.ci(g[m], m)) if g[m].notna().any() else "no finished run"
        rows.append({"dataset": dataset, "family": family, "depth": depth, "params": int(g["n_params"].iloc[0]),
                     "lr": ", ".join(f"{v:g}" for v in sorted(g["lr"].unique())),
                     "test score": cell("test_score"), "train loss": cell("train_loss"),
                     "train score": cell("train_score"),
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
            plots.no_data(ax, "no finished runs")
        else:
            plots.ci_lines(ax, s, "depth", logx=True)
        ax.set(xlabel="depth (stacked layers)", ylabel=ylabel, title=DATASETS[name])
    if len(runs) == 1:      # one panel: the title is its own, not repeated above it
        axes[0][0].set_title(title)
    else:
        fig.suptitle(title, fontweight="bold")
    return plots.finish(fig)


def _mean_edge(keys_, records: dict, when: str, edge: str) -> np.ndarray | None:
    """Geometric mean over runs of a matrix edge ("column": the last column, across layers; "row": the top
    row, across time), relative to its value at the readout. None without runs that have the probe."""
    curves = []
    for k in keys_:
        if "grad_states" not in records[k]["probes"]:
            continue
        m, _ = state_matrix(records[k], when)
        c = m[:, -1] if edge == "column" else m[-1]
        curves.append(c / c[-1] if c[-1] > 0 else np.full_like(c, np.nan))
    if not curves or len({len(c) for c in curves}) > 1:
        return None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a column of zeros only: NaN, left off the log axis
        return np.exp(np.nanmean(np.log(np.where(np.asarray(curves) > 0, curves, np.nan)), axis=0))


def fig_grad_time(runs: dict[str, pd.DataFrame], records: dict, fs: dict[str, float], depths: dict[str, list]):
    """The top row of the state-gradient matrix (across time, the readout at the right) at initialisation and
    after training, for the shallowest and deepest LSTM (fig-depth-grad-time)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, len(runs), figsize=(11, 4.3), squeeze=False)
    for ax, (name, df) in zip(axes[0], runs.items()):
        for family in [f for f in ("lstm", "reslstm") if f in depths]:
            for depth in sorted({min(depths[family]), max(depths[family])}):
                keys_ = df[(df["family"] == family) & (df["depth"] == depth)]["key"]
                for when, ls in (("init", "-"), ("final", "--")):
                    c = _mean_edge(keys_, records, when, "row")
                    if c is None:
                        continue
                    t = state_matrix(records[keys_.iloc[0]], when)[1]
                    ax.plot(t / fs[name], c, ls=ls, lw=2 if depth == max(depths[family]) else 1,
                            color=plots.FAMILY_COLORS[family],
                            label=f"{FAMILY_LABELS[family]} ({depth}), {'init' if when == 'init' else 'trained'}")
        if ax.lines:
            ax.set_yscale("log")
        ax.set(xlabel="input time (s)", ylabel="gradient / its value at the readout", title=DATASETS[name])
    return plots.finish(fig, "no usable LSTM run stored this probe")


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
    target = models.build_model(reference[0], reference[1], width=base["width"], n_classes=5).n_params
    width = {(f, d): models.width_for_params(f, d, target, n_classes=5) for f in families for d in depths}
    configs = [c for f in families for d in depths
               for c in depth_sweep({**base, "width": width[f, d]}, [f], [], [d], [], seeds)]
    return configs, target, width


def matched_table(m: pd.DataFrame, width: dict) -> pd.DataFrame:
    rows = []
    for (f, d), w in width.items():
        g = m[(m["family"] == f) & (m["depth"] == d)]
        rows.append({"family": f, "depth": d, "width": w, "params": int(g["n_params"].iloc[0]) if len(g) else np.nan})
    return pd.DataFrame(rows)


def fig_matched(m: pd.DataFrame):
    """Parameter-matched sweep: test score and training loss versus depth (fig-depth-matched)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, (metric, ylabel) in zip(axes, [("test_score", "test score"), ("train_loss", "training loss")]):
        plots.ci_lines(ax, stats.summarise(m, ["family", "depth"], metric), "depth", logx=True)
        ax.set(xlabel="depth (stacked layers)", ylabel=ylabel, title=f"{ylabel}, parameters fixed")
    return plots.finish(fig)


def train_loss_text(runs: dict[str, pd.DataFrame], families, shallow: int, deep: int) -> str:
    lines = [f"- {DATASETS[name]}: " + "; ".join(
        f"{FAMILY_LABELS[f]} {fmt_ci(*depth_effect(df, f, 'train_loss', shallow, deep)[['mean', 'low', 'high']])}"
        for f in families) for name, df in runs.items()]
    return (f"Change in final training loss from depth {shallow} to depth {deep} (positive: the deeper stack fits its "
            "training data *worse*), mean and 95% CI over seeds:\n\n" + "\n".join(lines))


def _deepest_keys(df: pd.DataFrame, family: str, depths: dict) -> pd.Series:
    return df[(df["family"] == family) & (df["depth"] == max(depths[family]))]["key"]


def fig_grad_layers(runs: dict[str, pd.DataFrame], records: dict, depths: dict[str, list]):
    """The last column of the state-gradient matrix (across layers at the readout step) relative to the top
    layer, deepest model per family, at initialisation (solid) and after training (dashed) (fig-depth-grad-layers)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, len(runs), figsize=(11, 4.3), sharey=True, squeeze=False)
    for ax, (name, df) in zip(axes[0], runs.items()):
        for family in depths:
            for when, ls in (("init", "-"), ("final", "--")):
                rel = _mean_edge(_deepest_keys(df, family, depths), records, when, "column")
                if rel is None:
                    continue
                ax.plot(np.arange(1, len(rel) + 1), rel, marker="o", ls=ls, color=plots.FAMILY_COLORS[family],
                        label=f"{FAMILY_LABELS[family]} ({plots.layers(max(depths[family]))})" if when == "init" else None)
        if ax.lines:
            ax.set_yscale("log")
        ax.axhline(1, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="layer (1 = input side)", ylabel="|d loss / d h| / top layer's", title=DATASETS[name])
    fig.suptitle("Gradient across layers at the readout step:\ninitialisation (solid), trained (dashed)",
                 fontweight="bold")
    return plots.finish(fig, "no run stored this probe")


def fig_grad_decay(grads: pd.DataFrame):
    """Orders of magnitude lost across the stack versus depth, at init and after training (fig-depth-grad-decay)."""
    import matplotlib.pyplot as plt

    from .. import plots
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    styles = {"mitdb": ("-", "o"), "cinc2017": ("--", "s")}
    t = grads[grads["depth"] > 1]
    for ax, (column, when) in zip(axes, [("layer_init", "at initialisation"), ("layer_final", "last training epoch")]):
        s = stats.summarise(t, ["dataset", "family", "depth"], column)
        for (dataset, family), g in s.groupby(["dataset", "family"]):
            ax.plot(g["depth"], g["mean"], marker=styles[dataset][1], ls=styles[dataset][0],
                    color=plots.FAMILY_COLORS[family], label=f"{FAMILY_LABELS[family]}, {DATASETS[dataset]}")
            if g["low"].notna().any():
                ax.fill_between(g["depth"], g["low"], g["high"], color=plots.FAMILY_COLORS[family], alpha=0.12, lw=0)
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        plots.value_ticks(ax, t["depth"].unique())
        ax.set(xlabel="depth (stacked layers)", title=when)
    axes[0].set_ylabel("gradient lost, last to first layer\n(orders of magnitude)")
    return plots.finish(fig)


def c8_text(grads: pd.DataFrame, deep: int) -> str:
    """C8's two edges of one matrix per dataset in words: totals, rates, and the same after training."""
    init, final = c8_effects(grads, deep, "init"), c8_effects(grads, deep, "final")
    return "\n".join(
        f"- {DATASETS[n]} ({r['steps']} input samples): in the same {deep}-layer LSTM at initialisation, the gradient "
        f"loses {fmt_ci(*r['time'][:3])} orders of magnitude across the time steps of its top layer "
        f"({fmt_ci(*r['per_100'][:3])} per 100 samples) and {fmt_ci(*r['layers'][:3])} across its layers "
        f"({fmt_ci(*r['per_layer'][:3])} per layer); difference {fmt_ci(*r['diff'][:3])}. After training: "
        f"{fmt_ci(*final[n]['time'][:3])} across time, {fmt_ci(*final[n]['layers'][:3])} across layers."
        for n, r in init.items())


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
    return plots.finish(fig)


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
    plots.value_ticks(ax, speed["length"].unique())
    ax.set_yscale("log")
    ax.set(xlabel="input length (samples)", ylabel="samples per second (train step)",
           title=f"Throughput versus sequence length, depth {depth}")
    return plots.finish(fig)


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
    eff = lambda name, family, metric="test_score": _ci(depth_effect(runs[name], family, metric, shallow, deep))
    pair = lambda name: f"{label(best[name]['rnn'])} minus {label(best[name]['conv'])}: {_ci(best[name]['diff'])}"
    return pd.DataFrame([
        {"source": "Wu et al. 2016 (GNMT), translation",
         "published": "stacked LSTM works up to 4 layers, barely 6, very poorly beyond 8; residual connections needed",
         "ours (MIT-BIH)": f"LSTM test score, depth {deep} minus {shallow}: {eff('mitdb', 'lstm')}",
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
         "ours (MIT-BIH)": f"best recurrent minus best CNN, test score: {pair('mitdb')}",
         "ours (CinC)": pair("cinc2017")},
    ])


# ---- C8's behavioural check: the lag task (synthetic.lag_splits) ----

def lag_sweep(base: dict, lags, depths, fixed_lag: int, lrs, seeds) -> list:
    """A one-layer LSTM at every lag, and LSTMs of every depth at `fixed_lag`, each at every learning rate of
    `lrs` (the same search at every point). Read out from the last state: a pooled readout would let the marked
    value reach the output without crossing the lag."""
    seeds = seed_list(seeds)
    base = {**base, "dataset": "synthetic", "family": "lstm", "readout": "last"}
    return (experiments.sweep({**base, "depth": 1}, lag=list(lags), lr=list(lrs), seed=seeds)
            + experiments.sweep({**base, "lag": fixed_lag}, depth=list(depths), lr=list(lrs), seed=seeds))


def lag_tuned(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (depth, lag), the runs of the learning rate with the best mean validation score (validation only)."""
    return protocol.tuned(runs)


def lag_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per point of the lag sweep: the chosen learning rate and the test accuracy of its usable runs, or
    "failed to train" with why."""
    rows = []
    for (depth, lag), g in lag_tuned(runs).groupby(["depth", "lag"]):
        u = protocol.usable(g)
        rows.append({"layers": depth, "lag": lag, "lr": g["lr"].iloc[0], "usable runs": f"{len(u)} of {len(g)}",
                     "test accuracy": fmt_ci(*stats.ci(u["test_acc"], "test_acc")) if len(u) else
                     f"failed to train ({int(g['collapsed'].sum())} collapsed, {int((~g['converged']).sum())} "
                     "unconverged)"})
    return pd.DataFrame(rows)


def c8_lag(runs: pd.DataFrame, lags, depths, fixed_lag: int) -> Judgement:
    """Accuracy a one-layer LSTM loses from the shortest to the longest lag minus what LSTMs lose from the
    shallowest to the deepest stack at `fixed_lag` (paired by seed, usable runs), claimed above zero. A point
    where the LSTM failed to train is a finding, not a score: the long lag failing while the deep stack trains
    supports the claim, the reverse refutes it."""
    u = protocol.usable(lag_tuned(runs))
    acc = lambda d, k: u[(u["depth"] == d) & (u["lag"] == k)].set_index("seed")["test_acc"]
    far, deep = acc(1, max(lags)), acc(max(depths), fixed_lag)
    if far.empty or deep.empty:
        if far.empty and deep.empty:
            return Judgement("inconclusive", f"no usable run at lag {max(lags)} (1 layer) nor at depth {max(depths)}")
        if far.empty:
            return Judgement("supported", f"a one-layer LSTM failed to train at lag {max(lags)}, while {max(depths)} "
                                          f"stacked layers trained at lag {fixed_lag}")
        return Judgement("refuted", f"{max(depths)} stacked layers failed to train at lag {fixed_lag}, while one "
                                    f"layer trained at lag {max(lags)}")
    drop_time = acc(1, min(lags)) - far
    drop_depth = acc(min(depths), fixed_lag) - deep
    return judge(*stats.estimate(drop_time - drop_depth), margin("C8", "acc_drop"),
                 what=f"accuracy lost from lag {min(lags)} to {max(lags)} (1 layer) - from depth {min(depths)} to "
                      f"{max(depths)} (lag {fixed_lag})")


def fig_lag(runs: pd.DataFrame, fixed_lag: int):
    """Test accuracy of the lag task: one layer versus lag (left), stacked layers versus depth (right)
    (fig-depth-lag). Usable runs of the chosen learning rate; failed points are missing."""
    import matplotlib.pyplot as plt

    from .. import plots
    u = protocol.usable(lag_tuned(runs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    for ax, (d, x, title) in zip(axes, [(u[u["depth"] == 1], "lag", "one LSTM layer, lag grows"),
                                        (u[u["lag"] == fixed_lag], "depth", f"lag {fixed_lag}, depth grows")]):
        s = stats.summarise(d, ["family", x], "test_acc")
        if len(s):
            plots.ci_lines(ax, s, x, logx=True)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="lag (steps)" if x == "lag" else "depth (stacked layers)", ylabel="test accuracy", title=title)
    return plots.finish(fig, "no usable run at this setting")


# ---- families built alike: normalisation as an ablation ----

def norm_sweep(base: dict, conv_depths, rnn_depths, seeds) -> list:
    """The plain CNN without batch norm and the LSTM with LayerNorm between layers, at the given depths (the depth
    chapter passes its compare_depths: the ablation table reads only the shallow and the deep end)."""
    return (depth_sweep({**base, "norm": "none"}, ["cnn"], [], conv_depths, [], seeds)
            + depth_sweep({**base, "norm": "layer"}, [], ["lstm"], [], rnn_depths, seeds))


_NORMS = {"own": "the family's own", "none": "no batch norm", "layer": "LayerNorm between layers"}


def norm_table(runs: pd.DataFrame, shallow: int, deep: int) -> pd.DataFrame:
    """Per family and normalisation: how many seeds trained at the deep end (usable runs of all), then, from the
    usable runs, training loss and test score at the deep end and their change from `shallow` to `deep` paired by
    seed; the families' own normalisation beside the ablation."""
    runs = runs.assign(norm=runs["norm"].fillna("own"), usable=protocol.is_usable(runs))
    rows = []
    groups = sorted(runs.groupby(["family", "norm"]), key=lambda kv: (kv[0][0], kv[0][1] != "own"))  # own first
    for (family, norm), g in groups:
        row = {"family": FAMILY_LABELS[family], "normalisation": _NORMS[norm],
               f"trained at depth {deep}": _trained(g, deep)}
        u = g[g["usable"]]
        for metric, what in (("train_loss", "training loss"), ("test_score", "test score")):
            at = u[u["depth"] == deep][metric]
            row[f"{what}, depth {deep}"] = fmt_ci(*stats.ci(at, metric)) if len(at) else "no usable run"
            row[f"{what}, {deep} - {shallow}"] = fmt_ci(*stats.estimate(_per_seed(u, family, metric, shallow, deep))[:3])
        rows.append(row)
    return pd.DataFrame(rows or [{"family": "no run", "normalisation": ""}])


def _trained(g: pd.DataFrame, depth: int) -> str:
    """'k of n seeds': seeds of `g` with a usable run at `depth`, of seeds with any run there."""
    ok = g[g["depth"] == depth].groupby("seed")["usable"].any()
    return f"{int(ok.sum())} of {len(ok)} seeds"


def norm_text(runs: pd.DataFrame, deep: int) -> str:
    """What the ablation says about C1, read from the runs: at the deep end, how many seeds each family trained in
    with its own normalisation and with the ablated one."""
    runs = runs.assign(norm=runs["norm"].fillna("own"), usable=protocol.is_usable(runs))
    said = []
    for family in ("lstm", "cnn"):
        g = runs[runs["family"] == family]
        parts = [f"{_trained(n, deep)} with {_NORMS[norm] if norm != 'own' else 'its own normalisation'}"
                 for norm, n in sorted(g.groupby("norm"), key=lambda kv: kv[0] != "own")]
        if parts:
            said.append(f"the {FAMILY_LABELS[family]} trained in " + " and in ".join(parts))
    if not said:
        return "No ablation runs."
    return f"At depth {deep}, " + "; ".join(said) + "."


def describe_lag(base: dict, lags, depths, fixed_lag: int, lrs) -> str:
    """The lag task's setup in one paragraph, read from its parameters."""
    c = experiments.RunConfig(**{**base, "dataset": "synthetic", "family": "lstm", "lag": fixed_lag})
    return (f"Sequences of {c.length} steps, {c.n_train} training sequences (validation and test a quarter of that "
            f"each), width {c.width}; one layer at lags {list(lags)}, depths {list(depths)} at lag {fixed_lag}; "
            f"learning rates {list(lrs)}, at most {c.epochs} epochs; {recipe({**base, 'dataset': 'synthetic'})}.")
