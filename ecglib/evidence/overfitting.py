"""The overfitting chapter's analysis: generalisation gaps (collapsed and diverged runs excluded), gradient flow
against the gap, and the verdicts on C2, C5, C6 and C9. The depth sweep is evidence.depth's.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import pandas as pd

from .. import models, stats
from ..ledger import Verdict, fmt_ci
from ..plots import FAMILY_LABELS
from ..verdicts import Judgement, all_of, combine, judge, margin, not_worse
from ..protocol import failed_by_seed, failure_counts, is_usable, usable
from . import DATASETS, keys


# Every gap is read on the field's score (data.SCORED: macro-F1 over N, S, V, F on MIT-BIH, N, A, O on CinC).
METRIC = "score"


def with_gaps(df: pd.DataFrame) -> pd.DataFrame:
    """Add the gaps, for the runs protocol.is_usable keeps: gap (training minus test score), val_gap, and, for runs
    with a seen-patient split (RunConfig.seen_holdout), overfit (training minus seen: the same patients, new
    beats) and shift (seen minus test: the step to new patients), so gap = overfit + shift. A diverged run has
    none, nor has a collapsed one (its gap of ~0 measures a failure to fit) or an unconverged one (still fitting)."""
    ok = is_usable(df)
    train, seen = df[f"train_{METRIC}"], df.get(f"seen_{METRIC}", pd.Series(math.nan, index=df.index))
    return df.assign(gap=(train - df[f"test_{METRIC}"]).where(ok), val_gap=(train - df[f"val_{METRIC}"]).where(ok),
                     overfit=(train - seen).where(ok), shift=(seen - df[f"test_{METRIC}"]).where(ok))


def diff(df: pd.DataFrame, by: str, metric: str, a, b) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of metric at by == a minus by == b, paired by seed; NaN and n = 0 if a side is missing."""
    if df.empty:
        return math.nan, math.nan, math.nan, 0
    d = stats.paired_diff(df, by, metric, a, b, missing="nan").iloc[0]
    return d["mean"], d["low"], d["high"], int(d["n"])


def interaction(runs: pd.DataFrame, metric: str, shallow: int, deep: int, a="lstm", b="cnn"):
    """(mean, low, high, n) of [metric(a, deep) - metric(a, shallow)] - [metric(b, deep) - metric(b, shallow)],
    per seed (a seed needs all four runs), with a t interval: how much more depth changes family a than b."""
    cells = runs.pivot_table(index="seed", columns=["family", "depth"], values=metric, aggfunc="mean")
    want = [(a, deep), (a, shallow), (b, deep), (b, shallow)]
    cells = cells.reindex(columns=pd.MultiIndex.from_tuples(want)).dropna()
    d = (cells[want[0]] - cells[want[1]]) - (cells[want[2]] - cells[want[3]])
    return (*stats.mean_ci(d), len(d))


def _excluded(df: pd.DataFrame) -> str:
    n = int((~is_usable(df)).sum())
    return f"; {n} diverged, unconverged or collapsed run(s) left out of the gaps" if n else ""


def c2_effects(runs: pd.DataFrame, shallow: int, deep: int) -> dict:
    """C2 as a depth x family interaction on the overfitting gap (training minus seen-patient score): the LSTM's
    growth in gap from shallow to deep minus the CNN's, paired by seed; the same for patient shift, and the
    LSTM's growth alone, beside it."""
    pair = runs[runs["family"].isin(["lstm", "cnn"]) & runs["depth"].isin([shallow, deep])]
    effect = interaction(pair, "overfit", shallow, deep)
    j = judge(*effect, margin("C2", "gap"), what=f"(LSTM - CNN) change in overfitting gap, depth {deep} - {shallow}")
    # a run that failed to train has no gap (it did not fit, so it cannot overfit): say how many seeds that was
    failures = failure_counts(pair, {f: FAMILY_LABELS[f] for f in ("lstm", "cnn")}, [deep, shallow])
    j = Judgement(j.verdict, j.reason + _excluded(pair) + f" (failed to train: {failures})", j.mean, j.low, j.high,
                  j.margin, j.n)
    lstm = pair[pair["family"] == "lstm"]
    return {"interaction": effect, "shift": interaction(pair, "shift", shallow, deep),
            "growth": diff(lstm, "depth", "overfit", deep, shallow), "deep": deep, "shallow": shallow,
            "judgement": j}


