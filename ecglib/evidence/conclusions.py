"""The conclusions chapter: the answer in plain words, the compact ledger, the forest plot of every claim against
its margin, the details behind each verdict, failed runs, and our numbers beside the published ones. Everything is
generated from the saved verdicts (ledger.load()) and the store, because the verdicts change with the store.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import experiments, ledger, stats
from ..plots import FAMILY_LABELS
from ..protocol import usable
from ..verdicts import MIN_RUNS

# The three explanations of the depth gap and the claims that bear on each: +1 when a supported verdict speaks
# for the explanation, -1 when it speaks against it (C9: "need not overfit; architecture drives the layer count").
EXPLANATIONS = {
    "vanishing gradients": {"C1": 1, "C5": 1},
    "overfitting": {"C2": 1, "C5": 1, "C6": 1, "C9": -1},
    "architecture": {"C3": 1, "C4": 1, "C7": 1, "C9": 1, "C11": 1, "C13": 1},
}
BADGE = {"supported": "success", "refuted": "danger", "depends": "warning", "inconclusive": "secondary",
         "missing": "light"}
VERDICT_COLORS = {"supported": "#009E73", "refuted": "#D55E00", "depends": "#E69F00", "inconclusive": "0.55"}


def claim_verdict(verdicts: pd.DataFrame, claim: str) -> str:
    """One verdict per claim: its chapters' verdict when they agree, 'depends' when they disagree decisively,
    'inconclusive' when none decides, 'missing' when no chapter saved one."""
    v = set(verdicts.loc[verdicts["claim"] == claim, "verdict"])
    if not v:
        return "missing"
    decisive = v - {"inconclusive"}
    return decisive.pop() if len(decisive) == 1 else "depends" if decisive else "inconclusive"


def tally(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per explanation: the claims that speak for it, against it, and leave it open."""
    rows = []
    for name, claims in EXPLANATIONS.items():
        row = {"explanation": name, "for": [], "against": [], "open": []}
        for claim, sign in claims.items():
            v = claim_verdict(verdicts, claim)
            side = {"supported": "for", "refuted": "against"}.get(v, "open")
            if sign < 0 and side != "open":
                side = "against" if side == "for" else "for"
            row[side].append(claim)
        rows.append(row)
    return pd.DataFrame(rows)


def answer(verdicts: pd.DataFrame, profile: str) -> str:
    """The answer to the book's question in plain words, chosen by the verdicts (never written after them)."""
    t = tally(verdicts)
    names = lambda cs: ", ".join(cs) if cs else "none"
    net = t.assign(score=t["for"].map(len) - t["against"].map(len))
    decisive = sum(claim_verdict(verdicts, c) in ("supported", "refuted") for c in ledger.CLAIMS)
    lines = []
    best = net.sort_values("score", ascending=False).iloc[0]
    if best["score"] > 0 and (net["score"] == best["score"]).sum() == 1:
        lines.append(f"**{best['explanation'].capitalize()}** explains the depth gap best in our measurements: "
                     f"{names(best['for'])} speak for it, {names(best['against'])} against it.")
    else:
        lines.append("**No single explanation** of the depth gap wins on the evidence so far.")
    for _, r in net.iterrows():
        if r["explanation"] != best["explanation"] or not lines[0].startswith(f"**{r['explanation'].capitalize()}"):
            lines.append(f"*{r['explanation'].capitalize()}*: for {names(r['for'])}; against "
                         f"{names(r['against'])}; open {names(r['open'])}.")
    sure = ("firm" if decisive >= 9 else "partial" if decisive >= 5 else "weak")
    lines.append(f"**How sure:** {decisive} of {len(ledger.CLAIMS)} claims are decided (supported or refuted) at the "
                 f"`{profile}` profile, so the answer is {sure}; an inconclusive verdict needs more seeds or the "
                 "`full` profile, not a different reading.")
    return "\n\n".join(lines)


def _badge(verdict: str) -> str:
    return f"{{bdg-{BADGE.get(verdict, 'light')}}}`{verdict}`"


