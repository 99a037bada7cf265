"""plots: one colour-blind-safe colour per model family, and a shared legend that covers no data."""
import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

from ecglib import models, plots
import pandas as pd


def test_every_family_has_its_own_colour_blind_safe_colour_that_reads_on_white():
    assert set(plots.FAMILY_COLORS) == set(models.FAMILIES) == set(plots.FAMILY_LABELS)
    colours = [tuple(c) for c in plots.FAMILY_COLORS.values()]
    assert len(set(colours)) == len(colours)
    safe = [tuple(c) for c in sns.color_palette("colorblind")] + [plots.INDIGO, plots.WINE]   # Okabe-Ito, Tol
    grey = safe[7]     # kept for signals and reference lines
    assert all(c in safe and c != grey for c in colours)
    # a thin line must stand out from the white page: WCAG contrast >= 2 (the old yellow had 1.4, the pink 1.7)
    assert {f: round(plots.contrast(c), 2) for f, c in plots.FAMILY_COLORS.items() if plots.contrast(c) < 2} == {}
    assert plots.contrast("white") == pytest.approx(1) and plots.contrast("black") == pytest.approx(21)
    plots.theme()       # hues that are not families (splits, classes) get the same palette
    assert [tuple(c) for c in sns.color_palette()] == [tuple(c) for c in sns.color_palette("colorblind")]


def test_ci_lines_tells_apart_two_models_of_one_family():
    import pandas as pd
    fig, ax = plt.subplots()
    s = pd.DataFrame({"model": ["a", "a", "b", "b"], "x": [1, 2, 1, 2], "mean": [0.1, 0.2, 0.3, 0.4],
                      "low": float("nan"), "high": float("nan")})
    colour = plots.FAMILY_COLORS["rescnn"]
    plots.ci_lines(ax, s, "x", hue="model", colors={"a": colour, "b": colour}, labels={"a": "a", "b": "b"})
    a, b = ax.lines
    assert a.get_color() == b.get_color() and (a.get_linestyle(), a.get_marker()) != (b.get_linestyle(), b.get_marker())
    plt.close(fig)


def test_finish_gives_count_axes_whole_ticks_and_log_axes_no_minor_labels():
    fig, (a, b, c) = plt.subplots(1, 3)
    a.plot([2, 3], [0.4, 0.5], label="x")                     # a depth axis over 2..3 ticks 2.2, 2.4, ... by default
    a.set(xlabel="depth (layers)", ylabel="test accuracy")
    b.plot([16, 32, 64], [1e3, 5e3, 2e4])
    b.set(xscale="log", yscale="log", xlabel="width (channels)", ylabel="parameters")
    plots.value_ticks(b, [16, 32, 64])
    c.plot([1, 2, 3], [0.11, 0.15, 0.3])
    c.set(yscale="log", xlabel="epoch", ylabel="seconds")
    plots.finish(fig)
    fig.canvas.draw()
    visible = lambda ax, axis: [t for t in getattr(ax, f"get_{axis}ticks")()
                                if min(getattr(ax, f"get_{axis}lim")()) <= t <= max(getattr(ax, f"get_{axis}lim")())]
    assert visible(a, "x") and all(float(t).is_integer() for t in visible(a, "x"))
    assert all(float(t).is_integer() for t in visible(c, "x"))
    assert [t.get_text() for t in b.get_xticklabels()] == ["16", "32", "64"]        # plain numbers, not 2×10¹
    for ax in (b, c):
        for axis in (ax.xaxis, ax.yaxis):
            assert all(t.get_text() == "" for t in axis.get_minorticklabels())
    labels = [t.get_text() for t in c.get_yticklabels() if t.get_text()]
    assert labels and all("times" not in t and "^" not in t for t in labels)        # 0.2, not 2×10⁻¹
    assert fig.legends and a.get_legend() is None                                     # the legend left the data
    plt.close(fig)


