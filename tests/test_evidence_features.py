"""The features chapter's analysis on constructed runs tables: no training, no data."""
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ecglib import experiments, models
from ecglib.evidence import features as fe

matplotlib.use("Agg")
SEEDS = [0, 1, 2, 3]


def span_runs(acc: dict, span=3, noise=0.01, seeds=SEEDS):
    """A pattern-span runs table: acc maps (family, depth) -> mean test accuracy; seeds add noise."""
    rng = np.random.default_rng(0)
    rows = []
    for (family, depth), a in acc.items():
        rf = models.build_model(family, depth).receptive_field if family in fe.CONV else math.nan
        for s in seeds:
            rows.append({"dataset": "synthetic", "family": family, "depth": depth, "span": span, "seed": s,
                         "status": "ok", "key": f"{family}-{depth}-{span}-{s}", "receptive_field": rf,
                         "n_params": 100, "test_acc": float(np.clip(a + rng.normal(0, noise), 0, 1))})
    return fe.with_fields(pd.DataFrame(rows))


def cnns(blind=0.5, seeing=0.95):
    # cnn receptive fields: 7 (blind to span 3), 20 (partial), 32 (covers the 32-sample pattern)
    return {("cnn", 1): blind, ("cnn", 2): seeing, ("cnn", 3): seeing, ("tcn", 1): blind, ("tcn", 3): seeing}


NO_GENEROUS = pd.DataFrame(columns=["family", "depth", "span", "seed", "test_acc"])


@pytest.mark.parametrize("acc, c3, c7", [
    ({**cnns(), ("lstm", 1): 0.97, ("gru", 1): 0.96}, "supported", "supported"),
    ({**cnns(), ("lstm", 1): 0.5, ("gru", 1): 0.5}, "refuted", "refuted"),          # the CNN learns, the LSTM not
    ({**cnns(blind=0.95), ("lstm", 1): 0.97, ("gru", 1): 0.97}, "refuted", "refuted"),  # a blind CNN solves it: a leak
    ({**cnns(seeing=0.5), ("lstm", 1): 0.5, ("gru", 1): 0.5}, "refuted", "inconclusive"),  # nothing learned
])
def test_c3_c7_from_the_pattern_span_runs(acc, c3, c7):
    runs = span_runs(acc)
    v3, v7 = fe.c3_c7(runs, NO_GENEROUS, [3])
    assert (v3.verdict, v7.verdict) == (c3, c7), (v3.reason, v7.reason)
    e = fe.span_effects(runs, NO_GENEROUS, 3)
    assert (e["last_blind"], e["first_seeing"]) == (1, 3)     # depth 2's field is partial, depth 3's covers
    assert v7.value == pytest.approx(acc[("lstm", 1)] - acc[("cnn", 1)], abs=0.03)
    assert v3.value == pytest.approx(acc[("cnn", 3)] - acc[("cnn", 1)], abs=0.03)


def test_c7_reads_the_cnn_where_its_field_spans_the_pattern():
    """A CNN whose field only reaches the shortest telling window may stay at chance; the CNN that covers the
    pattern learned it, so the span is decided (the LSTM at chance refutes C7), not left to the budget."""
    runs = span_runs({**cnns(), ("cnn", 2): 0.5, ("lstm", 1): 0.5, ("gru", 1): 0.5})
    _, v7 = fe.c3_c7(runs, NO_GENEROUS, [3])
    assert v7.verdict == "refuted" and "nothing learned" not in v7.reason, v7.reason
    assert "CNN depth 3 minus depth 1" in v7.reason
    assert len(v7.runs) == len(runs) and v7.margin == 0.05


def test_span_effects_drop_unfinished_runs_but_keep_runs_at_chance():
    """A blind CNN at chance is the measurement (kept even when flagged collapsed); an LSTM run that did not
    converge is a training failure (left out)."""
    runs = span_runs({**cnns(), ("lstm", 1): 0.97}).assign(converged=True, collapsed=False)
    runs.loc[(runs.family == "cnn") & (runs.depth == 1), "collapsed"] = True
    runs.loc[(runs.family == "lstm") & (runs.seed == 0), ["converged", "test_acc"]] = [False, 0.0]
    e = fe.span_effects(runs, NO_GENEROUS, 3)
    assert e["blind"][3] == len(SEEDS) and e["lstm"][3] == len(SEEDS) - 1
    assert e["lstm"][0] == pytest.approx(0.97 - 0.5, abs=0.03)


def test_the_generous_budget_can_rescue_the_lstm():
    runs = span_runs({**cnns(), ("lstm", 1): 0.5, ("gru", 1): 0.5})
    generous = span_runs({("lstm", 1): 0.97})
    v3, v7 = fe.c3_c7(runs, generous, [3])
    assert v7.verdict == "supported" and "generous budget" in v7.reason
    assert "first solves it at depth 2" in v7.summary