def ledger_table(verdicts: pd.DataFrame) -> str:
    """The compact ledger as a MyST table: claim, one-line statement, verdict badge, effect [95% CI] and margin,
    a link to the chapter with the evidence. Claims without a saved verdict are listed as missing."""
    rows = []
    for _, v in verdicts.iterrows():
        m = v.get("margin", math.nan)
        effect = ledger.fmt_ci(v["value"], v["low"], v["high"]) + ("" if pd.isna(m) else f" (±{m:g})")
        rows.append((v["claim"], ledger.CLAIM_TEXT[v["claim"]], _badge(v["verdict"]), effect,
                     f"{{doc}}`{v['chapter']} </_executed/{v['chapter']}>`"))
    missing = [c for c in ledger.CLAIMS if c not in set(verdicts["claim"])]
    rows += [(c, ledger.CLAIM_TEXT[c], _badge("missing"), "", ", ".join(ledger.CLAIM_CHAPTERS[c])) for c in missing]
    rows.sort(key=lambda r: int(r[0][1:]))
    head = "| claim | statement | verdict | effect [95% CI] (margin) | evidence |\n|---|---|---|---|---|\n"
    return head + "".join("| " + " | ".join(str(x).replace("|", "/") for x in r) + " |\n" for r in rows)


def traceability(verdicts: pd.DataFrame, stored: set) -> str:
    """Whether every claim has a verdict and every run a verdict cites is in the store."""
    missing = [c for c in ledger.CLAIMS if c not in set(verdicts["claim"])]
    untraced = [v["claim"] for _, v in verdicts.iterrows() if any(k not in stored for k in (v["runs"] or []))]
    return " ".join([
        f"All {len(ledger.CLAIMS)} claims have a verdict." if not missing
        else f"**Claims without a verdict:** {', '.join(missing)}.",
        "Every run a verdict cites is in the results store." if not untraced
        else f"**Verdicts citing runs missing from the store:** {', '.join(untraced)}."])


def fig_forest(verdicts: pd.DataFrame):
    """Every verdict's effect and 95% CI in units of its practical margin (effect / margin), so claims measured in
    different units share one axis: inside ±1 is negligible, beyond it matters. Colour: the verdict."""
    v = verdicts.assign(label=[f"{r.claim} ({r.chapter})" for r in verdicts.itertuples()]).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.42 * max(len(v), 3) + 1.2))
    for y, r in enumerate(v.itertuples()):
        m = r.margin
        if pd.isna(m) or m <= 0 or pd.isna(r.value):
            why = "no estimate" if pd.isna(r.value) else "exact count, no margin"
            ax.text(0, y, why, va="center", ha="center", fontsize=8, color="0.35")
            continue
        mean, low, high = (x / m for x in (r.value, r.low, r.high))
        color = VERDICT_COLORS.get(r.verdict, "0.3")
        if not (pd.isna(low) or pd.isna(high)):
            ax.plot([low, high], [y, y], color=color, lw=2)
        ax.plot(mean, y, "o", color=color, ms=7)
    ax.axvspan(-1, 1, color="0.9", zorder=0)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(range(len(v)), v["label"], fontsize=9)
    ax.set_ylim(-0.7, len(v) - 0.3)
    ax.set_xscale("symlog", linthresh=2)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}".replace("-", "−")))   # not −10⁰
    ax.set(xlabel="effect / practical margin (shaded: within the margin; symmetric log scale)",
           title="Every claim's effect against its margin")
    for verdict, c in VERDICT_COLORS.items():
        ax.plot([], [], "o-", color=c, label=verdict)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 - 1.0 / max(len(v), 3)), ncol=4, fontsize=9)
    fig.tight_layout()
    return fig


def details(verdicts: pd.DataFrame, stored: set) -> str:
    """One collapsible block per verdict: what was measured, the numbers, the rule's reason, the runs."""
    blocks = []
    for _, v in verdicts.iterrows():
        runs = list(v["runs"] or [])
        present = sum(k in stored for k in runs)
        ref = f" See {{numref}}`{v['figure']}`." if str(v["figure"]).startswith(("fig-", "tbl-")) else ""
        blocks.append(
            f":::{{dropdown}} {v['claim']} ({v['chapter']}): {v['verdict']}\n"
            f"{ledger.CLAIM_TEXT[v['claim']]}\n\n{v['summary']}{ref}\n\n"
            f"*{v['effect']}:* {ledger.fmt_ci(v['value'], v['low'], v['high'])}\n\n"
            f"*Rule:* {v['reason'] or 'not recorded'}\n\n"
            f"*Runs:* {present} of {len(runs)} cited runs are in the store"
            + (f" (keys {', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''})" if runs else " (no training involved)")
            + ".\n:::\n")
    return "\n".join(blocks)


