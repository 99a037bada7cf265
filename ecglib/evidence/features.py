"""The features chapter's analysis: receptive fields (no training), the pattern-span task (C3, C7), parameters
per layer (C10), gates at matched parameters, real ECG (C4, saliency, first-layer filters), and the depth each
task needs (section 5): depth at equal receptive field (C3, C7), the span sweep, GunPoint and MIT-BIH (C13), the
product task (C11: layers gates save) and RR-interval context (C4).

    span = span_sweep(syn_base, cnn_depths, tcn_depths, spans, seeds)      # RunConfigs
    runs = with_fields(experiments.run_sweep(span))                        # + receptive-field class per run
    c7(runs, generous_runs), c3(runs, generous_runs)                       # ledger.Verdicts
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import experiments, models, plots, protocol, stats, synthetic
from ..protocol import usable
from ..ledger import Verdict, fmt_ci
from ..plots import FAMILY_COLORS, FAMILY_LABELS
from ..verdicts import Judgement, all_of, combine, judge, margin, not_worse
from . import keys
from . import depth as depth_ev

CONV = ["cnn", "tcn"]
RECURRENT = ["lstm", "gru"]
P = synthetic.PERIOD
CHANCE = 0.5   # the pattern-span task is balanced
SCALES = {"QRS (0.1 s)": 0.1, "one beat (0.8 s)": 0.8, "AF irregularity (3-5 s)": 3.0}
TASK_NAMES = {"mitdb": "MIT-BIH", "cinc2017": "CinC 2017"}
_NAN4 = (math.nan, math.nan, math.nan, 0)


def n_params(family: str, depth: int, width: int = 32, **kw) -> int:
    """Parameters of a model built on the meta device (no memory)."""
    with torch.device("meta"):
        return models.build_model(family, depth, width, **kw).n_params



def _per_seed(runs: pd.DataFrame, metric: str, **where) -> pd.Series:
    sel = runs
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel.set_index("seed")[metric]


def paired(runs: pd.DataFrame, metric: str, a: dict, b: dict) -> tuple:
    """(mean, low, high, n) over seeds of metric(a) - metric(b), the two runs of each seed paired."""
    return stats.estimate(_per_seed(runs, metric, **a) - _per_seed(runs, metric, **b))


# ---- 1. receptive-field arithmetic ----

def receptive_fields(depths, families=None) -> pd.DataFrame:
    """family, depth, rf (input samples), read from the models themselves."""
    families = families or models.CONV_FAMILIES
    return pd.DataFrame([{"family": f, "depth": d, "rf": models.build_model(f, d).receptive_field}
                         for f in families for d in depths])


def _same_as_cnn(rf: pd.DataFrame) -> list[str]:
    """Families whose receptive fields equal the plain CNN's at every depth (drawn as one line)."""
    cnn = rf[rf.family == "cnn"].rf.tolist()
    return [f for f in rf.family.unique() if f != "tcn" and rf[rf.family == f].rf.tolist() == cnn]


def fig_receptive_fields(rf: pd.DataFrame, fs: dict[str, float], window_s: dict[str, float]):
    """Receptive field in seconds versus depth per dataset, against ECG time scales and the input length."""
    same = _same_as_cnn(rf)
    depths = sorted(rf.depth.unique())
    fig, axes = plt.subplots(1, len(fs), figsize=(11, 4.5))
    for ax, (name, rate) in zip(np.atleast_1d(axes), fs.items()):
        for f in ["cnn", "tcn"]:
            g = rf[rf.family == f]
            label = " = ".join(FAMILY_LABELS[x] for x in same) if f == "cnn" else FAMILY_LABELS[f]
            ax.plot(g.depth, g.rf / rate, marker="o", color=FAMILY_COLORS[f], label=label)
        lines = [(s, label, "--", c) for (label, s), c in zip(SCALES.items(), ["0.35", "0.5", "0.65"])]
        lines.append((window_s[name], "input length", ":", "k"))
        ax.axhspan(3, 5, color="0.85", alpha=0.4, lw=0)
        # each line is named in the right margin, where no data runs; of two close lines, the lower name goes
        # under its line and the upper one over it, so the names don't overlap
        lines.sort()
        for i, (s, label, ls, c) in enumerate(lines):
            ax.axhline(s, ls=ls, color=c, lw=1)
            near_below = i > 0 and s / lines[i - 1][0] < 1.6
            near_above = i + 1 < len(lines) and lines[i + 1][0] / s < 1.6
            va = "bottom" if near_below else "top" if near_above else "center"
            ax.text(1.02, s, label, fontsize=9, color="0.3", va=va, transform=ax.get_yaxis_transform())
        ax.set(yscale="log", xlabel="depth (conv layers)", ylabel="receptive field (s)", title=f"{name} at {rate:g} Hz")
    return plots.finish(fig)


def layers_to_see(rf: pd.DataFrame, fs: dict[str, float]) -> pd.DataFrame:
    """Per dataset and family: the fewest layers whose receptive field spans each ECG time scale."""
    rows = []
    for name, rate in fs.items():
        for f in ["cnn", "tcn"]:
            g = rf[rf.family == f]
            row = {"dataset": name, "fs (Hz)": rate, "family": FAMILY_LABELS[f]}
            for label, s in SCALES.items():
                hit = g[g.rf >= s * rate]
                row[f"layers to see {label}"] = str(int(hit.depth.min())) if len(hit) else f"> {g.depth.max()}"
            rows.append(row)
    return pd.DataFrame(rows)


# ---- 2. the pattern-span task ----

def span_text(spans) -> str:
    return (f"One cycle is {P} samples, so a pattern of span $s$ covers $(s+1) \\cdot {P}$ samples: "
            + ", ".join(f"span {s}: {synthetic.pattern_samples(s)} samples" for s in spans)
            + f". A model can tell the classes apart only if it sees from the first of the $s$ positive cycles "
            f"to the negative one, at least $(s-1) \\cdot {P} + 2$ samples "
            + ", ".join(f"({(s - 1) * P + 2} for span {s})" for s in spans)
            + "; below that it is blind by construction, and from the full pattern length on it sees everything.")