def test_span_task_with_no_blind_cnn_decides_nothing():
    runs = span_runs({("cnn", 3): 0.95, ("lstm", 1): 0.97, ("gru", 1): 0.97})
    v3, v7 = fe.c3_c7(runs, NO_GENEROUS, [3])
    assert v3.verdict == v7.verdict == "inconclusive" and math.isnan(v7.value)


def test_field_class():
    assert [fe.field_class(r, 3) for r in (7, 17, 18, 31, 32, None)] == \
        ["blind", "blind", "partial", "partial", "covers", "whole input"]


def test_c10_counts_parameters_exactly():
    per_layer = fe.params_per_layer([16, 32])
    v = fe.c10(per_layer)
    # kernel 7: an LSTM layer (4 gates) has more than a conv layer, a GRU (3) and a vanilla RNN (1) fewer
    assert v.verdict == "depends" and v.value == v.low == v.high > 1 and not v.runs
    bigger = per_layer.assign(parameters=np.where(per_layer.family == "cnn", 1, per_layer.parameters))
    assert fe.c10(bigger).verdict == "supported"
    assert list(fe.params_table(per_layer)["lstm / cnn"]) == pytest.approx(
        [per_layer.query(f"family == 'lstm' and width == {w}").parameters.iloc[0]
         / per_layer.query(f"family == 'cnn' and width == {w}").parameters.iloc[0] for w in (16, 32)])


def gate_runs(glu, cnn, lstm=0.8, rnn=0.7, noise=0.005):
    rng = np.random.default_rng(1)
    rows = [{"family": f, "seed": s, "key": f"{f}-{s}", "status": "ok", "n_params": 1000, "depth": 2,
             "test_score": v + rng.normal(0, noise)}
            for f, v in (("glucnn", glu), ("cnn", cnn), ("lstm", lstm), ("rnn", rnn)) for s in SEEDS]
    return {"mitdb": pd.DataFrame(rows)}


def test_gate_table_pairs_gated_with_ungated():
    runs = gate_runs(glu=0.8, cnn=0.7)
    gates = fe.gate_table(runs)
    assert list(gates["comparison"]) == ["conv: glucnn - cnn", "recurrent: lstm - rnn"]
    assert gates["mean"].tolist() == pytest.approx([0.1, 0.1], abs=0.01) and (gates["n"] == 4).all()
    assert fe.fig_gates(gates) is not None


def real(cnn: dict, lstm: dict, noise=0.005):
    rng = np.random.default_rng(2)
    rows = []
    for dataset in ("mitdb", "cinc2017"):
        for family, by_depth in (("cnn", cnn), ("lstm", lstm)):
            for d, f1 in by_depth.items():
                for s in SEEDS:
                    v = f1 + rng.normal(0, noise)
                    rows.append({"dataset": dataset, "family": family, "depth": d, "seed": s, "status": "ok",
                                 "key": f"{dataset}-{family}-{d}-{s}", "test_score": v, "val_score": v})
    df = pd.DataFrame(rows)
    return {d: df[df["dataset"] == d] for d in ("mitdb", "cinc2017")}


@pytest.mark.parametrize("cnn, lstm, verdict", [
    ({1: 0.6, 4: 0.8}, {1: 0.8, 2: 0.79}, "supported"),   # a shallow LSTM matches a CNN that needs layers
    ({1: 0.6, 4: 0.8}, {1: 0.6, 2: 0.65}, "refuted"),     # the LSTM is clearly worse
    ({1: 0.8, 4: 0.8}, {1: 0.8, 2: 0.8}, "refuted"),      # depth buys the CNN nothing
])
def test_features_c4(cnn, lstm, verdict):
    runs = real(cnn, lstm)
    table = fe.c4_table(runs)
    assert list(table["dataset"]) == ["MIT-BIH", "CinC 2017"] and (table["pairs"] == 4).all()
    v = fe.c4(table, runs)
    assert v.verdict == verdict, v.reason
    assert v.value == pytest.approx(max(lstm.values()) - max(cnn.values()), abs=0.02)


