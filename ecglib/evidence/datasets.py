"""The data chapter: class counts of both databases, example beats and rhythm strips, CinC record lengths.
Nothing here trains; everything is read from the extracted databases (ecglib.data)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .. import data

RHYTHMS = {"N": "normal rhythm", "A": "atrial fibrillation", "O": "other rhythm", "~": "too noisy"}


def class_counts(summary: dict) -> pd.DataFrame:
    """database, set, class, count from data.summary()."""
    return pd.DataFrame(
        [{"database": "MIT-BIH", "set": ds, "class": c, "count": n}
         for ds, v in summary["mitdb"].items() for c, n in v["classes"].items()]
        + [{"database": "CinC 2017", "set": part, "class": c, "count": n}
           for part, v in summary["cinc2017"].items() if part != "all" for c, n in v.items()])


def count_table(counts: pd.DataFrame, database: str) -> pd.DataFrame:
    """Sets as rows, classes as columns in the database's class order, plus a total."""
    classes = data.AAMI_CLASSES if database == "MIT-BIH" else data.CINC_CLASSES
    t = counts[counts.database == database].pivot_table(index="set", columns="class", values="count", sort=False)
    t = t[classes].astype(int)
    return t.assign(total=t.sum(axis=1)).reset_index()


def fig_class_counts(counts: pd.DataFrame):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.barplot(counts[counts.database == "MIT-BIH"], x="class", y="count", hue="set", ax=axes[0],
                order=data.AAMI_CLASSES)
    axes[0].set(yscale="log", ylabel="beats (log scale)", xlabel="AAMI class", title="MIT-BIH: DS1 (train) vs DS2 (test)")
    sns.barplot(counts[counts.database == "CinC 2017"], x="class", y="count", hue="set", ax=axes[1],
                order=data.CINC_CLASSES)
    axes[1].set(ylabel="records", xlabel="class (N normal, A AF, O other, ~ noisy)", title="CinC 2017: 70/15/15 split")
    return fig


def imbalance_text(summary: dict) -> str:
    ds1, ds2 = (summary["mitdb"][k]["classes"] for k in ("DS1", "DS2"))
    return (f"Both tasks are imbalanced. In DS1, normal beats outnumber supraventricular ones "
            f"{ds1['N'] / ds1['S']:.0f} to 1 and there are only {ds1['Q']} Q beats, so accuracy says little: "
            f"the book reports macro-F1 and trains with class-weighted loss. DS2 holds "
            f"{ds2['S'] / ds1['S']:.1f} times as many S beats as DS1, so a model is tested on more S beats, from "
            f"other patients, than it learned from. CinC's stratified split keeps the class shares equal across "
            f"train, validation and test.")


def fig_beats(beats: data.Split, per_class: int, rng: np.random.Generator, before_s: float = 0.25):
    """`per_class` random training beats of each AAMI class, time from the R peak."""
    t = (np.arange(beats.X.shape[-1]) - round(before_s * beats.fs)) / beats.fs
    fig, axes = plt.subplots(1, len(data.AAMI_CLASSES), figsize=(15, 3.6), sharey=True)
    for ax, c in zip(axes, data.AAMI_CLASSES):
        idx = np.flatnonzero(beats.meta.aami == c)
        for i in rng.choice(idx, size=min(per_class, len(idx)), replace=False):
            row = beats.meta.iloc[i]
            ax.plot(t, beats.X[i, 0], lw=1.2, label=f"{row.record} ({row.symbol})")
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{c} ({len(idx):,} beats)", xlabel="time from R peak (s)")
        # under its panel: inside, it covered the beats' tails
        ax.legend(fontsize=8, title="record (symbol)", title_fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.25))
    axes[0].set_ylabel("MLII amplitude (mV)")
    fig.suptitle("Example training beats per AAMI class", y=1.04)
    return fig


def lengths(cinc: dict[str, data.Split]) -> pd.DataFrame:
    return pd.concat([sp.meta.assign(split=p) for p, sp in cinc.items()], ignore_index=True)


def fig_lengths(meta: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(9, 3.8))
    sns.histplot(meta, x="length_s", hue="label", hue_order=data.CINC_CLASSES, bins=np.arange(8, 63, 1),
                 multiple="stack", ax=ax)
    ax.set(xlabel="record length (s)", ylabel="records", yscale="log",
           title="CinC 2017 record lengths (most are 30 s; the longest sets the padded length)")
    return fig


def lengths_text(meta: pd.DataFrame, cinc: dict[str, data.Split], fs) -> str:
    longest = max(sp.X.shape[-1] for sp in cinc.values())
    return (f"{(meta.length_s.round() == 30).mean():.0%} of the records last 30 s; the longest lasts "
            f"{meta.length_s.max():.1f} s, so every record is zero-padded on the left to {longest:,} samples at "
            f"{fs} Hz. Padding on the left puts the end of each recording at the last time step, where a "
            f"recurrent network's final state is read out.")


def fig_strips(train: data.Split, rng: np.random.Generator, strip_s: float = 10):
    """The first `strip_s` seconds of one random training record per class (padding removed)."""
    fig, axes = plt.subplots(len(data.CINC_CLASSES), 1, figsize=(12, 8), sharex=True)
    for ax, (k, c) in zip(axes, enumerate(data.CINC_CLASSES)):
        i = rng.choice(np.flatnonzero(train.y == k))
        n = train.lengths[i]
        x = train.X[i, 0, -n:][: int(strip_s * train.fs)]
        ax.plot(np.arange(len(x)) / train.fs, x, lw=0.8)
        ax.set(ylabel="z-scored\namplitude", title=f"{c}: {RHYTHMS[c]}  (record {train.meta.record.iloc[i]}, "
               f"{train.meta.length_s.iloc[i]:.0f} s)")
    axes[-1].set_xlabel("time from record start (s)")
    fig.suptitle(f"First {strip_s:g} s of one training record per class", y=1.0)
    fig.tight_layout()
    return fig