def test_finish_explains_an_empty_panel_and_leaves_full_ones_alone():
    fig, (a, b, c) = plt.subplots(1, 3)
    a.plot([1, 2], [float("nan")] * 2, label="LSTM")          # every run failed: NaN means
    a.axhline(0.5, color="grey")                                # a reference line is not data
    a.set(xlabel="depth (stacked layers)", ylabel="test accuracy")
    b.plot([1, 2], [0.5, 0.6])
    b.set(xlabel="depth (stacked layers)")
    c.text(0.5, 0.5, "failed")                                  # already says why
    d = fig.add_subplot(2, 2, 4, title="errorbars of failed runs")
    d.errorbar(range(3), [float("nan")] * 3, yerr=[[0] * 3, [0] * 3], fmt="o")   # their offsets default to (0, 0)
    e = fig.add_subplot(2, 2, 3, title="scatter")
    e.scatter([1e5], [0.1])
    c.set(title="t")
    plots.finish(fig, "no family reached 0.9 test accuracy")
    assert [t.get_text() for t in a.texts] == ["no family reached 0.9 test accuracy"]
    # its 0-to-1 ticks meant nothing: gone
    assert a.xaxis.get_tick_params()["labelbottom"] is False and a.yaxis.get_tick_params()["labelleft"] is False
    assert not b.texts and [t.get_text() for t in c.texts] == ["failed"]
    assert plots.has_data(b) and plots.has_data(e) and not plots.has_data(a) and not plots.has_data(d)
    assert [t.get_text() for t in d.texts] == ["no family reached 0.9 test accuracy"]
    plt.close(fig)


def test_layers_is_singular_for_one():
    assert (plots.layers(1), plots.layers(4)) == ("1 layer", "4 layers")


def test_shared_legend_sits_below_every_panel_with_each_label_once():
    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        for family in ("cnn", "lstm"):
            ax.plot([0, 1], [0, 1], color=plots.FAMILY_COLORS[family], label=plots.FAMILY_LABELS[family])
        ax.legend()
    axes[1].plot([0, 1], [1, 0], label="GRU")
    leg = plots.legend(fig)
    assert [t.get_text() for t in leg.get_texts()] == ["plain CNN", "LSTM", "GRU"]
    assert all(ax.get_legend() is None for ax in axes)
    fig.canvas.draw()
    box = leg.get_window_extent()
    assert all(box.y1 <= ax.get_window_extent().y0 for ax in axes)    # entirely under the panels
    plt.close(fig)
    fig, ax = plt.subplots()
    assert plots.legend(fig) is None                                     # nothing labelled: no empty box
    plt.close(fig)


def test_provenance_flags_runs_of_mixed_training_code(capsys):
    import pandas as pd
    from ecglib import plots
    runs = pd.DataFrame({"seed": [0, 1, 2], "device": "cpu", "commit": "abc", "wall_s": 60.0,
                         "code": ["aaa", "aaa", "bbb"]})
    text = plots.mixed_code_warning(runs["code"].value_counts())
    assert text.startswith(":::{warning}") and "`aaa`: 2 runs" in text and "`bbb`: 1 runs" in text
    shown = []
    monkey = pytest.MonkeyPatch()
    monkey.setattr(plots, "display", lambda obj: shown.append(obj.data))
    try:
        plots.provenance(runs, "smoke")
        assert len(shown) == 2 and "training code aaa, bbb" in shown[0] and "{warning}" in shown[1]
        shown.clear()
        plots.provenance(runs.assign(code="aaa"), "smoke")
        assert len(shown) == 1
    finally:
        monkey.undo()


def test_ci_lines_draws_no_band_from_fewer_than_three_values():
    """A t interval from two values spans orders of magnitude and hides every line; the mean alone is shown."""
    import matplotlib.pyplot as plt
    s = pd.DataFrame({"family": ["cnn"] * 2 + ["lstm"] * 2, "x": [1, 2] * 2, "mean": [1.0, 2.0, 1.5, 2.5],
                      "low": [-50.0, -40.0, 1.4, 2.4], "high": [50.0, 40.0, 1.6, 2.6], "n": [2, 2, 5, 5]})
    fig, ax = plt.subplots()
    plots.ci_lines(ax, s, "x")
    assert len(ax.lines) == 2 and len(ax.collections) == 1        # the lstm's band only
    assert ax.get_ylim()[0] > -10
    plt.close(fig)


def test_a_line_over_task_names_counts_as_data():
    """A categorical axis (the features chapter's tasks) holds strings; the points count, a missing one does not."""
    fig, (a, b) = plt.subplots(1, 2)
    a.plot(["GunPoint", "ECG200"], [1.0, float("nan")], marker="o")
    b.plot(["GunPoint", "ECG200"], [float("nan")] * 2, marker="o")
    assert plots.has_data(a) and not plots.has_data(b)
    plt.close(fig)


def test_tables_show_missing_values_as_a_dash():
    import pandas as pd
    html = plots.styled(pd.DataFrame({"class": ["N", "Q"], "F1": [0.91, float("nan")], "note": ["", None]})).to_html()
    assert ">nan<" not in html and ">None<" not in html and html.count(">—<") == 2 and "0.910" in html