def failed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """ECG runs a verdict may not read (diverged, unconverged or collapsed, protocol.is_usable), per dataset,
    family and depth, with the counts of each reason; only configurations with at least one."""
    ecg = runs[runs["dataset"] != "synthetic"] if len(runs) else runs
    if not len(ecg):
        return pd.DataFrame(columns=["dataset", "family", "depth", "runs", "not usable", "diverged", "unconverged",
                                     "collapsed"])
    ecg = ecg.assign(ok=ecg["key"].isin(usable(ecg)["key"]), diverged=ecg["status"] == "diverged",
                     unconverged=~ecg["converged"].fillna(False).astype(bool),
                     collapsed=ecg["collapsed"].fillna(False).astype(bool))
    g = ecg.groupby(["dataset", "family", "depth"]).agg(
        runs=("key", "size"), ok=("ok", "sum"), diverged=("diverged", "sum"), unconverged=("unconverged", "sum"),
        collapsed=("collapsed", "sum")).reset_index()
    g["not usable"] = g["runs"] - g["ok"]
    return g[g["not usable"] > 0][["dataset", "family", "depth", "runs", "not usable", "diverged", "unconverged",
                                   "collapsed"]]


def failed_text(runs: pd.DataFrame, failed: pd.DataFrame) -> str:
    ecg = runs[runs["dataset"] != "synthetic"] if len(runs) else runs
    if not len(ecg):
        return "*No stored ECG runs.*"
    levelled = int(ecg["levelled"].fillna(False).astype(bool).sum()) if "levelled" in ecg else 0
    annealed = (f" {levelled} runs that ran their whole budget count as converged because their learning rate had "
                f"annealed to at most {experiments.ANNEALED:.0%} of its peak and their validation score gained less "
                f"than {experiments.LEVEL_TOL:g} over their last epochs (`ecglib.experiments.levelled`)."
                if levelled else "")
    return (f"{int(failed['not usable'].sum()) if len(failed) else 0} of {len(ecg)} stored ECG runs are left out of "
            f"every comparison (diverged, unconverged or collapsed); the configurations with at least one such run are "
            f"in the table below.{annealed}")


# ---- our numbers beside the published ones ----

CNNS, RNNS, HYBRID = ["cnn", "rescnn", "tcn", "glucnn"], ["rnn", "lstm", "gru", "reslstm"], ["convlstm"]
_NOT_CONFIG = ("seed", "probes", "permute_s")


def best(runs: pd.DataFrame, families) -> pd.DataFrame:
    """The usable runs of the configuration with the best mean validation score among `families`, among those with
    at least MIN_RUNS usable seeds where any has (a configuration two seeds vouch for has no useful interval)."""
    r = usable(runs[runs["family"].isin(families)])
    if not len(r):
        return r
    cols = [c for c in experiments.RunConfig.__dataclass_fields__ if c not in _NOT_CONFIG and c in r.columns]
    keyed = r.assign(_cfg=[repr(tuple(row)) for row in r[cols].itertuples(index=False)])
    by = keyed.groupby("_cfg")
    score, seeds = by["val_score"].mean(), by["seed"].nunique()
    if (seeds >= MIN_RUNS).any():
        score = score[seeds >= MIN_RUNS]
    top = score.idxmax()
    return keyed[keyed["_cfg"] == top].drop(columns="_cfg")


def _describe(r: pd.DataFrame) -> str:
    row = r.iloc[0]
    return f"{FAMILY_LABELS.get(row['family'], row['family'])}, depth {row['depth']}, width {row['width']}"


def _cinc_setting(row) -> str:
    """How a CinC run's setting differs from the challenge entries', from its config."""
    crop = "whole records" if row["crop_s"] >= 61 else f"{row['crop_s']:g} s crops"
    return (f"ours: a held-out 15% of the public training set, {row['fs']:g} Hz (records are 300 Hz), {crop}, "
            f"trained on {row['train_fraction']:.0%} of the training records; published: hidden test set, "
            f"all training records")