def c2_table(e: dict) -> pd.DataFrame:
    rows = [(f"LSTM overfitting gap, depth {e['deep']} minus depth {e['shallow']}", e["growth"]),
            ("the same, LSTM minus CNN (C2's effect)", e["interaction"]),
            ("patient-shift gap, the same interaction", e["shift"])]
    return pd.DataFrame([{"comparison": what, "mean": v[0], "low": v[1], "high": v[2], "pairs": v[3]}
                         for what, v in rows])


def c2(e: dict, memo: dict, pair, runs) -> Verdict:
    summary = (f"From depth {e['shallow']} to {e['deep']} the LSTM's overfitting gap (training minus seen-patient "
               f"score) grew by {fmt_ci(*e['growth'][:3])}, and by {fmt_ci(*e['interaction'][:3])} more than the "
               f"CNN's; the same interaction on patient shift (seen minus new patients) was "
               f"{fmt_ci(*e['shift'][:3])}. With random labels the last-epoch training macro-F1 was "
               + "; ".join(f"{FAMILY_LABELS[f]} {fmt_ci(*memo[(f, True)])}" for f in pair if (f, True) in memo) + ".")
    return Verdict.of(e["judgement"], claim="C2", chapter="overfitting", summary=summary,
                      figure="fig-overfitting-c2", runs=keys(*runs),
                      effect=f"MIT-BIH: (LSTM − CNN) change in training − seen-patient score, depth {e['deep']} "
                             f"minus depth {e['shallow']}, paired by seed")


def layer_sizes(config: dict, n_classes: int) -> list[int]:
    """Parameters in each stacked layer, from a model built on the meta device (no memory, no data)."""
    options = {k: config[k] for k in models.OPTIONS[config["family"]] if k in config}
    with torch.device("meta"):
        model = models.build_model(config["family"], config["depth"], config["width"], n_classes=n_classes, **options)
    return [sum(p.numel() for p in layer.parameters()) for layer in model.layers]


def rms_profile(norms: dict, record: dict) -> np.ndarray:
    """RMS gradient per weight of layers.0 ... layers.{depth-1}: the layer's L2 norm / sqrt(its size), so a
    layer with more weights does not look stronger."""
    sizes = layer_sizes(record["config"], len(record["classes"]))
    values = [norms.get(f"layers.{i}") for i in range(len(sizes))]
    return np.array([np.nan if v is None else v / math.sqrt(n) for v, n in zip(values, sizes)])


def flow_ratio(record: dict) -> float:
    """log10 of the first over the last stacked layer's RMS gradient per weight (rms_profile: the
    L2 norm over sqrt(layer size), so a layer with more weights does not look stronger), averaged over epochs."""
    ratios = []
    for h in record["history"]:
        rms = rms_profile(h["grad_norms"], record)
        if len(rms) >= 2 and rms[0] > 0 and rms[-1] > 0:
            ratios.append(math.log10(rms[0] / rms[-1]))
    return float(np.mean(ratios)) if ratios else math.nan


def starve_sweep(selections: dict, pair, deep: int, early_layers: int, scales, seeds) -> list:
    """Each family's selected deep model with its first `early_layers` layers learning at each of `scales` x the
    rate (0: frozen at initialisation); the reference (scale 1) is the C2 run itself."""
    from .. import experiments
    return [c for f in pair for c in experiments.sweep(
        {**selections[(f, deep)].config, "early_layers": early_layers}, early_lr_scale=list(scales), seed=list(seeds))]


def with_reference(starve_runs: pd.DataFrame, c2_runs: pd.DataFrame, deep: int) -> pd.DataFrame:
    """The starved runs and their references (the C2 runs at the deep depth, early_lr_scale 1) in one table."""
    return pd.concat([c2_runs[c2_runs["depth"] == deep], starve_runs], ignore_index=True)