def fig_task(span: int, length: int):
    """One sequence with the pattern and one without (same distractors), cycle signs written above."""
    example = synthetic.pattern_span_splits(span, length, 8, seed=0)["train"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True)
    for ax, label in zip(axes, [1, 0]):
        i = int(np.flatnonzero(example.y == label)[0])
        x, signs, start = example.X[i, 0], example.meta.signs[i], example.meta.pattern_cycle[i]
        ax.plot(np.arange(length), x, lw=1, color="0.25")
        for c, s in enumerate(signs):
            ax.text((c + 0.5) * P, 1.55, s, ha="center", fontsize=8, color="0.4")
        if start >= 0:
            ax.axvspan(start * P, (start + span + 1) * P, color="0.8", lw=0)   # grey: family colours mean models
        ax.set(ylim=(-2, 2), ylabel="amplitude", title=f"label: {example.classes[label]}")
    axes[-1].set_xlabel("time (samples)")
    return fig


def syn_base(length, n_train, epochs, batch_size, max_batches) -> dict:
    return {"dataset": "synthetic", "length": length, "n_train": n_train, "epochs": epochs,
            "batch_size": batch_size, "width": 32, "max_batches": max_batches}


def span_sweep(base: dict, cnn_depths, tcn_depths, spans, seeds) -> list:
    """CNNs and TCNs of growing depth against one-layer LSTM and GRU, on every span."""
    return (experiments.sweep(base, family=["cnn"], depth=list(cnn_depths), span=list(spans), seed=list(seeds))
            + experiments.sweep(base, family=["tcn"], depth=list(tcn_depths), span=list(spans), seed=list(seeds))
            + experiments.sweep(base, family=RECURRENT, depth=[1], span=list(spans), seed=list(seeds)))


def generous_sweep(base: dict, n_train, epochs, spans, seeds) -> list:
    """The one-layer LSTM with a generous budget (early stopping off): failing to learn, or too little budget?
    patience None, not `epochs`: a run with patience p counts as converged only if its best epoch came p epochs before
    its last, which no run of `epochs` epochs can meet, so none would be usable; without early stopping the run is
    judged converged when its best epoch came train.NO_PATIENCE_GAP epochs before the last."""
    return experiments.sweep({**base, "n_train": n_train, "epochs": epochs, "patience": None},
                             family=["lstm"], depth=[1], span=list(spans), seed=list(seeds))


def field_class(rf, span: int) -> str:
    """Where a receptive field stands against the pattern: blind, partial, covers (or whole input: recurrent)."""
    if rf is None or (isinstance(rf, float) and math.isnan(rf)):
        return "whole input"
    if rf < (span - 1) * P + 2:
        return "blind"
    return "covers" if rf >= synthetic.pattern_samples(span) else "partial"


def with_fields(span_runs: pd.DataFrame) -> pd.DataFrame:
    return span_runs.assign(field=[field_class(r, s) for r, s in zip(span_runs.receptive_field, span_runs.span)])


def span_summary(span_runs: pd.DataFrame) -> pd.DataFrame:
    return stats.summarise(span_runs, ["span", "family", "depth"], "test_acc")


def fig_span(summary: pd.DataFrame, spans, depths: dict[str, list]):
    """Test accuracy of CNNs versus depth per span; one-layer recurrent models as bands; covering depths dotted."""
    fig, axes = plt.subplots(1, len(spans), figsize=(5.5 * len(spans), 4.3), sharey=True, squeeze=False)
    from ..plots import ci_lines
    for ax, span in zip(axes[0], spans):
        s = summary[summary.span == span]
        ci_lines(ax, s[s.family.isin(CONV)], x="depth")
        for f in RECURRENT:
            r = s[s.family == f]
            if len(r):
                c = FAMILY_COLORS[f]
                ax.axhline(r["mean"].iloc[0], color=c, ls="--", label=f"{FAMILY_LABELS[f]}, 1 layer")
                if r["low"].notna().iloc[0]:
                    ax.axhspan(r["low"].iloc[0], r["high"].iloc[0], color=c, alpha=0.12, lw=0)
        for f, ds in depths.items():
            covering = [d for d in ds if models.build_model(f, d).receptive_field >= synthetic.pattern_samples(span)]
            if covering:
                ax.axvline(min(covering), color=FAMILY_COLORS[f], ls=":", lw=1.5)
        ax.axhline(CHANCE, color="0.5", lw=0.8)
        ax.set(title=f"span {span}: pattern of {synthetic.pattern_samples(span)} samples", xlabel="depth (layers)",
               ylabel="test accuracy", ylim=(0.35, 1.02))
    return plots.finish(fig)