def anchors(runs: pd.DataFrame, records: dict) -> tuple[pd.DataFrame, list[str]]:
    """Our best configurations (chosen on validation, scored on test) beside published numbers; the keys used."""
    if not len(runs):
        return pd.DataFrame(), []
    used, lines = [], []
    base = runs[~runs["shuffle_labels"].astype(bool)]
    cinc = base[(base["dataset"] == "cinc2017") & (base["labels"] == "final")]
    mit = base[(base["dataset"] == "mitdb") & (base["split"] == "inter")]
    intra = base[(base["dataset"] == "mitdb") & (base["split"] == "intra")]
    for name, fams in [("best CNN", CNNS), ("best recurrent", RNNS), ("best hybrid", HYBRID)]:
        b = best(cinc, fams)
        if len(b):
            used += list(b["key"])
            m, lo, hi = stats.ci([stats.challenge_f1(records[k]) for k in b["key"]], bounded=True)
            lines.append({"benchmark": "CinC 2017, challenge F1 (N, A, O)", "ours": f"{name}: {_describe(b)}",
                          "our value": ledger.fmt_ci(m, lo, hi),
                          "published": "0.83 best hidden-test entry; 0.821 conv + 3-layer BiLSTM (Zihlmann)",
                          "protocol difference": _cinc_setting(b.iloc[0])})
    for sub, bench, published, diff in (
            (mit, "MIT-BIH DS2 (inter-patient), accuracy", "86.2% (de Chazal, linear discriminants)",
             "same DS1/DS2 records and AAMI classes; we train on part of DS1 and validate on held-out DS1 records"),
            (intra, "MIT-BIH intra-patient (beats of a patient in train and test), accuracy",
             "93.4% (Kachuee et al., beat-level split, 125 Hz)",
             "their split and preprocessing differ; both let patients leak into the test set")):
        b = best(sub, CNNS + RNNS + HYBRID)
        if len(b):
            used += list(b["key"])
            lines.append({"benchmark": bench, "ours": _describe(b), "our value": ledger.fmt_ci(*stats.ci(b["test_acc"], "test_acc")),
                          "published": published, "protocol difference": diff})
    for sub, label in [(mit, "MIT-BIH inter-patient"), (cinc, "CinC 2017")]:
        bc, br = best(sub, CNNS), best(sub, ["lstm"])
        if len(bc) and len(br):
            used += list(bc["key"]) + list(br["key"])
            lines.append({"benchmark": f"{label}: best CNN minus best LSTM, test score",
                          "ours": f"{_describe(bc)} vs {_describe(br)}",
                          "our value": f"{bc['test_score'].mean() - br['test_score'].mean():+.3f}",
                          "published": "PTB-XL macro-AUC, best CNN minus 2-layer LSTM: +0.018 (all), +0.001 "
                                       "(super-diagnostic), +0.004 (rhythm), +0.048 (form)",
                          "protocol difference": "different data, metric (macro-F1 vs macro-AUC) and model sizes; "
                                                 "compare signs and sizes only"})
    return pd.DataFrame(lines), sorted(set(used))


def verdict_lines(verdicts: list) -> str:
    """A chapter's verdicts, one line each with its badge: what the top of an evidence chapter shows (glued there
    from the chapter's last cell, so the summary is generated from the verdicts this run reached)."""
    if not verdicts:
        return "*No verdicts.*"
    return "\n".join(f"- {_badge(v.verdict)} **{v.claim}**: {ledger.CLAIM_TEXT[v.claim]} "
                     f"*{v.effect}:* {ledger.fmt_ci(v.value, v.low, v.high)}" for v in verdicts)


def glue_verdicts(chapter: str, verdicts: list) -> None:
    """Glue a chapter's verdict lines as `<chapter>_verdicts`, for the `{glue:md}` block at the chapter's top."""
    from IPython.display import Markdown
    from myst_nb import glue

    glue(f"{chapter}_verdicts", Markdown(verdict_lines(verdicts)), display=False)