def c5(runs: pd.DataFrame, scale: float, deep: int, early_layers: int) -> Verdict:
    """C5 by intervention: starve the LSTM's first layers of learning (scale x the rate) and compare its
    overfitting gap with the unstarved run of the same seed. Vanishing gradients causing overfitting predicts
    a larger gap (claimed above zero); the comment (an untrained layer cannot overfit) a smaller or equal one.
    A starved LSTM that fails to train has no gap; where the gap leaves the claim open and starving made the LSTM
    fail in a share of seeds beyond C5/fail_share (starved minus normal, per seed), the claim is refuted: a model
    that does not fit its training data does not overfit it, which is the comment's argument."""
    lstm = runs[(runs["family"] == "lstm") & (runs["depth"] == deep)]
    g = diff(lstm, "early_lr_scale", "overfit", scale, 1.0)
    t = diff(lstm, "early_lr_scale", f"train_{METRIC}", scale, 1.0)
    j = judge(*g, margin("C5", "gap"), what=f"LSTM overfitting gap, first {early_layers} layer(s) at {scale:g}x "
                                            "the rate minus trained normally")
    j = Judgement(j.verdict, j.reason + _excluded(lstm), j.mean, j.low, j.high, j.margin, j.n)
    starved, normal = (failed_by_seed(lstm[lstm["early_lr_scale"] == s]) for s in (scale, 1.0))
    failed = (f"starved, the LSTM failed to train in {int(starved.sum())} of {len(starved)} seeds; trained normally, "
              f"in {int(normal.sum())} of {len(normal)}")
    effect = (f"LSTM training − seen-patient score, first {early_layers} layer(s) at x{scale:g} learning rate minus "
              "normal, paired by seed")
    by_failure = judge(*stats.estimate(starved - normal), margin("C5", "fail_share"), what="share of seeds failing, starved - normal")
    if j.verdict == "inconclusive" and by_failure.verdict == "supported":
        j = dataclasses.replace(by_failure, verdict="refuted", reason=(
            f"{failed}; {by_failure.reason}: a model whose first layers do not learn does not fit its training data, "
            f"so it cannot overfit it. The gap itself: {j.reason}"))
        effect = f"share of seeds in which the LSTM failed to train, first {early_layers} layer(s) starved minus normal"
    return Verdict.of(j, claim="C5", chapter="overfitting", figure="fig-overfitting-starve", runs=keys(lstm),
                      summary=f"Starving the first {early_layers} of the {deep} LSTM layers (learning rate x{scale:g}, "
                              f"the update a vanishing gradient would leave them) changed the overfitting gap by "
                              f"{fmt_ci(*g[:3])} and the training score by {fmt_ci(*t[:3])}; {failed}. C5 predicts a "
                              "larger gap, the comment in the seed a smaller one.",
                      effect=effect)



def starve_table(runs: pd.DataFrame, pair, scales, records: list[dict]) -> pd.DataFrame:
    """Per family and rate scale: the overfitting gap, training score and the measured gradient ratio
    (flow_ratio) against the unstarved runs, mean [95% CI] over seeds."""
    flow = pd.Series({r["key"]: flow_ratio(r) for r in records}, dtype=float)
    runs = runs.assign(flow=runs["key"].map(flow))
    rows = []
    for family in pair:
        f = runs[runs["family"] == family]
        for s in scales:
            g, t = diff(f, "early_lr_scale", "overfit", s, 1.0), diff(f, "early_lr_scale", f"train_{METRIC}", s, 1.0)
            rows.append({"family": FAMILY_LABELS[family], "rate scale": f"{s:g}",
                         "Δ overfitting gap (95% CI)": fmt_ci(*g[:3]), "Δ training score (95% CI)": fmt_ci(*t[:3]),
                         "pairs": g[3], "log10 first/last RMS gradient, unstarved":
                             fmt_ci(*stats.mean_ci(f.loc[f["early_lr_scale"] == 1.0, "flow"]))})
    return pd.DataFrame(rows)


def variety_sweep(selections: dict, pair, depth: int, beats: int, widths, patients, seeds) -> list:
    """Each family's selected model at `depth`, trained on exactly `beats` beats drawn from n of the DS1 training
    patients, for every width and n: amount of data fixed, its variety and the parameter count varied."""
    from .. import experiments
    return [c for f in pair for c in experiments.sweep(
        {**selections[(f, depth)].config, "train_fraction": 1.0, "cap_per_class": None, "train_beats": beats},
        width=list(widths),
        n_patients=list(patients),
        seed=list(seeds))]


