"""One look for every figure, family colours shared across chapters, provenance captions and CSV downloads.

Every results figure or table in the book is followed by `provenance(...)`, so a reader can
trace it to the stored runs (profile, seeds, device, commit, wall time).
"""
from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import HTML, Markdown, display

# One colour per family, fixed, so "lstm" is the same colour in every chapter.
FAMILY_ORDER = ["cnn", "rescnn", "tcn", "glucnn", "rnn", "lstm", "gru", "reslstm", "convlstm"]
FAMILY_LABELS = {
    "cnn": "plain CNN", "rescnn": "residual CNN", "tcn": "dilated CNN (TCN)", "glucnn": "gated CNN (GLU)",
    "rnn": "vanilla RNN", "lstm": "LSTM", "gru": "GRU", "reslstm": "residual LSTM", "convlstm": "conv+pool → LSTM",
}
# seaborn's colour-blind-safe palette (after Okabe and Ito): cool colours for the convolutional
# families, warm ones for the recurrent; its grey is left out, kept for signals and reference lines.
_CB = sns.color_palette("colorblind")
FAMILY_COLORS = {
    "cnn": _CB[0], "rescnn": _CB[9], "tcn": _CB[2], "glucnn": _CB[8],                        # blue, sky, green, yellow
    "rnn": _CB[5], "lstm": _CB[3], "gru": _CB[1], "reslstm": _CB[6], "convlstm": _CB[4],    # brown, vermillion, orange, pink, purple
}


def theme() -> None:
    """The book's single plotting style: readable at HTML column width."""
    # the colour-blind-safe palette for every hue that is not a family (splits, classes, ...)
    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.05, palette="colorblind")
    plt.rcParams.update({
        "figure.figsize": (8.0, 4.5), "figure.dpi": 110, "savefig.bbox": "tight",
        "axes.titleweight": "bold", "legend.frameon": False,
    })


def ci_lines(ax, summary: pd.DataFrame, x: str, hue: str = "family", y: str = "mean",
             low: str = "low", high: str = "high", logx: bool = False, labels: dict | None = None,
             colors: dict | None = None, marker: str = "o") -> None:
    """Mean line per `hue` group with its 95% CI as a band; `summary` comes from stats.summarise."""
    labels = labels or FAMILY_LABELS
    colors = colors or FAMILY_COLORS
    for name, g in summary.groupby(hue, sort=False):
        g = g.sort_values(x)
        c = colors.get(name)
        ax.plot(g[x], g[y], marker=marker, color=c, label=labels.get(name, str(name)))
        if g[low].notna().any():
            ax.fill_between(g[x], g[low], g[high], color=c, alpha=0.18, linewidth=0)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(summary[x].unique()))
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())


def legend(fig, axes=None, ncol: int | None = None, **kw):
    """One legend for the whole figure, under its panels, so it covers no data and reads at phone width.

    Collects the labelled artists of every axis (each label once, in order of appearance) and
    removes the axes' own legends."""
    axes = list(axes) if axes is not None else fig.axes
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if not handles:
        return None
    fig.tight_layout()
    return fig.legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncol=ncol or min(len(handles), 4), **kw)


def provenance(runs: pd.DataFrame, profile: str) -> None:
    """Show where a figure's numbers come from, read from the stored runs behind it; runs of more than one
    training-code version (experiments.code_version) get a visible warning, since they may not have trained alike."""
    if runs is None or len(runs) == 0:
        display(Markdown("*Provenance: no stored runs.*"))
        return
    seeds = sorted(int(s) for s in runs["seed"].unique()) if "seed" in runs else []
    devices = ", ".join(sorted(map(str, runs["device"].dropna().unique()))) if "device" in runs else "?"
    commits = ", ".join(sorted(map(str, runs["commit"].dropna().unique())))[:60] if "commit" in runs else "?"
    if "code" in runs:   # certified-equivalent versions (python -m ecglib verify) count as one
        from ecglib.versions import canonical
        codes = canonical(runs["code"]).fillna("unknown").value_counts()
    else:
        codes = pd.Series(dtype=int)
    wall = runs["wall_s"].sum() / 60 if "wall_s" in runs else float("nan")
    display(Markdown(
        f"<small>Provenance: profile `{profile}` · {len(runs)} stored runs · seeds {seeds} · "
        f"device {devices} · commit {commits} · training code {', '.join(codes.index) or '?'} · "
        f"training wall time {wall:.1f} min</small>"
    ))
    if len(codes) > 1:
        display(Markdown(mixed_code_warning(codes)))


def mixed_code_warning(codes: pd.Series) -> str:
    """A warning admonition for runs of several training-code versions (version -> number of runs)."""
    counts = ", ".join(f"`{v}`: {n} runs" for v, n in codes.items())
    return (":::{warning}\nThe runs behind this output come from more than one version of the training code "
            f"({counts}). They may not have trained alike: `python -m ecglib verify` retrains a few of the older runs "
            "and certifies their version when nothing changed; otherwise re-run them (`python -m ecglib build "
            "--fresh`) before citing a comparison between them.\n:::")


def table(df: pd.DataFrame, name: str, floatfmt: str = "{:.3f}") -> None:
    """Show a table and a link that downloads it as CSV (embedded, so it survives any hosting)."""
    display(df.style.format(floatfmt, subset=df.select_dtypes("float").columns).hide(axis="index"))
    payload = base64.b64encode(df.to_csv(index=False).encode()).decode()
    display(HTML(f'<a download="{name}.csv" href="data:text/csv;base64,{payload}">Download {name}.csv</a>'))
