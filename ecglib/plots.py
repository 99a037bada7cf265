"""One look for every figure, family colours shared across chapters, provenance captions and CSV downloads.

Every results figure or table in the book is followed by `provenance(...)`, so a reader can
trace it to the stored runs (profile, seeds, device, commit, wall time).
"""
from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import HTML, Markdown, display

from .verdicts import MIN_RUNS

# One colour per family, fixed, so "lstm" is the same colour in every chapter.
FAMILY_ORDER = ["cnn", "rescnn", "tcn", "glucnn", "rnn", "lstm", "gru", "reslstm", "convlstm"]
FAMILY_LABELS = {
    "cnn": "plain CNN", "rescnn": "residual CNN", "tcn": "dilated CNN (TCN)", "glucnn": "gated CNN (GLU)",
    "rnn": "vanilla RNN", "lstm": "LSTM", "gru": "GRU", "reslstm": "residual LSTM", "convlstm": "conv+pool → LSTM",
}
# seaborn's colour-blind-safe palette (after Okabe and Ito): cool colours for the convolutional
# families, warm ones for the recurrent; its grey is left out, kept for signals and reference lines.
# Its yellow and pink are too pale for lines on white (contrast < 2), so the gated CNN and the residual
# LSTM take indigo and wine from Paul Tol's colour-blind-safe "muted" scheme instead.
_CB = sns.color_palette("colorblind")
INDIGO, WINE = (0.2, 0.133, 0.533), (0.533, 0.133, 0.333)          # Tol's #332288, #882255
FAMILY_COLORS = {
    "cnn": _CB[0], "rescnn": _CB[9], "tcn": _CB[2], "glucnn": INDIGO,                       # blue, sky, green, indigo
    "rnn": _CB[5], "lstm": _CB[3], "gru": _CB[1], "reslstm": WINE, "convlstm": _CB[4],      # brown, vermillion, orange, wine, purple
}
# Axes whose values are counts: their ticks must be whole numbers (matched on the start of the axis label).
INTEGER_AXES = ("depth", "layer", "epoch")


def layers(n: int) -> str:
    """ "1 layer", "4 layers"."""
    return f"{n} layer" if int(n) == 1 else f"{n} layers"


def contrast(color) -> float:
    """WCAG contrast ratio of a colour against white (1 to 21; thin lines need at least about 2 to read)."""
    rgb = np.asarray(plt.matplotlib.colors.to_rgb(color))
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return 1.05 / (float(lin @ [0.2126, 0.7152, 0.0722]) + 0.05)


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
    """Mean line per `hue` group with its 95% CI as a band; `summary` comes from stats.summarise. A point of fewer
    than MIN_RUNS values gets no band: a t interval from two values is wider than the data and hides the lines."""
    labels = labels or FAMILY_LABELS
    colors = colors or FAMILY_COLORS
    used: dict = {}    # groups sharing a colour (two sizes of one family) differ in dash and marker
    for name, g in summary.groupby(hue, sort=False):
        g = g.sort_values(x)
        c = colors.get(name)
        n = used[c] = used.get(c, -1) + 1 if c is not None else 0
        ax.plot(g[x], g[y], marker=marker if n == 0 else "sD^v"[(n - 1) % 4], ls=["-", "--", ":", "-."][n % 4],
                color=c, label=labels.get(name, str(name)))
        few = g["n"] < MIN_RUNS if "n" in g else pd.Series(False, index=g.index)
        if g[low].where(~few).notna().any():
            ax.fill_between(g[x], g[low].where(~few), g[high].where(~few), color=c, alpha=0.18, linewidth=0)
    if logx:
        ax.set_xscale("log", base=2)
        value_ticks(ax, summary[x].unique())


def value_ticks(ax, values, axis: str = "x") -> None:
    """Ticks at exactly `values`, written as plain numbers (no 2×10¹), and no minor tick labels: for log axes
    over a handful of sizes (depths, widths, lengths)."""
    a = ax.xaxis if axis == "x" else ax.yaxis
    values = sorted(float(v) for v in values if np.isfinite(v))
    a.set_ticks(values, [f"{v:g}" for v in values])
    a.set_minor_locator(plt.matplotlib.ticker.NullLocator())


class _Plain(plt.matplotlib.ticker.Formatter):
    """Log-axis tick labels: plain numbers (0.02, 500) when every visible tick reads well so, else powers of ten
    (10⁻⁶ ... 10⁰) for all of them, never a mix of the two on one axis."""
    def __call__(self, v, pos=None):
        lo, hi = sorted(self.axis.get_view_interval())
        shown = [t for t in self.axis.get_majorticklocs() if lo <= t <= hi and t > 0]
        if v <= 0:
            return ""
        if all(1e-3 <= t < 1e5 for t in shown):
            return f"{v:g}"
        e = int(np.floor(np.log10(v) + 1e-9))
        m = v / 10 ** e
        return f"$10^{{{e}}}$" if abs(m - 1) < 1e-6 else f"${m:g}\\times10^{{{e}}}$"