def c6(runs: pd.DataFrame, widths, patients) -> Verdict:
    """C6 at a fixed number of training beats: the CNN's overfitting gap at the widest minus the narrowest width,
    paired by seed, for each number of training patients; combined over patient counts (so a claim that holds
    only for little variety reads "depends")."""
    cnn = runs[runs["family"] == "cnn"]
    wide, narrow = max(widths), min(widths)
    per = {f"{n} patients": judge(*diff(cnn[cnn["n_patients"] == n], "width", "overfit", wide, narrow),
                                  margin("C6", "gap"), what=f"CNN overfitting gap, width {wide} - {narrow}")
           for n in sorted(patients)}
    # the headline is the setting that decided the verdict (fewest patients first), else the fewest patients
    decided = combine(per).verdict
    head = next((n for n in sorted(patients) if per[f"{n} patients"].verdict == decided), min(patients))
    j = combine(per, headline=f"{head} patients")
    j = Judgement(j.verdict, j.reason + _excluded(cnn), j.mean, j.low, j.high, j.margin, j.n)
    few, many = min(patients), max(patients)
    shift = diff(cnn[cnn["width"] == narrow], "n_patients", "shift", few, many)
    beats = int(cnn["train_beats"].iloc[0]) if len(cnn) else 0
    return Verdict.of(j, claim="C6", chapter="overfitting", figure="fig-overfitting-variety", runs=keys(runs),
                      summary=f"At {beats} training beats, the CNN's overfitting gap at width {wide} minus {narrow} was "
                              + "; ".join(f"{k}: {fmt_ci(v.mean, v.low, v.high)}" for k, v in per.items())
                              + f". With {few} instead of {many} patients (same beats, width {narrow}) the step to "
                                f"new patients changed by {fmt_ci(*shift[:3])}.",
                      effect=f"CNN training − seen-patient score, width {wide} minus {narrow}, at {head} training "
                             "patients and a fixed beat count")


def variety_table(runs: pd.DataFrame, pair) -> pd.DataFrame:
    """Mean [95% CI] of the overfitting and patient-shift gaps per family, width and number of patients."""
    rows = []
    for (family, n, width), g in runs.groupby(["family", "n_patients", "width"]):
        rows.append({"family": FAMILY_LABELS[family], "patients": int(n), "width": int(width),
                     "parameters": int(g["n_params"].iloc[0]),
                     "overfitting gap": fmt_ci(*stats.mean_ci(g["overfit"])),
                     "patient shift": fmt_ci(*stats.mean_ci(g["shift"])), "usable runs": int(g["overfit"].notna().sum())})
    return pd.DataFrame(rows)


def c9(reg_runs: pd.DataFrame, regimes: dict) -> Verdict:
    """The strongest regime narrows the LSTM's overfitting gap (claimed below zero) without costing test score
    (the test difference claimed not below -margin)."""
    reference, strongest = list(regimes)[0], list(regimes)[-1]
    lstm = reg_runs[reg_runs["family"] == "lstm"]
    g = diff(lstm, "regime", "overfit", strongest, reference)
    t = diff(lstm, "regime", f"test_{METRIC}", strongest, reference)
    j = all_of({"the gap narrows": judge(*g, margin("C9", "gap"), claimed="below",
                                         what=f"LSTM overfitting gap, '{strongest}' - '{reference}'"),
                "test score kept": not_worse(*t, margin("C9", "test_score"), what="test score change")})
    j = Judgement(j.verdict, j.reason + _excluded(lstm), j.mean, j.low, j.high, j.margin, j.n)
    return Verdict.of(j, claim="C9", chapter="overfitting", figure="fig-overfitting-regularisation", runs=keys(lstm),
                      summary=f"The '{strongest}' regime {regimes[strongest]} changed the LSTM's overfitting gap by "
                              f"{fmt_ci(*g[:3])} and its test score by {fmt_ci(*t[:3])} against '{reference}'. "
                              "Whether depth is driven by architecture rather than by gradients is the depth "
                              "chapter's question.",
                      effect=f"LSTM training − seen-patient score, '{strongest}' minus '{reference}' regime")


# ---- the chapter's settings, sweeps, texts and figures (each figure one named function) ----