def test_figures_draw_from_constructed_inputs():
    rf = fe.receptive_fields([1, 2, 4])
    assert fe.fig_receptive_fields(rf, {"MIT-BIH": 90.0, "CinC 2017": 50.0}, {"MIT-BIH": 0.7, "CinC 2017": 10})
    assert fe.layers_to_see(rf, {"MIT-BIH": 90.0}).shape[0] == 2
    runs = span_runs({**cnns(), ("lstm", 1): 0.97, ("gru", 1): 0.96})
    assert fe.fig_span(fe.span_summary(runs), [3], {"cnn": [1, 2, 3], "tcn": [1, 3]})
    assert set(fe.span_table(runs, fe.span_summary(runs))["field"]) == {"blind", "partial", "covers", "whole input"}
    assert fe.fig_params(fe.params_per_layer([16, 32]))
    assert fe.fig_real(real({1: 0.6, 4: 0.8}, {1: 0.8}))
    sal = {"signal": [[0.0] * 10], "saliency": [[0.0] * 9 + [1.0]]}
    recs = {f: {"classes": ["N"], "config": {"dataset": "cinc2017", "crop_s": 10, "depth": 2},
                "probes": {"saliency": {"N": sal}, "filters": {"weights": np.ones((4, 1, 7)).tolist()}}}
            for f in ("cnn", "lstm")}
    assert fe.fig_saliency(recs) is not None and fe.saliency_share(recs["lstm"]) == 1.0
    assert "CinC 2017 LSTM 1.00" in fe.saliency_text({"CinC 2017": recs})
    assert fe.fig_filters({"CinC 2017": recs})


def test_no_blind_cnn_is_said_in_words_not_none():
    runs = span_runs({("cnn", 3): 0.95, ("lstm", 1): 0.97, ("gru", 1): 0.97})
    for v in fe.c3_c7(runs, NO_GENEROUS, [3]):
        assert "None" not in v.effect + v.summary and "none tried" in v.effect or "no CNN depth" in v.summary


def field_runs(one, deep, seeds=SEEDS):
    """field_sweep's runs: one-layer and three-layer CNNs at equal receptive field."""
    return pd.DataFrame([{"family": "cnn", "depth": d, "kernel_size": k, "span": 3, "seed": s, "status": "ok",
                          "converged": True, "collapsed": False, "key": f"f{d}-{s}", "receptive_field": 33,
                          "test_acc": a + 0.002 * s} for d, k, a in ((1, 33, one), (3, 9, deep)) for s in seeds])


@pytest.mark.parametrize("one, deep, c3", [(0.95, 0.95, "refuted"), (0.6, 0.95, "supported")])
def test_c3_reads_depth_at_equal_receptive_field(one, deep, c3):
    """C3's CNN half can fail: a one-layer CNN with a covering kernel that does as well refutes it."""
    runs = span_runs({**cnns(), ("lstm", 1): 0.97, ("gru", 1): 0.96})
    v3, v7 = fe.c3_c7(runs, NO_GENEROUS, [3], field_runs(one, deep))
    assert v3.verdict == c3 and v7.verdict == c3, (v3.reason, v7.reason)
    assert v3.value == pytest.approx(deep - one)
    assert fe.kernel_for_field("cnn", 1, 32) == 33
    assert models.build_model("cnn", 3, kernel_size=fe.kernel_for_field("cnn", 3, 32)).receptive_field >= 32


def need_runs(acc: dict, seeds=SEEDS, **cols):
    """acc: (family, depth) -> test accuracy; every run usable."""
    return pd.DataFrame([{"family": f, "depth": d, "seed": s, "status": "ok", "converged": True, "collapsed": False,
                          "key": f"{f}{d}{s}", "test_acc": a, **cols} for (f, d), a in acc.items() for s in seeds])


def test_depth_needed_solved_saturated_and_censored():
    runs = need_runs({("cnn", 1): 0.6, ("cnn", 2): 0.93, ("cnn", 4): 0.95, ("lstm", 1): 0.6, ("lstm", 2): 0.7})
    runs.loc[(runs.family == "cnn") & (runs.depth == 2) & (runs.seed == 0), "converged"] = False   # not read
    need = fe.depth_needed(runs, "test_acc", target=0.9)
    cnn = need[need.family == "cnn"].set_index("seed")
    assert cnn.depth.tolist() == [4, 2, 2, 2] and not cnn.censored.any()
    lstm = need[need.family == "lstm"]
    assert lstm.censored.all() and (lstm.depth == 4).all()   # twice the deepest tried: a lower bound
    sat = fe.depth_needed(runs, "test_acc", tolerance=0.05)
    assert sat[(sat.family == "cnn") & (sat.seed == 1)].depth.item() == 2
    t = fe.needed_table(need)
    assert t.set_index("family").loc["lstm", "never reached"] == 4


@pytest.mark.parametrize("mitdb_depth, verdict", [(8, "supported"), (2, "refuted"), (4, "inconclusive")])
def test_c13_compares_the_depth_each_task_needs(mitdb_depth, verdict):
    rng = np.random.default_rng(0)
    need = pd.concat([pd.DataFrame({"family": "cnn", "task": t, "seed": SEEDS, "censored": False,
                                    "depth": d if t != "mitdb" or mitdb_depth != 4 else rng.choice([1, 16], 4)})
                      for t, d in (("gunpoint", 2), ("mitdb", mitdb_depth))])
    pairs = fe.c13_needed(need)
    assert pairs.tasks.tolist() == ["gunpoint vs mitdb"]
    v = fe.c13(pairs, need_runs({("cnn", 1): 0.9}))
    assert v.verdict == verdict, v.reason
    assert v.value == pytest.approx(pairs.iloc[0]["mean"])   # the headline pair's estimate, inconclusive or not


