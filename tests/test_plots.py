"""plots: one colour-blind-safe colour per model family, and a shared legend that covers no data."""
import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

from ecglib import models, plots


def test_every_family_has_its_own_colour_blind_safe_colour():
    assert set(plots.FAMILY_COLORS) == set(models.FAMILIES) == set(plots.FAMILY_LABELS)
    colours = [tuple(c) for c in plots.FAMILY_COLORS.values()]
    assert len(set(colours)) == len(colours)
    safe = [tuple(c) for c in sns.color_palette("colorblind")]
    grey = safe[7]     # kept for signals and reference lines
    assert all(c in safe and c != grey for c in colours)
    plots.theme()       # hues that are not families (splits, classes) get the same palette
    assert [tuple(c) for c in sns.color_palette()] == safe


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