def check_params(pair, depths, pair_depth: int, regimes: dict, starve_scales, widths, patients,
                 variety_families=("cnn", "lstm")) -> None:
    """Fail before training on parameters the chapter cannot use, naming the parameter and the fix."""
    if sorted(pair) != ["cnn", "lstm"]:
        raise ValueError(f"pair must be [cnn, lstm] (C2 compares them), got {pair}")
    if len(depths) != 2 or not depths[0] < depths[1] or pair_depth not in depths:
        raise ValueError(f"depths must be [shallow, deep] (shallow < deep) and contain pair_depth {pair_depth}; "
                         f"got {depths}")
    if len(regimes) < 2:
        raise ValueError(f"regimes needs a reference (first) and a regularised regime (last); got {list(regimes)}")
    if not starve_scales or any(not 0 <= s < 1 for s in starve_scales):
        raise ValueError(f"starve_scales must be rate scales in [0, 1) (1 is the reference), got {starve_scales}")
    if len(set(widths)) < 2 or len(set(patients)) < 1:
        raise ValueError(f"widths needs two or more values and patients one or more; got {widths}, {patients}")
    if "cnn" not in variety_families or not set(variety_families) <= set(pair):
        raise ValueError(f"variety_families must include cnn (C6 reads it) and come from {pair}; got {variety_families}")


def describe(profile: str, seeds: int, base: dict, cinc_base: dict, depths, pair_depth: int,
             control_seeds: int | None = None, noise_depth: int | None = None) -> str:
    controls = (f" ({control_seeds} in experiments 7 and 8, on which no verdict rests)"
                if control_seeds and control_seeds != seeds else "")
    cap = "" if base.get("cap_per_class") is None else f" (at most {base['cap_per_class']} of each class)"
    return (f"Profile **{profile}**: {seeds} seed(s) per configuration{controls}. This chapter's own MIT-BIH runs: beats at "
            f"{base['fs']:g} Hz, {base.get('train_fraction', 1):.0%} of the DS1 training beats{cap} with the last "
            f"{base['seen_holdout']:.0%} of each training record held out as seen-patient beats, at most "
            f"{base['epochs']} epochs with early stopping after {base['patience']} without a better validation score; "
            f"a CNN and an LSTM at depths {depths[0]} and {depths[1]}, width {base['width']}, each tuned by the "
            f"protocol's selection; the later experiments use depth {pair_depth}. Label noise: depth "
            f"{noise_depth or pair_depth}, CinC 2017 at "
            f"{cinc_base['fs']:g} Hz, {cinc_base['crop_s']:g} s crops, {cinc_base['train_fraction']:.0%} of the "
            "training records.")


def select_pair(base: dict, pair, depths, seeds, executor="local", fresh=False) -> dict:
    """protocol.select for each family of the pair at each depth: (family, depth) -> Selection."""
    from .. import protocol
    return {(f, d): protocol.select(base, f, d, seeds=list(seeds), executor=executor, fresh=fresh)
            for f in pair for d in depths}


def chosen(selections: dict, pair, depth: int, seeds, **changes) -> list:
    """Each family's selected configuration at `depth`, with `changes`, for every seed."""
    from .. import experiments
    return [c for f in pair for c in experiments.sweep({**selections[(f, depth)].config, **changes}, seed=list(seeds))]


def train(configs, executor="local", fresh=False) -> pd.DataFrame:
    """Stored runs of `configs` (training the missing), with their gaps (diverged and collapsed runs have none)."""
    from .. import experiments
    return with_gaps(experiments.run_sweep(configs, executor=executor, fresh=fresh))


def regime_sweep(bases: dict, regimes: dict, seeds) -> tuple[list, dict]:
    """Every regime (a change to each family's base; bases: family -> config dict): configs and key -> regime."""
    from .. import experiments
    regime_of, configs = {}, []
    for name, options in regimes.items():
        for base in bases.values():
            for c in experiments.sweep({**base, **options}, seed=list(seeds)):
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
    for metric, ls in ((f"train_{METRIC}", "--"), (f"test_{METRIC}", "-")):
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
    from ..plots import ci_lines, finish
    fig, axes = _plt().subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, (dataset, title) in zip(axes, [("mitdb", "MIT-BIH, inter-patient"), ("cinc2017", "CinC 2017")]):
        ci_lines(ax, stats.summarise(depth_runs[depth_runs["dataset"] == dataset], ["family", "depth"], "gap"),
                 x="depth", logx=True)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set(title=title, xlabel="depth (stacked layers)", ylabel="train − test score")
    return finish(fig, "no usable run has a gap", ncol=5)