@pytest.mark.parametrize("cnn_depth, verdict", [(3, "supported"), (1, "refuted")])
def test_c11_counts_the_layers_gates_save(cnn_depth, verdict):
    need = pd.DataFrame({"family": ["cnn"] * 4 + ["glucnn"] * 4, "seed": SEEDS * 2, "censored": False,
                         "depth": [cnn_depth] * 4 + [1] * 4})
    v = fe.c11_layers(need, need_runs({("cnn", 1): 0.9}))
    assert v.verdict == verdict and v.claim == "C11"


def test_c11_is_inconclusive_when_neither_cnn_reached_the_target():
    """Both censored at the same lower bound: a difference of zero would read "refuted"; it says nothing."""
    need = pd.DataFrame({"family": ["cnn"] * 4 + ["glucnn"] * 4, "seed": SEEDS * 2, "censored": True,
                         "depth": [16.0] * 8})
    v = fe.c11_layers(need, need_runs({("cnn", 1): 0.9}))
    assert v.verdict == "inconclusive" and "neither CNN reached" in v.reason
    # a seed where only the plain CNN never got there still counts (a lower bound on what gates save)
    need.loc[need.family == "glucnn", ["censored", "depth"]] = [False, 1.0]
    assert fe.c11_layers(need, need_runs({("cnn", 1): 0.9})).verdict == "supported"


def test_rr_context_effect():
    runs = pd.concat([need_runs({("lstm", 1): 0.5}, rr=False, test_score=0.40),
                      need_runs({("lstm", 1): 0.5}, rr=True, test_score=0.50),
                      need_runs({("cnn", 1): 0.5}, rr=False, test_score=0.5),
                      need_runs({("cnn", 1): 0.5}, rr=True, test_score=0.5)])
    runs["test_score"] += runs.seed * 0.001
    t = fe.rr_table(runs)
    assert t.set_index("family")["mean"].tolist() == pytest.approx([0.0, 0.1])
    assert fe.rr_judgement(t).verdict == "supported"


def test_depth_needed_figure_says_why_it_is_empty():
    import matplotlib.pyplot as plt
    cols = ["family", "span", "seed", "depth", "censored", "tried"]
    fig = fe.fig_depth_needed(pd.DataFrame(columns=cols), "span", "Layers needed")
    assert any("no usable run" in t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)
    never = pd.DataFrame([["cnn", 2, s, 16.0, True, 8] for s in range(2)], columns=cols)
    fig = fe.fig_depth_needed(never, "span", "Layers needed")      # every seed a lower bound: the title says so
    ax = fig.axes[0]
    assert f"no family reached {fe.TARGET:g} test accuracy" in ax.get_title()
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_yticks() if min(ax.get_ylim()) <= t <= max(ax.get_ylim()))
    plt.close(fig)


def test_generous_runs_can_be_read_by_the_verdicts():
    """Early stopping off means patience None: with patience = epochs no run could ever count as converged (its best
    epoch would have to come `epochs` epochs before its last), so the generous budget would never reach C7."""
    from ecglib import train
    configs = fe.generous_sweep(fe.syn_base(64, 100, 5, 16, None), 400, 20, [3], [0, 1])
    assert len(configs) == 2 and all(c.patience is None and c.epochs == 20 and c.n_train == 400 for c in configs)
    history = [{}] * 20
    assert train.converged(history, best_epoch=12, patience=configs[0].patience)
    assert not train.converged(history, best_epoch=12, patience=20)     # the old setting: unreadable


def test_rr_pairs_differ_in_their_input_alone():
    """Without an lr grid the pair runs at the base's rate; the runs without RR context are the base's own configs."""
    base = {"dataset": "mitdb", "fs": 90, "width": 8}
    configs = fe.rr_sweep(base, {"cnn": 4, "lstm": 1}, [0, 1])
    plain, ctx = [c for c in configs if not c.rr], [c for c in configs if c.rr]
    assert len(plain) == len(ctx) == 4
    assert {c.key for c in plain} == {c.key for f, d in (("cnn", 4), ("lstm", 1))
                                      for c in experiments.sweep({**base, "family": f, "depth": d}, seed=[0, 1])}
    for a, b in zip(plain, ctx):
        assert {k for k, v in a.to_dict().items() if b.to_dict()[k] != v} == {"rr"}