def log_ticks(ax, axis: str = "y") -> None:
    """Readable ticks on a log axis: majors at 1, 2, 5 × 10^k over less than two decades, 1, 3 × 10^k up to
    three and a half, else at powers of ten, written as plain numbers, and no minor tick labels (they overlap the majors at phone width)."""
    a = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticker = plt.matplotlib.ticker
    decades = np.log10(hi) - np.log10(lo) if 0 < lo < hi < np.inf else np.inf
    if decades < 3.5:
        subs = (1, 1.5, 2, 3, 5, 7) if decades < 0.6 else (1, 2, 5) if decades < 2 else (1, 3)
        a.set_major_locator(ticker.LogLocator(10, subs=subs))
    else:
        a.set_major_locator(ticker.LogLocator(10, numticks=8))
    a.set_major_formatter(_Plain())
    a.set_minor_formatter(ticker.NullFormatter())


def integer_ticks(ax, axis: str = "x") -> None:
    """Whole-number ticks on a count axis (depth, layer, epoch): never 2.2 layers. A log axis whose ticks were
    not set from its values (value_ticks) gets the powers of two in its range."""
    a = ax.xaxis if axis == "x" else ax.yaxis
    if a.get_scale() == "linear":
        a.set_major_locator(plt.matplotlib.ticker.MaxNLocator(integer=True))
    elif isinstance(a.get_major_formatter(), plt.matplotlib.ticker.LogFormatter):
        lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
        powers = [2 ** k for k in range(0, int(np.log2(max(hi, 1))) + 1) if lo <= 2 ** k <= hi]
        value_ticks(ax, powers or [max(1, round(lo))], axis)


def has_data(ax) -> bool:
    """Whether an axis shows any data: finite points of a line in data coordinates, a filled or scattered
    collection, a bar, an image. Reference lines (axhline, axvline, axhspan) do not count."""
    for line in ax.lines:
        if line.get_transform() is ax.transData:
            # get_xydata: the points after unit conversion, so a categorical axis (task names) counts as numbers
            if np.isfinite(np.asarray(line.get_xydata(), dtype=float)).all(axis=-1).any():
                return True
    for c in ax.collections:
        if isinstance(c, plt.matplotlib.collections.PathCollection):     # scatter: the points are its offsets
            points = [np.asarray(c.get_offsets(), dtype=float)]
        elif c.get_transform() is ax.transData:                         # bands, error bars: paths in data units
            points = [p.vertices for p in c.get_paths()]
        else:
            continue
        if any(np.isfinite(p).all(axis=-1).any() for p in points if p.ndim == 2 and len(p)):
            return True
    bars = [p for p in ax.patches if p.get_transform() is ax.transData]
    return bool(ax.images) or any(np.isfinite(p.get_height()) and p.get_height() != 0 for p in bars
                                  if hasattr(p, "get_height"))


def no_data(ax, message: str) -> None:
    """Say inside an empty axis why it is empty; its meaningless tick labels (0 to 1) go."""
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes, color="0.3",
            bbox={"facecolor": "white", "edgecolor": "none"})      # over any reference line (chance, zero)
    ax.tick_params(labelbottom=False, labelleft=False, bottom=False, left=False)
    ax.grid(False)


def finish(fig, empty: str = "no usable runs to show", shared_legend: bool = True, ncol: int | None = None):
    """The book's rules for every figure, applied after its data is drawn: an empty panel says why (`empty`,
    unless it already carries a text), count axes (label starting with depth, layer, epoch) get whole-number
    ticks, log axes plain-number ticks without minor labels, and the panels' legends become one legend under
    them, off the data (`shared_legend`). Returns `fig`."""
    for ax in fig.axes:
        if not ax.get_visible() or not (ax.get_xlabel() or ax.get_ylabel() or ax.get_title()):
            continue        # twin axes and helpers: their host axis speaks for them
        if not has_data(ax):
            if not ax.texts:
                no_data(ax, empty)
            continue
        for axis in ("x", "y"):
            a = ax.xaxis if axis == "x" else ax.yaxis
            if a.get_label_text().lower().startswith(INTEGER_AXES):
                integer_ticks(ax, axis)
            elif isinstance(a.get_major_formatter(), plt.matplotlib.ticker.LogFormatter):
                log_ticks(ax, axis)
    if shared_legend:
        legend(fig, ncol=ncol)
    return fig


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
    rows = -(-len(handles) // 4)        # at most 4 columns (phone width), rows filled evenly (5 -> 3 + 2)
    return fig.legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncol=ncol or -(-len(handles) // rows), **kw)


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


def styled(df: pd.DataFrame, floatfmt: str = "{:.3f}"):
    return (df.style.format(floatfmt, subset=df.select_dtypes("float").columns, na_rep="—")
            .format(na_rep="—", subset=df.select_dtypes(exclude="float").columns).hide(axis="index"))


def table(df: pd.DataFrame, name: str, floatfmt: str = "{:.3f}") -> None:
    """Show a table and a link that downloads it as CSV (embedded, so it survives any hosting). A missing value
    shows as a dash (a class with no beats, a family with no usable run), never as 'nan'."""
    display(styled(df, floatfmt))
    payload = base64.b64encode(df.to_csv(index=False).encode()).decode()
    display(HTML(f'<a download="{name}.csv" href="data:text/csv;base64,{payload}">Download {name}.csv</a>'))