def fig_gap_params(depth_runs: pd.DataFrame):
    """MIT-BIH: train and test macro-F1 versus depth, and each run's gap against its parameters."""
    from ..plots import FAMILY_COLORS, finish
    mit = depth_runs[depth_runs["dataset"] == "mitdb"]
    fig, axes = _plt().subplots(1, 2, figsize=(9, 4))
    _train_test_lines(axes[0], mit, "depth", label_train=False)
    _log_axis(axes[0], mit["depth"])
    axes[0].set(title="Train (dashed) and test (solid)", xlabel="depth (stacked layers)", ylabel="score")
    gaps = mit.dropna(subset=["gap"])   # unusable runs have no gap
    for family, g in gaps.groupby("family", sort=False):
        axes[1].scatter(g["n_params"], g["gap"], color=FAMILY_COLORS[family], label=FAMILY_LABELS[family], s=25)
    if len(gaps):
        axes[1].set_xscale("log")
        axes[1].xaxis.set_minor_formatter(_plt().NullFormatter())
    axes[1].axhline(0, color="0.4", lw=0.8)
    axes[1].set(title="Gap versus parameters", xlabel="parameters (log scale)", ylabel="train − test score")
    return finish(fig, "no usable run has a gap", ncol=5)


def fig_c2(runs: pd.DataFrame, pair, depths):
    """Training, seen-patient and new-patient (DS2) score of each family at the shallow and deep depth
    (fig-overfitting-c2): the first drop is overfitting, the second patient shift."""
    from ..plots import FAMILY_COLORS, finish
    fig, axes = _plt().subplots(1, len(pair), figsize=(9, 4), sharey=True)
    parts = [(f"train_{METRIC}", "training"), (f"seen_{METRIC}", "seen\npatients"), (f"test_{METRIC}", "new\npatients")]
    usable = runs[is_usable(runs)]
    for ax, family in zip(np.atleast_1d(axes), pair):
        for depth, ls in zip(depths, ("--", "-")):
            g = usable[(usable["family"] == family) & (usable["depth"] == depth)]
            s = [stats.ci(g[m], m) if len(g) else (math.nan,) * 3 for m, _ in parts]
            mean = [v[0] for v in s]
            err = np.nan_to_num([[v[0] - v[1] for v in s], [v[2] - v[0] for v in s]])
            ax.errorbar(range(3), mean, yerr=err, ls=ls, marker="o", capsize=3, color=FAMILY_COLORS[family],
                        label=f"{FAMILY_LABELS[family]}, depth {depth}")
        ax.set_xticks(range(3), [label for _, label in parts])
        ax.set(title=FAMILY_LABELS[family])
    np.atleast_1d(axes)[0].set_ylabel("score (macro-F1, N S V F)")
    return finish(fig)


def fig_starve(runs: pd.DataFrame, pair, scales):
    """Overfitting gap and training score with the first layers starved, per family (fig-overfitting-starve)."""
    order = sorted(set(scales) | {1.0})
    return _categories(runs, "early_lr_scale", order, pair, [f"×{s:g}" for s in order], [OVERFIT, TRAIN],
                       "learning rate of the first layers", 0)


def fig_variety(runs: pd.DataFrame, pair, widths):
    """Overfitting gap and patient shift against the number of training patients at a fixed beat count, one
    line per family and width (fig-overfitting-variety)."""
    from ..plots import FAMILY_COLORS, finish
    fig, axes = _plt().subplots(1, 2, figsize=(9, 4), sharex=True)
    for ax, (metric, label) in zip(axes, (OVERFIT, SHIFT)):
        s = stats.summarise(runs, ["family", "width", "n_patients"], metric, bounded=False)
        for (family, width), g in s.groupby(["family", "width"]):
            ls = "-" if width == max(widths) else "--"
            ax.plot(g["n_patients"], g["mean"], ls=ls, marker="o", color=FAMILY_COLORS[family],
                    label=f"{FAMILY_LABELS[family]}, width {width}")
            ax.fill_between(g["n_patients"], g["low"], g["high"], color=FAMILY_COLORS[family], alpha=0.12, lw=0)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set(xlabel="DS1 training patients (same number of beats)", ylabel=label, title=label)
    return finish(fig)