def span_table(span_runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    tab = span_runs.groupby(["span", "family", "depth"], as_index=False).agg(
        receptive_field=("receptive_field", "first"), field=("field", "first"))
    tab = tab.merge(summary, on=["span", "family", "depth"]).rename(
        columns={"mean": "test acc", "low": "CI low", "high": "CI high", "n": "seeds"})
    tab["receptive_field"] = tab["receptive_field"].map(lambda v: "whole input" if pd.isna(v) else str(int(v)))
    return tab


def generous_table(generous_runs: pd.DataFrame) -> pd.DataFrame:
    return stats.summarise(generous_runs, ["span", "family"], "test_acc").rename(
        columns={"mean": "test acc", "low": "CI low", "high": "CI high", "n": "seeds"})


def span_effects(span_runs: pd.DataFrame, generous_runs: pd.DataFrame, span: int) -> dict:
    """The effects C3 and C7 read on one span, each (mean, low, high, n) over seeds, paired by seed:
    blind: the deepest blind CNN's accuracy above chance; sees: the first CNN depth whose receptive field spans
    the whole pattern (the claim's words; the first that reaches the shortest telling window if none does) minus
    that blind depth; lstm: the one-layer LSTM minus that blind CNN (and with the generous budget).
    Runs that diverged or did not converge are left out; runs at chance are kept on purpose: here chance is the
    outcome measured (a blind CNN is at chance by design), not a training failure. Decisions from a few seeds use
    t intervals (stats.ci with bounded=False), as every verdict does."""
    span_runs, generous_runs = usable(span_runs, at_chance_ok=True), usable(generous_runs, at_chance_ok=True)
    s = span_runs[span_runs.span == span]
    cnn = s[s.family == "cnn"]
    blind = sorted(cnn[cnn.field == "blind"].depth.unique())
    # a field that only reaches the shortest telling window ("partial") need not learn the pattern: the claim is
    # about the depth at which the field spans it
    seeing = (sorted(cnn[cnn.field == "covers"].depth.unique()) or sorted(cnn[cnn.field != "blind"].depth.unique()))
    out = {"span": span, "last_blind": int(blind[-1]) if blind else None,
           "first_seeing": int(seeing[0]) if seeing else None,
           "blind": _NAN4, "sees": _NAN4, "lstm": _NAN4, "lstm_generous": _NAN4}
    if not blind:
        return out
    lb = {"family": "cnn", "depth": out["last_blind"]}
    at_blind = _per_seed(s, "test_acc", **lb)
    out["blind"] = (*(v - CHANCE for v in stats.ci(at_blind, "test_acc", bounded=False)), int(at_blind.notna().sum()))
    if seeing:
        out["sees"] = paired(s, "test_acc", {"family": "cnn", "depth": out["first_seeing"]}, lb)
    out["lstm"] = paired(s, "test_acc", {"family": "lstm", "depth": 1}, lb)
    g = generous_runs[generous_runs.span == span] if len(generous_runs) else generous_runs
    if len(g):
        out["lstm_generous"] = stats.estimate(_per_seed(g, "test_acc") - at_blind)
    return out


def solved_at(summary: pd.DataFrame, span: int, solved: float = 0.9) -> dict:
    """Per conv family, the first depth whose mean test accuracy reaches `solved` on `span` (None: never)."""
    s = summary[summary.span == span]
    return {f: next((int(r.depth) for r in s[s.family == f].sort_values("depth").itertuples() if r.mean >= solved),
                    None) for f in CONV}


_RANK = {"supported": 2, "inconclusive": 1, "refuted": 0}


def _span_parts(e: dict, claim: str) -> dict[str, Judgement]:
    """The three parts of the pattern-span argument on one span, judged with `claim`'s margins."""
    m = margin(claim, "test_acc")
    mean, low, high, n = e["blind"]   # non-superiority over chance: chance - accuracy not below -margin
    blind = not_worse(-mean, -high, -low, n, margin("C7", "chance"),
                      what=f"chance minus the depth-{e['last_blind']} (blind) CNN's accuracy")
    sees = judge(*e["sees"], m, what=f"CNN depth {e['first_seeing']} minus depth {e['last_blind']}, test accuracy")
    lstm = max((judge(*e[k], m, what=f"1-layer LSTM{' (generous budget)' if k != 'lstm' else ''} minus the blind "
                                     f"CNN, test accuracy") for k in ("lstm", "lstm_generous")
                if k == "lstm" or e[k][3]),
               key=lambda j: _RANK[j.verdict])   # "with either budget"
    return {"blind CNN at chance": blind, "CNN gains once it sees the pattern": sees, "one LSTM layer learns it": lstm}


def field_judgement(effect: tuple, claim: str) -> Judgement:
    """Depth at equal receptive field: the deepest minus the one-layer CNN whose kernel covers the pattern."""
    return judge(*effect, margin(claim, "test_acc"),
                 what="test accuracy, deepest minus one-layer CNN at equal receptive field")


def c7_judgement(effects: list[dict], field: tuple | None = None) -> Judgement:
    """Per span: all_of(blind CNN at chance, CNN gains once it sees, one LSTM layer learns it), except that when
    neither the CNN nor the LSTM learned anything the span decides nothing (a budget failure, not a refutation);
    spans combined like tasks. With `field` (field_effect on the first span), C7's "a CNN needs several layers"
    must also hold at equal receptive field: all_of(that, the spans)."""
    per = {}
    for e in effects:
        parts = _span_parts(e, "C7")
        j = all_of({k: parts[k] for k in ("one LSTM layer learns it", "blind CNN at chance",
                                          "CNN gains once it sees the pattern")})
        if (j.verdict == "refuted" and parts["blind CNN at chance"].verdict != "refuted"
                and parts["CNN gains once it sees the pattern"].verdict != "supported"):
            j = Judgement("inconclusive", "nothing learned the pattern within the budget: " + j.reason,
                          j.mean, j.low, j.high, j.margin, j.n)
        per[f"span {e['span']}"] = j
    spans = combine(per)
    if field is None:
        return spans
    return all_of({"several layers at equal receptive field": field_judgement(field, "C7"), "pattern span": spans})


def c3_judgement(effects: list[dict], field: tuple | None = None) -> Judgement:
    """C3 on the pattern-span task: the CNN builds features level by level and the recurrent layer carries them
    across time (one layer learns it); spans combined like tasks. Without `field` the CNN part is "blind at chance,
    gains once it sees", true of any detector by construction of the task; with it (field_effect), the CNN part is
    depth at equal receptive field, which can fail: a one-layer CNN with a wide kernel may do as well."""
    per = {}
    for e in effects:
        p = _span_parts(e, "C3")
        cnn = (field_judgement(field, "C3") if field is not None else
               all_of({k: p[k] for k in ("CNN gains once it sees the pattern", "blind CNN at chance")}))
        per[f"span {e['span']}"] = all_of({"CNN level by level": cnn, "LSTM across time": p["one LSTM layer learns it"]})
    return combine(per)


def effects_text(e: dict, solved: dict) -> str:
    s0 = e["span"]
    head = (f"On span {s0}, the one-layer LSTM minus the deepest CNN that is blind to the pattern "
            f"(depth {e['last_blind']}): {fmt_ci(*e['lstm'][:3])} test accuracy. Going from that depth to the first "
            f"CNN depth whose field spans the pattern (depth {e['first_seeing']}) changes accuracy by "
            f"{fmt_ci(*e['sees'][:3])}. "
            if e["last_blind"] is not None else f"On span {s0} no CNN depth tried is blind to the pattern. ")
    return head + "; ".join(f"{FAMILY_LABELS[f]} first solves it at depth {d}" if d else
                            f"{FAMILY_LABELS[f]} does not solve it at the depths tried" for f, d in solved.items()) + "."


def c3_c7(span_runs: pd.DataFrame, generous_runs: pd.DataFrame, spans, field_runs=None) -> list[Verdict]:
    """The C3 and C7 verdicts from the pattern-span runs (headline: the first span); field_runs (field_sweep's, on
    the first span) add depth at equal receptive field."""
    summary = span_summary(span_runs)
    effects = [span_effects(span_runs, generous_runs, s) for s in spans]
    e, solved = effects[0], solved_at(summary, spans[0])
    runs = keys(*[r for r in (span_runs, generous_runs, field_runs) if r is not None and len(r)])
    field = None if field_runs is None else field_effect(field_runs)
    j3, j7 = c3_judgement(effects, field), c7_judgement(effects, field)
    lstm = summary[(summary.family == "lstm") & (summary.span == spans[0])]["mean"]
    lstm_text = (f"one LSTM layer reaches mean accuracy {lstm.iloc[0] if len(lstm) else math.nan:.2f} on span "
                 f"{spans[0]} (features carried across time)")
    blind = e["last_blind"] is not None
    c3 = Verdict.of(j3, claim="C3", chapter="features", figure="fig-features-span", runs=runs,
                    effect=(f"test accuracy, CNN depth {e['first_seeing']} minus depth {e['last_blind']} (span {spans[0]})"
                            if blind else f"test accuracy, CNN gain once it sees the pattern (span {spans[0]})"),
                    summary=(f"On the pattern-span task a CNN stays at chance while its receptive field is shorter than "
                             f"the pattern and gains {fmt_ci(*e['sees'][:3])} once it sees it (features built level by "
                             f"level); {lstm_text}." if blind else
                             f"On span {spans[0]} no CNN depth tried is blind to the pattern, so the level-by-level "
                             f"part cannot be read; {lstm_text}."))
    if field is not None:
        c3.effect = f"test accuracy, deepest minus one-layer CNN at equal receptive field (span {spans[0]})"
        c3.summary = (f"At equal receptive field (kernels sized to cover the span-{spans[0]} pattern), the deepest CNN "
                      f"minus the one-layer CNN: {fmt_ci(*field[:3])} test accuracy; {lstm_text}.")
    c3 = _with_estimate(c3, field if field is not None else e["sees"])
    c7 = Verdict.of(j7, claim="C7", chapter="features", figure="fig-features-span", runs=runs,
                    effect=(f"test accuracy, 1-layer LSTM minus the deepest blind CNN (depth {e['last_blind']}, "
                            f"span {spans[0]})" if blind else
                            f"test accuracy, 1-layer LSTM minus a blind CNN (span {spans[0]}: none tried)"),
                    summary=effects_text(e, solved) + (" The layers a CNN needs follow its receptive field." if field is None
                                                       else f" At equal receptive field, the deepest CNN minus the "
                                                            f"one-layer CNN: {fmt_ci(*field[:3])}."))
    return [c3, _with_estimate(c7, e["lstm"])]


def _with_estimate(v: Verdict, est: tuple) -> Verdict:
    """The verdict's headline number set to one effect (all_of carries its first part's)."""
    v.value, v.low, v.high = (float(x) for x in est[:3])
    return v


# ---- 3. parameters per layer and gates ----

def params_per_layer(widths, families=("cnn", "glucnn", "rnn", "gru", "lstm")) -> pd.DataFrame:
    """Parameters of one middle layer (input width = width), read from the modules."""
    return pd.DataFrame([{"family": f, "width": w,
                          "parameters": sum(p.numel() for p in models.build_model(f, 2, w).layers[1].parameters())}
                         for f in families for w in widths])


def params_table(per_layer: pd.DataFrame) -> pd.DataFrame:
    wide = per_layer.pivot(index="width", columns="family", values="parameters").reset_index()
    for f in ["rnn", "gru", "lstm", "glucnn"]:
        wide[f"{f} / cnn"] = wide[f] / wide["cnn"]
    return wide


def fig_params(per_layer: pd.DataFrame):
    kernel = models.OPTIONS["cnn"]["kernel_size"]
    widths = sorted(per_layer.width.unique())
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for f, g in per_layer.groupby("family", sort=False):
        ax.plot(g.width, g.parameters, marker="o", color=FAMILY_COLORS[f], label=FAMILY_LABELS[f])
    ax.set(xscale="log", yscale="log", xlabel="width (channels or hidden units)", ylabel="parameters per layer",
           title=f"Parameters per layer (conv kernel {kernel})")
    plots.value_ticks(ax, widths)
    return plots.finish(fig)


def c10(per_layer: pd.DataFrame, width: int = 32) -> Verdict:
    """Each recurrent cell's parameters per layer over the conv layer's, minus 1 (claimed above zero; exact counts,
    so n=None), combined over cells: all more -> supported, none -> refuted, some -> depends."""
    at = per_layer[per_layer.width == width].set_index("family").parameters
    ratio = {f: at[f] / at["cnn"] for f in ["rnn", "gru", "lstm"]}
    per = {FAMILY_LABELS[f]: judge(r - 1, r - 1, r - 1, None, margin("C10", "param_ratio"),
                                   what=f"{FAMILY_LABELS[f]} / conv parameters - 1") for f, r in ratio.items()}
    j = combine(per, headline=FAMILY_LABELS["lstm"])
    kernel = models.OPTIONS["cnn"]["kernel_size"]
    v = Verdict.of(j, claim="C10", chapter="features", figure="fig-features-params",
                   effect=f"parameters per layer, LSTM / conv (width {width}, exact count)",
                   summary=(f"At width {width} one conv layer (kernel {kernel}) has {at['cnn']:,} parameters; a vanilla "
                            f"RNN layer {at['rnn']:,} ({ratio['rnn']:.2f}x), a GRU layer {at['gru']:,} "
                            f"({ratio['gru']:.2f}x), an LSTM layer {at['lstm']:,} ({ratio['lstm']:.2f}x): only cells with "
                            f"more gates than kernel taps / 2 have more, whatever the width."))
    return _with_estimate(v, (float(ratio["lstm"]),) * 3)


N_CLASSES = {"synthetic": 2, "mitdb": 5}
METRIC = {"synthetic": "test_acc", "mitdb": "test_score"}


def gate_sweeps(bases: dict[str, dict], conv_depth: int, rnn_depths: dict[str, int], seeds) -> dict[str, list]:
    """Per task: plain vs gated CNN at conv_depth and LSTM vs vanilla RNN, the ungated partner's width matched to
    the gated model's parameter count (models.width_for_params)."""
    out = {}
    for data, base in bases.items():
        k, w, rd = N_CLASSES[data], base["width"], rnn_depths[data]
        w_glu = models.width_for_params("glucnn", conv_depth, n_params("cnn", conv_depth, w, n_classes=k), n_classes=k)
        w_rnn = models.width_for_params("rnn", rd, n_params("lstm", rd, w, n_classes=k), n_classes=k)
        seeds = list(seeds)
        out[data] = (experiments.sweep({**base, "depth": conv_depth}, family=["cnn"], seed=seeds)
                     + experiments.sweep({**base, "depth": conv_depth, "width": w_glu}, family=["glucnn"], seed=seeds)
                     + experiments.sweep({**base, "depth": rd}, family=["lstm"], seed=seeds)
                     + experiments.sweep({**base, "depth": rd, "width": w_rnn}, family=["rnn"], seed=seeds))
    return out


def gate_table(gate_runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Gated minus ungated per task, paired by seed: data, metric, comparison, mean, low, high, n, params a/b."""
    rows = []
    for data, runs in gate_runs.items():
        m = METRIC[data]
        for kind, (ga, gb) in {"conv: glucnn - cnn": ("glucnn", "cnn"), "recurrent: lstm - rnn": ("lstm", "rnn")}.items():
            mean, low, high, n = paired(runs, m, {"family": ga}, {"family": gb})
            rows.append({"data": "pattern span" if data == "synthetic" else "MIT-BIH", "metric": m,
                         "comparison": kind, "mean": mean, "low": low, "high": high, "n": n,
                         "params a": int(runs[runs.family == ga].n_params.iloc[0]),
                         "params b": int(runs[runs.family == gb].n_params.iloc[0])})
    return pd.DataFrame(rows)


def fig_gates(gates: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = {"conv: glucnn - cnn": f"{FAMILY_LABELS['glucnn']} − {FAMILY_LABELS['cnn']}",
             "recurrent: lstm - rnn": f"{FAMILY_LABELS['lstm']} − {FAMILY_LABELS['rnn']}"}
    labels = [f"{r.data}\n{names.get(r.comparison, r.comparison)}" for r in gates.itertuples()]
    y = np.arange(len(gates))
    colors = [FAMILY_COLORS["glucnn" if r.comparison.startswith("conv") else "lstm"] for r in gates.itertuples()]
    err = np.array([gates["mean"] - gates["low"], gates["high"] - gates["mean"]]).clip(min=0)
    ax.errorbar(gates["mean"], y, xerr=np.nan_to_num(err), fmt="none", ecolor="0.4", capsize=4)
    ax.scatter(gates["mean"], y, c=colors, s=60, zorder=3)
    ax.axvline(0, color="0.5", lw=1)
    ax.set_yticks(y, labels, fontsize=9)
    ax.set(xlabel="gated minus ungated (test accuracy; MIT-BIH: test score)", title="What gates buy at matched parameters")
    return plots.finish(fig, "no usable pair of runs")


# ---- 4. real ECG ----

def fig_real(real_runs: dict[str, pd.DataFrame]):
    """Test score versus depth for the plain CNN and the LSTM, one panel per dataset."""
    return depth_ev.fig_depth_panels(real_runs, "test_score", "test score", "Test score versus depth")


def c4_table(real_runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per dataset: the best CNN and LSTM depths (validation), best LSTM - best CNN and best CNN - one-layer CNN
    (test score, paired by seed; usable runs only)."""
    rows = []
    for name, runs in real_runs.items():
        b = depth_ev.best_pair(runs, ["cnn"], ["lstm"])
        gain = (depth_ev.depth_effect(usable(runs), "cnn", "test_score", 1, b["conv"][1]) if b["conv"]
                else pd.Series({"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}))
        d = b["diff"]
        rows.append({"dataset": TASK_NAMES.get(name, name), "best CNN depth": b["conv"][1] if b["conv"] else None,
                     "best LSTM depth": b["rnn"][1] if b["rnn"] else None,
                     "LSTM - CNN": d["mean"], "LSTM - CNN low": d["low"], "LSTM - CNN high": d["high"],
                     "pairs": int(d["n"]), "CNN gain from depth": gain["mean"], "gain low": gain["low"],
                     "gain high": gain["high"], "gain pairs": int(gain["n"]),
                     "diverged runs": int((runs.status != "ok").sum())})
    return pd.DataFrame(rows)


def c4(table: pd.DataFrame, real_runs: dict[str, pd.DataFrame], rr: pd.DataFrame | None = None,
       rr_runs: pd.DataFrame | None = None) -> Verdict:
    """Per dataset all_of: the best LSTM is not worse than the best CNN (non-inferiority) and the CNN needs layers
    (best CNN minus one-layer CNN claimed above zero); datasets combined. With `rr` (rr_table), all_of that and
    the context part: the LSTM gains from RR-interval context on MIT-BIH (rr_judgement)."""
    m = margin("C4", "test_score")
    per = {r["dataset"]: all_of({
        "not worse": not_worse(r["LSTM - CNN"], r["LSTM - CNN low"], r["LSTM - CNN high"], r["pairs"], m,
                               what="test score, best LSTM - best CNN"),
        "CNN needs layers": judge(r["CNN gain from depth"], r["gain low"], r["gain high"], r["gain pairs"], m,
                                  what="test score, best CNN - 1-layer CNN")}) for _, r in table.iterrows()}
    j = combine(per)
    if rr is not None:
        j = all_of({"depth": j, "temporal context": rr_judgement(rr)})
    extra = [rr_runs] if rr_runs is not None and len(rr_runs) else []
    return Verdict.of(j, claim="C4", chapter="features", figure="fig-features-c4",
                      runs=keys(*real_runs.values(), *extra),
                      effect=f"test score, best LSTM minus best CNN ({table['dataset'].iloc[0]})",
                      summary=" ".join(c4_text(r) + f" ({per[r['dataset']].verdict})." for _, r in table.iterrows())
                      + ("" if rr is None else " With RR-interval context minus without, MIT-BIH test score: "
                         + "; ".join(f"{FAMILY_LABELS[r.family]} {fmt_ci(r.mean, r.low, r.high)}"
                                     for r in rr.itertuples()) + "."))


def c4_text(r) -> str:
    layers = lambda d, what: f"no {what} trained at any depth" if pd.isna(d) else f"{int(d)} layer{'s' * (int(d) != 1)}"
    versus = (f"the best LSTM ({layers(r['best LSTM depth'], 'LSTM')}) minus the best CNN "
              f"({layers(r['best CNN depth'], 'CNN')}): "
              f"{fmt_ci(r['LSTM - CNN'], r['LSTM - CNN low'], r['LSTM - CNN high'])} test score")
    return (f"{r['dataset']}: {versus}; the best CNN minus the one-layer CNN: "
            f"{fmt_ci(r['CNN gain from depth'], r['gain low'], r['gain high'])}")


def probe_sweep(bases: dict[str, dict], depths: dict[str, int], seed: int) -> dict[str, list]:
    """One CNN and one LSTM per dataset with the saliency and filters probes."""
    return {name: [experiments.RunConfig(**{**base, "probes": ["saliency", "filters"]}, family=f, depth=d, seed=seed)
                   for f, d in depths.items()] for name, base in bases.items()}


def fig_saliency(records: dict[str, dict]):
    """One test example per class (grey) and each model's saliency for it (colour); None if no examples."""
    first = records[next(iter(records))]
    classes = [c for c in first["classes"] if all(c in r["probes"].get("saliency", {}) for r in records.values())]
    if not classes:
        return None
    cfg = first["config"]
    duration = sum(cfg["window"]) if cfg["dataset"] == "mitdb" else cfg["crop_s"]
    fig, axes = plt.subplots(len(classes), len(records), figsize=(11, 1.9 * len(classes)), squeeze=False, sharex="col")
    for j, (family, rec) in enumerate(records.items()):
        for i, c in enumerate(classes):
            ax = axes[i][j]
            sal = rec["probes"]["saliency"][c]
            signal, grad = np.asarray(sal["signal"][0]), np.asarray(sal["saliency"][0])
            seconds = np.linspace(0, duration, len(signal))
            ax.plot(seconds, signal, color="0.55", lw=0.8)
            twin = ax.twinx()
            twin.fill_between(seconds, 0, grad / (grad.max() or 1), color=FAMILY_COLORS[family], alpha=0.45, lw=0)
            twin.set_yticks([])
            twin.set_ylim(0, 1.05)
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"class {c}", rotation=0, ha="right", va="center")
            if i == 0:
                ax.set_title(f"{FAMILY_LABELS[family]}, {plots.layers(rec['config']['depth'])}")
        axes[-1][j].set_xlabel("time (s)")
    fig.suptitle("ECG (grey) and saliency |d logit / d x| (colour, scaled to its maximum)", y=1.0)
    fig.tight_layout()
    return fig


def saliency_share(record: dict, tail: float = 0.25) -> float:
    """Share of the saliency mass in the last `tail` of the input, over every stored example."""
    sal = record["probes"].get("saliency", {})
    curves = [np.asarray(g) for c in sal.values() for g in c["saliency"]]
    if not curves:
        return math.nan
    return float(np.mean([g[-max(1, int(tail * len(g))):].sum() / (g.sum() or 1) for g in curves]))


def saliency_text(probe_records: dict[str, dict[str, dict]]) -> str:
    shares = {(n, f): saliency_share(r) for n, recs in probe_records.items() for f, r in recs.items()}
    return ("Share of the saliency mass in the last quarter of the input (a uniform spread gives 0.25): "
            + "; ".join(f"{n} {FAMILY_LABELS[f]} {v:.2f}" for (n, f), v in shares.items() if not math.isnan(v))
            + ". A recurrent model read out at its last step that really carries features across the whole strip "
            "would spread its saliency over the strip; one that mostly uses the last seconds concentrates it at the end.")


def fig_filters(probe_records: dict[str, dict[str, dict]]):
    """The CNN's learned first-layer kernels per dataset, each scaled to its largest weight."""
    fig, axes = plt.subplots(1, len(probe_records), figsize=(11, 3.8), squeeze=False)
    for ax, name in zip(axes[0], probe_records):
        w = probe_records[name]["cnn"]["probes"].get("filters", {}).get("weights")
        if w is None:
            ax.text(0.5, 0.5, "no filters stored", ha="center", transform=ax.transAxes)
            continue
        w = np.asarray(w)[:, 0, :]
        w = w / (np.abs(w).max(axis=1, keepdims=True) + 1e-12)
        ax.plot(np.arange(w.shape[1]), w.T, color=FAMILY_COLORS["cnn"], alpha=0.35, lw=1)
        ax.set(title=f"{name}: {w.shape[0]} first-layer kernels", xlabel="kernel tap (samples)",
               ylabel="weight (scaled per kernel)")
    return plots.finish(fig)


# ---- 5. depth separated from receptive field, depth needed per task (C3, C7, C11, C13) ----

SPAN_FAMILIES = ["cnn", "tcn", "lstm"]
TARGET = 0.9            # "solved": test accuracy a model must reach on a synthetic task


def selections(base: dict, depths: dict[str, int], seeds, executor="local", fresh=False) -> dict:
    """protocol.select per family at its reference depth, on `base` (validation data only): family -> Selection."""
    return {f: protocol.select(base, f, d, seeds=list(seeds), executor=executor, fresh=fresh, progress=False)
            for f, d in depths.items()}


def tuned(sel) -> dict:
    """A Selection's config without family and depth: the base the depth sweeps of that family run on."""
    return {k: v for k, v in sel.config.items() if k not in ("family", "depth")}


def kernel_for_field(family: str, depth: int, field: int) -> int:
    """The smallest odd kernel whose trunk of `depth` layers sees at least `field` samples."""
    k = 3
    with torch.device("meta"):
        while models.build_model(family, depth, kernel_size=k).receptive_field < field:
            k += 2
    return k


def field_sweep(base: dict, depths, span: int, seeds) -> list:
    """Plain CNNs of each depth whose kernel is sized so the field just covers the span's pattern: equal field,
    different depth. base: the CNN's tuned config on the span task."""
    field = synthetic.pattern_samples(span)
    return [c for d in depths for c in experiments.sweep(
        {**base, "family": "cnn", "depth": d, "span": span, "kernel_size": kernel_for_field("cnn", d, field)},
        seed=list(seeds))]


def field_effect(runs: pd.DataFrame) -> tuple:
    """Deepest minus one-layer CNN at equal receptive field, test accuracy paired by seed (usable runs only)."""
    from ..protocol import usable
    runs = usable(runs)
    if runs.empty or runs.depth.nunique() < 2:
        return _NAN4
    return paired(runs, "test_acc", {"depth": int(runs.depth.max())}, {"depth": int(runs.depth.min())})


def field_table(runs: pd.DataFrame) -> pd.DataFrame:
    from ..protocol import usable
    s = stats.summarise(usable(runs), ["depth", "kernel_size"], "test_acc")
    rf = runs.groupby("depth").receptive_field.first()
    return s.assign(receptive_field=s.depth.map(rf)).rename(
        columns={"mean": "test acc", "low": "CI low", "high": "CI high", "n": "usable seeds"})


def depth_sweep_of(bases: dict[str, dict], depths: dict[str, list], seeds, **over) -> list:
    """Every family's tuned base at each of its depths (and `over`, lists swept too, e.g. span=[2, 3])."""
    return [c for f, base in bases.items() for c in experiments.sweep(
        {**base, "family": f}, depth=list(depths[f]), seed=list(seeds), **over)]


def depth_needed(runs: pd.DataFrame, metric: str, by=("family",), target: float | None = None,
                 tolerance: float | None = None) -> pd.DataFrame:
    """Per group of `by` and seed, the smallest depth whose usable run reaches `target` (solved) or comes within
    `tolerance` of that seed's best depth (saturated). Columns: by..., seed, depth, censored (never reached: depth
    is then twice the deepest tried, a lower bound), tried (deepest depth)."""
    from ..protocol import usable
    by = list(by)
    rows = []
    for key, g in usable(runs).groupby(by + ["seed"], sort=True):
        g = g.sort_values("depth")
        bar = target if target is not None else g[metric].max() - tolerance
        hit = g[g[metric] >= bar]
        deepest = int(runs[(runs[by] == pd.Series(dict(zip(by, key[:-1])))).all(axis=1)].depth.max())
        rows.append({**dict(zip(by + ["seed"], key)), "depth": float(hit.depth.min()) if len(hit) else 2.0 * deepest,
                     "censored": not len(hit), "tried": deepest})
    return pd.DataFrame(rows, columns=by + ["seed", "depth", "censored", "tried"])


def needed_table(need: pd.DataFrame, by=("family",)) -> pd.DataFrame:
    """Mean depth needed with its CI over seeds (geometric: depth grids double), seeds that never got there."""
    by = list(by)
    if need.empty:
        return pd.DataFrame(columns=by + ["depth needed", "CI low", "CI high", "seeds", "never reached"])
    s = stats.summarise(need, by, "depth", log=True)
    cens = need.groupby(by).censored.sum().reset_index(name="never reached")
    return s.merge(cens, on=by).rename(columns={"mean": "depth needed", "low": "CI low", "high": "CI high",
                                                "n": "seeds"})


def fig_depth_needed(need: pd.DataFrame, x: str = "span", title: str = "Smallest depth reaching the target"):
    """Depth needed (geometric mean and CI over seeds) per family against `x`; open markers: a seed never got there."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for f, g in need.groupby("family", sort=False):
        s = stats.summarise(g, [x], "depth", log=True)
        c = FAMILY_COLORS[f]
        ax.plot(s[x].astype(str), s["mean"], marker="o", color=c, label=FAMILY_LABELS[f])
        ax.fill_between(s[x].astype(str), s["low"].fillna(s["mean"]), s["high"].fillna(s["mean"]), color=c, alpha=0.15)
        cens = g[g.censored]
        ax.scatter(cens[x].astype(str), cens.depth, facecolors="none", edgecolors=c, s=50)
    ax.set(yscale="log", xlabel={"span": "pattern span (cycles)"}.get(x, x), ylabel="layers needed (log scale)",
           title=title)
    if need.empty:
        plots.no_data(ax, "no usable run at the depths tried")
    elif need.censored.all():     # every point is a lower bound: say so where the eye lands first
        ax.set_title(f"{title}\nno family reached {TARGET:g} test accuracy at the depths tried", fontsize=11)
    return plots.finish(fig)


def _log2_diff(need: pd.DataFrame, a: dict, b: dict) -> tuple:
    """log2(depth needed in a) - log2(depth needed in b), paired by seed: (mean, low, high, n)."""
    n = need.assign(depth=np.log2(need.depth))
    return paired(n, "depth", a, b)


def c13_needed(need: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """need: depth_needed rows with a `task` column. Per family, each pair of tasks: log2 depth a - b."""
    rows = []
    for f, g in need.groupby("family", sort=False):
        tasks = list(dict.fromkeys(g.task))
        for i, a in enumerate(tasks):
            for b in tasks[i + 1:]:
                mean, low, high, n = _log2_diff(g, {"task": a}, {"task": b})
                rows.append({"family": f, "tasks": f"{a} vs {b}", "mean": mean, "low": low, "high": high, "n": n})
    return pd.DataFrame(rows, columns=["family", "tasks", "mean", "low", "high", "n"])


def c13(pairs: pd.DataFrame, runs: pd.DataFrame) -> Verdict:
    """The layers needed depend heavily on the problem: some pair of tasks whose saturation depths differ by more
    than one doubling (either direction) supports it; every pair within a doubling refutes it; else inconclusive."""
    m = margin("C13", "log2_depth")
    per = {f"{FAMILY_LABELS[r.family]}, {r.tasks}": judge(r.mean, r.low, r.high, int(r.n), m,
                                                          claimed="below" if r.mean < 0 else "above",
                                                          what=f"log2 depth needed, {r.tasks}")
           for r in pairs.itertuples()}
    verdicts = [j.verdict for j in per.values()]
    if "supported" in verdicts:
        j = next(j for j in per.values() if j.verdict == "supported")
        j = Judgement("supported", f"{j.reason} (of {len(per)} family and task pairs)", j.mean, j.low, j.high,
                      j.margin, j.n)
    elif verdicts and all(v == "refuted" for v in verdicts):
        j = next(iter(per.values()))
        j = Judgement("refuted", "every task saturates within one doubling of depth of every other: "
                      + "; ".join(v.reason for v in per.values()), j.mean, j.low, j.high, j.margin, j.n)
    else:
        first = next(iter(per.values()), Judgement("inconclusive", "", n=0))  # the headline pair's estimate
        j = Judgement("inconclusive", "; ".join(f"{k}: {v.reason}" for k, v in per.items()) or "no task pair",
                      first.mean, first.low, first.high, m.value, first.n)
    head = pairs.iloc[0] if len(pairs) else None
    return Verdict.of(j, claim="C13", chapter="features", figure="fig-features-saturation", runs=keys(runs),
                      effect="log2 of the depth at which each task saturates, one task minus another"
                             + (f" ({FAMILY_LABELS[head.family]}, {head.tasks})" if head is not None else ""),
                      summary=" ".join(f"{k}: {fmt_ci(v.mean, v.low, v.high)} doublings ({v.verdict})."
                                       for k, v in per.items())
                      or "No pair of tasks has usable runs of one family to compare (see the tables above).")


def c11_layers(need: pd.DataFrame, runs: pd.DataFrame) -> Verdict:
    """Gates save layers: the plain CNN's depth needed minus the gated CNN's, paired by seed (claimed above zero).
    A seed where neither CNN reached the target says nothing about the difference (both values are the same lower
    bound): it is left out, and with no seed left the verdict is inconclusive, never a difference of zero."""
    both = need[need.family.isin(["cnn", "glucnn"])].pivot_table(index="seed", columns="family", values="censored",
                                                                 aggfunc="all")
    blind = [s for s, r in both.iterrows() if r.get("cnn", False) and r.get("glucnn", False)] if len(both) else []
    need = need[~need.seed.isin(blind)]
    mean, low, high, n = paired(need, "depth", {"family": "cnn"}, {"family": "glucnn"})
    j = judge(mean, low, high, n, margin("C11", "layers"), what="layers needed, plain CNN - gated CNN")
    if blind and n == 0:
        j = Judgement("inconclusive", f"neither CNN reached test accuracy {TARGET} at the depths tried "
                                      f"({len(blind)} seed(s))", math.nan, math.nan, math.nan, j.margin, 0)
    cens = int(need.censored.sum())
    return Verdict.of(j, claim="C11", chapter="features", figure="fig-features-product", runs=keys(runs),
                      effect="layers needed to reach the target on the product task, plain CNN minus gated CNN",
                      summary=(f"On a task whose label is a product, the plain CNN needs {fmt_ci(mean, low, high)} more "
                               f"layers than the gated CNN to reach test accuracy {TARGET}"
                               + (f" ({cens} seed(s) never reached it: counted at twice the deepest tried, a lower "
                                  "bound)" if cens else "") + "."))


def rr_sweep(base: dict, depths: dict[str, int], seeds, lrs=(), lr_seeds=(), executor="local", fresh=False) -> list:
    """Each family at its depth on MIT-BIH without and with the RR-interval channels (data.rr_features), both at the
    learning rate protocol.tune_lr chooses without them (on the depth sweep's base: that sweep's choice and runs), so
    the pair differs in its input alone. No lrs: the base's rate."""
    plain = [c for f, d in depths.items() for c in experiments.sweep({**base, "family": f, "depth": d}, seed=list(seeds))]
    return protocol.vary_at_tuned_lr(plain, "rr", [True], lrs, lr_seeds, executor, fresh, progress=False)


def rr_table(runs: pd.DataFrame, families=("cnn", "lstm")) -> pd.DataFrame:
    """Per family: test score with RR-interval context minus without, paired by seed (usable runs)."""
    from ..protocol import usable
    u = usable(runs)
    rows = []
    for f in families:
        g = u[u.family == f]
        mean, low, high, n = paired(g, "test_score", {"rr": True}, {"rr": False})
        rows.append({"family": f, "mean": mean, "low": low, "high": high, "n": n})
    return pd.DataFrame(rows)


def rr_judgement(table: pd.DataFrame) -> Judgement:
    """C4's context part: the recurrent model gains from temporal context (RR intervals), claimed above zero."""
    r = table.set_index("family").loc["lstm"]
    return judge(r["mean"], r["low"], r["high"], int(r["n"]), margin("C4", "test_score"),
                 what="test score, LSTM with RR context - without")
