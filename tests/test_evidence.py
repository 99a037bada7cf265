"""The chapters' analysis on small constructed runs tables and records: no training, no data."""
import dataclasses
import math
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ecglib import experiments
from ecglib.protocol import is_usable
from ecglib.evidence import depth as ev
from ecglib.evidence import overfitting as ov

matplotlib.use("Agg")
SEEDS = [0, 1, 2, 3]


def table(spec, datasets=("mitdb", "cinc2017"), seeds=SEEDS, noise=0.005):
    """A runs table: spec maps (family, depth) -> dict of metric means; each seed adds small noise."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in datasets:
        for (family, depth), metrics in spec.items():
            for s in seeds:
                row = {"dataset": dataset, "family": family, "depth": depth, "seed": s, "status": "ok",
                       "key": f"{dataset}-{family}-{depth}-{s}", "n_params": 1000 * depth}
                for m, v in metrics.items():
                    row[m] = v + rng.normal(0, noise) if v is not None and not (isinstance(v, float) and math.isnan(v)) else math.nan
                rows.append(row)
    df = pd.DataFrame(rows)
    return {d: df[df["dataset"] == d] for d in datasets}


def good(f1, loss=0.5):
    return {"test_macro_f1": f1, "val_macro_f1": f1, "train_macro_f1": f1 + 0.05, "train_loss": loss}


def test_depth_sweep_is_one_definition_shared_by_chapters():
    base = {"dataset": "synthetic", "epochs": 1}
    a = ev.depth_sweep(base, ["cnn"], ["lstm"], [1, 2], [1], 2)
    assert [c.key for c in a] == [c.key for c in ev.depth_sweep(base, ["cnn"], ["lstm"], [1, 2], [1], [0, 1])]
    assert len(a) == 6 and all(isinstance(c, experiments.RunConfig) for c in a)


SPEC = {("cnn", 2): good(0.8), ("cnn", 8): good(0.85), ("lstm", 2): good(0.6), ("lstm", 8): good(0.5, loss=1.5)}


def test_c4_refuted_when_the_best_recurrent_model_is_clearly_worse():
    v, best = ev.c4(table(SPEC), ["cnn"], ["lstm"])
    assert v.verdict == "refuted" and "worse by more than the margin" in v.reason
    assert best["mitdb"]["conv"] == ("cnn", 8) and best["mitdb"]["rnn"] == ("lstm", 2)
    assert v.margin == 0.02 and v.value == pytest.approx(-0.25, abs=0.02)


def test_every_run_of_a_family_diverged_breaks_nothing():
    spec = {**SPEC, ("lstm", 2): {k: math.nan for k in good(0)}, ("lstm", 8): {k: math.nan for k in good(0)}}
    runs = table(spec)
    for df in runs.values():
        df.loc[df["family"] == "lstm", "status"] = "diverged"
    assert math.isnan(ev.sufficient_depth(runs["mitdb"], "lstm")) and ev.best_config(runs["mitdb"], ["lstm"]) is None
    v, best = ev.c4(runs, ["cnn"], ["lstm"])
    assert v.verdict == "inconclusive" and "no finished run" in v.summary
    t = ev.sweep_table(pd.concat(runs.values()))
    assert (t[t["family"] == "lstm"]["test macro-F1"] == "no finished run").all()
    assert (t[t["family"] == "lstm"]["diverged"] == len(SEEDS)).all()
    assert ev.fig_depth_panels(runs, "test_macro_f1", "f1", "t") is not None


def test_c1_supported_when_lstm_fits_worse_and_its_gradients_vanish():
    runs = table(SPEC)
    grads = pd.concat(runs.values())[["dataset", "family", "depth", "seed", "key"]].copy()
    grads["layer_init"] = np.where(grads["family"] == "lstm", 4.0, 0.5) + 0.01 * grads["seed"]
    v = ev.c1(runs, grads, 2, 8)
    assert v.verdict == "supported" and "harder to train supported" in v.reason
    grads["layer_init"] = 0.5 + 0.01 * grads["seed"]           # same attenuation in both families
    assert ev.c1(runs, grads, 2, 8).verdict == "refuted"


def record(family="lstm", depth=2, curve=None, norms=None, classes=5):
    config = dataclasses.asdict(experiments.RunConfig(family=family, depth=depth))
    norms = norms or {f"layers.{i}": 10.0 ** (i - depth) for i in range(depth)}
    curve = np.exp(np.linspace(-10, 0, 100)) if curve is None else curve
    return {"config": config, "classes": list("NSVFQ")[:classes], "history": [{"grad_norms": norms}],
            "probes": {"grad_norms_init": norms, "input_grad": {"curve": list(curve), "length": 200}}}


def test_gradient_measures_and_c8_lower_bounds():
    r = record("cnn", 4)
    sizes = ev.layer_sizes(r["config"], 5)
    assert len(sizes) == 4 and sizes[1] == sizes[2]
    assert ev.layer_attenuation(r) == pytest.approx(3 + math.log10(math.sqrt(sizes[0] / sizes[-1])), abs=1e-9)
    under = np.r_[np.zeros(40), 10.0 ** -np.linspace(30, 0, 60)]
    t = ev.time_attenuation(record(curve=under))
    assert t["censored"] and t["resolved"] == 120 and t["steps"] == 200   # 60 of 100 points = 120 input samples
    grads = pd.DataFrame([{"dataset": "cinc2017", "family": "lstm", "depth": d, "seed": s, "key": f"{d}{s}",
                           "layer_final": 40.0 + s, "time": 38.0 + 0.1 * s, "time_censored": True,
                           "time_resolved": 120, "time_steps": 200} for d in (1, 8) for s in range(3)])
    v = ev.c8(grads, [1, 8], grads.assign(status="ok"))
    assert v.verdict == "inconclusive" and "lower bounds" in v.reason    # a bound cannot refute
    grads["layer_final"] = 2.0 + 0.1 * grads["seed"]
    assert ev.c8(grads, [1, 8], grads.assign(status="ok")).verdict == "supported"
    table_ = ev.gradient_table(pd.DataFrame([{"dataset": "mitdb", "family": "cnn", "depth": 4, "seed": 0, "key": "k",
                                              "status": "ok"}]), {"k": r})
    assert table_["layer_init"].iloc[0] == pytest.approx(ev.layer_attenuation(r))


def test_grad_time_figure_survives_underflow_and_missing_families():
    runs = {"mitdb": pd.DataFrame([{"family": "lstm", "depth": 1, "key": "a"}, {"family": "lstm", "depth": 8, "key": "b"}])}
    recs = {"a": record(curve=np.zeros(100)), "b": record(curve=np.r_[np.zeros(50), np.ones(50)])}
    assert ev.fig_grad_time(runs, recs, {"mitdb": 90}, {"lstm": [1, 8], "gru": [1]}) is not None


def test_collapsed_runs_have_no_gap_and_cannot_refute_c2():
    spec = {("cnn", 2): good(0.6), ("cnn", 8): good(0.6), ("lstm", 2): good(0.2), ("lstm", 8): good(0.2)}
    df = pd.concat(table(spec, datasets=("mitdb",), noise=0.0).values())
    df = df.assign(collapsed=df["family"].eq("lstm"))   # as load_runs flags a one-class model
    g = ov.with_gaps(df)
    assert g[g["family"] == "lstm"]["gap"].isna().all() and g[g["family"] == "cnn"]["gap"].notna().all()
    e = ov.c2_effects(g, 2, 8)
    assert e["judgement"].verdict == "inconclusive" and "collapsed" in e["judgement"].reason
    v = ov.c2({"mitdb": e}, {}, ["cnn", "lstm"], [g])
    assert v.verdict == "inconclusive" and v.claim == "C2"
    assert is_usable(df.assign(collapsed=False, converged=[True, False] * (len(df) // 2))).sum() == len(df) // 2


def test_c2_supported_when_deeper_lstms_overfit_more_than_cnns():
    spec = {("cnn", 2): good(0.8), ("cnn", 8): good(0.8), ("lstm", 2): good(0.7), ("lstm", 8): good(0.5)}
    df = pd.concat(table(spec, datasets=("mitdb",)).values())
    df.loc[df["family"] == "lstm", "train_macro_f1"] = 0.95 + 0.001 * df["seed"]
    e = ov.c2_effects(ov.with_gaps(df), 2, 8)
    assert e["judgement"].verdict == "supported"
    assert set(ov.c2_table({"mitdb": e})["verdict"]) == {"supported"}


def test_c5_undefined_correlation_says_why():
    rec = pd.DataFrame({"flow": np.linspace(-2, 0, 12), "gap": np.zeros(12), "key": [f"k{i}" for i in range(12)]})
    v = ov.c5(rec)
    assert v.verdict == "inconclusive" and "needs at least 4" not in v.reason and "12" in v.reason
    rec["gap"] = -rec["flow"] * 0.1 + np.linspace(0, 0.001, 12)      # weaker flow (more negative), larger gap
    assert ov.c5(rec).verdict == "supported"


def test_c6_and_c9_from_seeded_runs():
    rows = []
    for s in SEEDS:
        for frac, gap in ((0.025, 0.2), (0.1, 0.05)):
            rows.append({"family": "cnn", "train_fraction": frac, "seed": s, "gap": gap + 0.01 * s, "key": f"c{frac}{s}"})
            rows.append({"family": "lstm", "train_fraction": frac, "seed": s, "gap": gap, "key": f"l{frac}{s}"})
    curves = pd.DataFrame(rows)
    leak = pd.DataFrame([{"family": "cnn", "split": sp, "seed": s, "test_macro_f1": 0.5 + 0.2 * (sp == "intra") + 0.01 * s,
                          "key": f"{sp}{s}"} for sp in ("inter", "intra") for s in SEEDS])
    assert ov.c6(curves, leak, [0.025, 0.1]).verdict == "supported"
    regimes = {"base": {}, "all three": {"dropout": 0.3}}
    reg = pd.DataFrame([{"family": "lstm", "regime": r, "seed": s, "status": "ok", "key": f"{r}{s}",
                         "gap": (0.2 if r == "base" else 0.05) + 0.01 * s, "test_macro_f1": 0.6 + 0.001 * s}
                        for r in regimes for s in SEEDS])
    assert ov.c9(reg, regimes).verdict == "supported"
    reg.loc[reg["regime"] == "all three", "test_macro_f1"] -= 0.2            # narrower gap, but at a price
    v = ov.c9(reg, regimes)
    assert v.verdict == "refuted" and "test score kept refuted" in v.reason


@pytest.mark.parametrize("mit, verdict", [
    ((-0.014, -0.151, 0.124), "inconclusive"),   # the published C11: a wide CI across zero is not a refutation
    ((-0.002, -0.012, 0.008), "refuted"),        # narrow, inside the no-effect band
    ((0.08, 0.05, 0.11), "supported")])
def test_c11_never_refutes_on_the_sign_of_the_mean(mit, verdict):
    from ecglib.evidence import features as fe
    gates = pd.DataFrame([{"data": "MIT-BIH", "comparison": "conv: glucnn - cnn", "mean": mit[0], "low": mit[1],
                           "high": mit[2], "n": 3},
                          {"data": "MIT-BIH", "comparison": "recurrent: lstm - rnn", "mean": 0.3, "low": 0.2,
                           "high": 0.4, "n": 3}])
    j = fe.c11(gates)
    assert j.verdict == verdict and j.mean == mit[0]


def test_c4_with_one_seed_decides_nothing():
    v, _ = ev.c4(table(SPEC, seeds=[0]), ["cnn"], ["lstm"])
    assert v.verdict == "inconclusive" and "a verdict needs at least 3" in v.reason


def test_depth_chapter_parameters_fail_before_training():
    ev.check_params([1, 2, 8], [1, 2, 8], [2, 8], ["cnn"], ["lstm"])
    with pytest.raises(ValueError, match=r"compare_depths \[2, 4\] must be in conv_depths \[1, 2, 8\]; missing: \[4\]"):
        ev.check_params([1, 2, 8], [1, 2, 4], [2, 4], ["cnn"], ["lstm"])
    with pytest.raises(ValueError, match="shallow < deep"):
        ev.check_params([2, 8], [2, 8], [8, 2], ["cnn"], ["lstm"])
    with pytest.raises(ValueError, match="needs 'lstm'"):
        ev.check_params([2, 8], [2, 8], [2, 8], ["cnn"], ["gru"])


def test_matched_sweep_gives_every_model_the_reference_count():
    base = {"dataset": "mitdb", "fs": 90, "width": 32, "epochs": 1}
    configs, target, width = ev.matched_sweep(base, ["cnn", "lstm"], [1, 2, 8], ["lstm", 2], 2)
    assert len(configs) == 12 and width[("lstm", 2)] == 32
    from ecglib import models
    for (f, d), w in width.items():
        assert abs(models.build_model(f, d, w, n_classes=5).n_params - target) / target < 0.2
    m = pd.DataFrame([{"family": "lstm", "depth": 2, "n_params": target, "seed": 0}])
    t = ev.matched_table(m, width)
    assert t.query("family == 'lstm' and depth == 2")["params"].iloc[0] == target and t["params"].isna().sum() == 5


def test_depth_chapter_figures_and_texts_from_constructed_runs():
    runs = table({**SPEC, ("reslstm", 2): good(0.6), ("reslstm", 8): good(0.6)})
    recs = {k: {**record(f, d), "history": [{"epoch": 1, "seconds": 2.0, "grad_norms": record(f, d)["history"][0]["grad_norms"]}]}
            for df in runs.values() for k, f, d in df[["key", "family", "depth"]].itertuples(index=False)}
    swept = {"cnn": [2, 8], "lstm": [2, 8]}
    for fig in (ev.fig_grad_layers(runs, recs, swept), ev.fig_grad_training(runs, recs, swept),
                ev.fig_epoch_time(pd.concat(runs.values()), recs), ev.fig_matched(runs["mitdb"])):
        assert fig is not None
    grads = ev.gradient_table(pd.concat(runs.values()), recs)
    assert ev.fig_grad_decay(grads) is not None
    text = ev.train_loss_text(runs, ["cnn", "lstm"], 2, 8)
    assert re.search(r"- MIT-BIH: plain CNN -?0\.00\d \[.*; LSTM 0\.99\d \[", text)
    assert "one-layer LSTM" in ev.c8_text(grads.assign(depth=grads["depth"].replace(2, 1)), [1, 8])
    _, best = ev.c4(runs, ["cnn"], ["lstm", "reslstm"])
    lit = ev.literature_table(runs, best, 2, 8)
    assert len(lit) == 4 and "depth 8 minus 2: -0.09" in lit["ours (MIT-BIH)"].iloc[0]
    speed = pd.DataFrame([{"family": f, "length": n, "samples_per_s": v / n} for f, v in (("cnn", 4e4), ("lstm", 1e4))
                          for n in (100, 200)])
    assert ev.fig_cost_length(speed, 4) is not None and "4.0x as many samples per second" in ev.cost_text(speed, 4, 32)


def test_overfitting_chapter_figures_tables_and_texts():
    runs = ov.with_gaps(pd.concat(table(SPEC).values()).assign(train_macro_f1=lambda d: d["test_macro_f1"] + 0.1))
    with pytest.raises(ValueError, match="pair_depth 3 must be in conv_depths"):
        ov.check_params(3, [2, 8], [2, 8], {"base": {}, "strong": {}})
    with pytest.raises(ValueError, match="needs a reference"):
        ov.check_params(2, [2, 8], [2, 8], {"base": {}})
    for fig in (ov.fig_gap_depth(runs), ov.fig_gap_params(runs)):
        assert fig is not None and not any(ax.get_legend() for ax in fig.axes)   # one shared legend below
    pair = ["cnn", "lstm"]
    curves = runs[runs["depth"] == 2].assign(train_fraction=lambda d: np.where(d["dataset"] == "mitdb", 0.1, 0.025))
    assert ov.fig_curves(curves, 2) is not None
    assert "Gap with 2.5% minus gap with 10.0%" in ov.c6_text(curves, pair, [0.025, 0.1])
    regimes = {"base": {}, "strong": {"dropout": 0.3}}
    configs, regime_of = ov.regime_sweep({"dataset": "synthetic", "depth": 2}, regimes, pair, [0, 1])
    assert len(configs) == 8 and sorted(set(regime_of.values())) == ["base", "strong"]
    reg = curves.assign(regime=np.where(curves["dataset"] == "mitdb", "base", "strong"), epochs=3)
    assert ov.fig_regimes(reg, regimes, pair) is not None
    assert "ended 4 of 16 runs" in ov.regime_text(reg, regimes, {k: 2 if i < 4 else 3 for i, k in enumerate(reg["key"])})
    t = ov.regime_table(reg, regimes, pair)
    assert list(t["regime"]) == ["strong", "strong"] and (t["pairs"] == 4).all()
    recs = [{"config": {"family": f, "shuffle_labels": sh, "seed": s},
             "history": [{"epoch": e, "train_f1": (0.3 if sh else 0.9) * e / 2} for e in (1, 2)]}
            for f in pair for sh in (False, True) for s in SEEDS]
    memo = ov.memorised(ov.memo_curves(recs))
    assert memo[("lstm", True)][0] == pytest.approx(0.3) and ov.fig_memorisation(ov.memo_curves(recs))
    assert "random** labels: plain CNN 0.300" in ov.memo_text(memo, pair)
    leak = runs[runs["depth"] == 2].assign(split=np.where(runs[runs["depth"] == 2]["dataset"] == "mitdb", "inter", "intra"),
                                           test_acc=0.9)
    assert ov.fig_leakage(leak, pair) is not None and len(ov.leakage_table(leak, 2)) == 3 + 4
    assert ov.paired_text(leak, pair, "split", "test_macro_f1", "intra", "inter", "X").startswith("X (paired by seed):")
    noise = leak.assign(labels=np.where(leak["split"] == "inter", "final", "original"))
    assert ov.fig_label_noise(noise, pair) is not None
    flow = runs.assign(flow=runs["depth"] * -0.1)
    assert ov.fig_gradflow(flow[flow["dataset"] == "mitdb"], ["lstm"], 0.5) is not None


def test_overfitting_figures_survive_runs_without_gaps():
    runs = pd.concat(table(SPEC).values()).assign(train_macro_f1=0.9, gap=math.nan)
    fig = ov.fig_gap_params(runs)
    fig.canvas.draw()
    assert any("no usable run" in t.get_text() for t in fig.axes[1].texts)
    assert ov.fig_gap_depth(runs) is not None