def _categories(runs: pd.DataFrame, x: str, order, pair, xlabels, metrics, xlabel: str, zero_on: int | None,
                rotation: float = 0):
    """Two panels of per-family CI points over the categories of `x` (regimes, splits, label sets)."""
    from ..plots import finish
    fig, axes = _plt().subplots(1, 2, figsize=(9, 4))
    for ax, (metric, label) in zip(axes, metrics):
        _ci_points(ax, stats.summarise(runs, ["family", x], metric), x, order, pair, xlabels)
        ax.set(xlabel=xlabel, ylabel=label, title=label)
        ax.tick_params(axis="x", rotation=rotation)
    if zero_on is not None:
        axes[zero_on].axhline(0, color="0.4", lw=0.8)
    return finish(fig)


GAP, TEST_F1 = ("gap", "train − test score"), (f"test_{METRIC}", "test score")
OVERFIT, SHIFT = ("overfit", "train − seen-patient score"), ("shift", "seen − new-patient score")
TRAIN = (f"train_{METRIC}", "training score")


def fig_regimes(reg_runs: pd.DataFrame, regimes: dict, pair):
    order = list(regimes)
    return _categories(reg_runs, "regime", order, pair, order, [OVERFIT, TEST_F1], "regime", 0, rotation=25)


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
            g, t = diff(f, "regime", "overfit", name, reference), diff(f, "regime", f"test_{METRIC}", name, reference)
            rows.append({"regime": name, "family": FAMILY_LABELS[family], "Δ overfitting gap (95% CI)": fmt_ci(*g[:3]),
                         "Δ test score (95% CI)": fmt_ci(*t[:3]), "pairs": g[3]})
    return pd.DataFrame(rows)


def memo_curves(records: list[dict]) -> pd.DataFrame:
    """Training macro-F1 per epoch of each run, from its history: family, shuffled, seed, epoch, train_f1."""
    return pd.DataFrame([{**{k: r["config"][k] for k in ("family", "shuffle_labels", "seed")},
                          "epoch": h["epoch"], "train_f1": h["train_f1"]}
                         for r in records for h in r["history"]]).rename(columns={"shuffle_labels": "shuffled"})


def fig_memorisation(curves: pd.DataFrame):
    from ..plots import FAMILY_COLORS, finish
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
    return finish(fig, "no stored training history")


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
             "accuracy": "0.862", "macro-F1 (N, S, V, F)": "not reported"},
            {"source": "Kachuee et al. 2018, residual CNN", "split": "by beat (patients shared), 125 Hz",
             "accuracy": "0.934", "macro-F1 (N, S, V, F)": "not reported"},
            {"source": "always 'normal'", "split": "inter-patient (DS2)", "accuracy": f"{m:.3f}",
             "macro-F1 (N, S, V, F)": f"{2 * m / (1 + m) / 4:.3f}"}]
    for (family, split), g in usable(leak_runs).groupby(["family", "split"]):
        rows.append({"source": f"this book: {FAMILY_LABELS[family]}, depth {pair_depth}",
                     "split": {"inter": "inter-patient (DS1 → DS2)", "intra": "by beat (patients shared)"}[split],
                     "accuracy": fmt_ci(*stats.ci(g["test_acc"], "test_acc")),
                     "macro-F1 (N, S, V, F)": fmt_ci(*stats.ci(g["test_score"], "test_score"))})
    return pd.DataFrame(rows)


def paired_text(runs: pd.DataFrame, pair, by: str, metric: str, a, b, what: str) -> str:
    """'<what>: LSTM 0.1 [..]; CNN ..' for metric at a minus at b, per family, paired by seed."""
    d = {f: diff(runs[runs["family"] == f], by, metric, a, b) for f in pair}
    return f"{what} (paired by seed): " + "; ".join(f"{FAMILY_LABELS[f]} {fmt_ci(*d[f][:3])}" for f in pair) + "."


def fig_label_noise(noise_runs: pd.DataFrame, pair):
    return _categories(noise_runs, "labels", ["final", "original"], pair, ["final labels", "original labels"],
                       [TEST_F1, GAP], "training labels (test: final)", 1)
