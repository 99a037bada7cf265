"""The chapters' analysis on small constructed runs tables and records: no training, no data."""
import dataclasses
import math
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ecglib import experiments
from ecglib.evidence import depth as ev

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
                       "key": f"{dataset}-{family}-{depth}-{s}", "n_params": 1000 * depth, "lr": 3e-3}
                for m, v in metrics.items():
                    row[m] = v + rng.normal(0, noise) if v is not None and not (isinstance(v, float) and math.isnan(v)) else math.nan
                rows.append(row)
    df = pd.DataFrame(rows)
    return {d: df[df["dataset"] == d] for d in datasets}


def good(f1, loss=0.5):
    return {"test_score": f1, "val_score": f1, "train_score": f1 + 0.05, "train_loss": loss}


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
    assert v.verdict == "inconclusive" and "no recurrent model trained at any depth" in v.summary
    assert "nan" not in v.summary and "none (no run trained) (recurrent)" in v.summary
    t = ev.sweep_table(pd.concat(runs.values()))
    assert (t[t["family"] == "lstm"]["test score"] == "no finished run").all()
    assert (t[t["family"] == "lstm"]["diverged"] == len(SEEDS)).all()
    assert ev.fig_depth_panels(runs, "test_score", "f1", "t") is not None


def test_c1_supported_when_lstm_fits_worse_and_its_gradients_vanish():
    runs = table(SPEC)
    grads = pd.concat(runs.values())[["dataset", "family", "depth", "seed", "key"]].copy()
    grads["layer_init"] = np.where(grads["family"] == "lstm", 4.0, 0.5) + 0.01 * grads["seed"]
    v = ev.c1(runs, grads, 2, 8)
    assert v.verdict == "supported" and "harder to train supported" in v.reason
    grads["layer_init"] = 0.5 + 0.01 * grads["seed"]           # same attenuation in both families
    assert ev.c1(runs, grads, 2, 8).verdict == "refuted"


def test_c1_reads_a_deep_lstm_that_failed_to_train_as_harder_to_train():
    """Failing to train is read before the loss: a deep LSTM that fails in most seeds, while the shallow LSTM and the
    deep CNN trained, is the claim's finding, not a missing value. If the deep CNN failed too, nothing is said."""
    runs = {k: df.assign(converged=True, collapsed=False) for k, df in table(SPEC).items()}
    for df in runs.values():
        df.loc[(df["family"] == "lstm") & (df["depth"] == 8), "collapsed"] = True
    grads = pd.concat(runs.values())[["dataset", "family", "depth", "seed", "key"]].assign(layer_init=0.5)
    v = ev.c1(runs, grads, 2, 8)
    assert ("harder to train supported (the LSTM failed to train in 4 of 4 seeds at depth 8 and 0 of 4 seeds at "
            "depth 2; the CNN in 0 of 4 seeds and 0 of 4 seeds") in v.reason, v.reason
    assert "gradients vanish more refuted" in v.reason     # read at initialisation, from every run
    ln = runs["mitdb"][runs["mitdb"]["family"] == "lstm"].assign(collapsed=False)
    assert ev.c1(runs, grads, 2, 8, layernorm=ln).summary.endswith(
        "With LayerNorm between its layers, the 8-layer LSTM trained in 4 of 4 seeds (MIT-BIH).")
    for df in runs.values():
        df.loc[(df["family"] == "cnn") & (df["depth"] == 8), "converged"] = False
    assert "harder to train inconclusive" in ev.c1(runs, grads, 2, 8).reason


def test_c1_counts_seeds_that_failed_when_some_deep_lstms_trained():
    """One deep LSTM in five trained: its loss alone cannot give a CI, but four failed seeds against none are a
    share beyond the margin (one seed in five). Two failed seeds of five are not decisive."""
    five = [0, 1, 2, 3, 4]
    runs = {k: df.assign(converged=True, collapsed=False) for k, df in table(SPEC, seeds=five).items()}
    deep_lstm = lambda df, seeds: (df["family"] == "lstm") & (df["depth"] == 8) & df["seed"].isin(seeds)
    for df in runs.values():
        df.loc[deep_lstm(df, [0, 1, 2, 3]), "collapsed"] = True
    grads = pd.concat(runs.values())[["dataset", "family", "depth", "seed", "key"]].assign(layer_init=0.5)
    h, measure = ev.harder_to_train(runs["mitdb"], 2, 8)
    assert (h.verdict, measure) == ("supported", "failures") and h.mean == pytest.approx(0.8), h.reason
    assert "share of seeds failing" in ev.c1(runs, grads, 2, 8).effect
    for df in runs.values():
        df.loc[deep_lstm(df, [2, 3]), "collapsed"] = False
    h, measure = ev.harder_to_train(runs["mitdb"], 2, 8)
    assert measure == "loss" and h.verdict == "supported", h.reason   # the 3 usable deep LSTMs fit worse (SPEC)


def test_c1_says_nothing_from_a_floor_when_the_shallow_lstm_fails_too():
    runs = {k: df.assign(converged=True, collapsed=False) for k, df in table(SPEC).items()}
    for df in runs.values():
        df.loc[df["family"] == "lstm", "collapsed"] = True
    h, _ = ev.harder_to_train(runs["cinc2017"], 2, 8)
    assert h.verdict == "inconclusive" and "fails at depth 2 already" in h.reason


def record(family="lstm", depth=2, per_layer=1.0, per_step=0.01, steps=200):
    """A stored run whose grad_states matrix loses `per_layer` orders per layer (down the stack) and `per_step`
    orders per input sample (back in time), both from the readout at the top right."""
    config = dataclasses.asdict(experiments.RunConfig(family=family, depth=depth))
    t = np.arange(0, steps, 4)
    t[-1] = steps - 1
    m = 10.0 ** -(per_layer * (depth - 1 - np.arange(depth))[:, None] + per_step * (steps - 1 - t)[None, :])
    probe = {"t": t.tolist(), "length": steps, "init": m.tolist(), "final": (m ** 0.5).tolist()}
    return {"config": config, "classes": list("NSVFQ"), "history": [{"grad_norms": {}}], "probes": {"grad_states": probe}}


def test_both_edges_of_one_matrix_and_c8_from_them():
    e = ev.edges(record("lstm", 8, per_layer=0.5, per_step=0.02))
    # the 10% ends of a 50-column row average a few columns: the far end's mean is dominated by its largest value
    assert e["depth"] == pytest.approx(3.5) and e["per_layer"] == pytest.approx(0.5)
    assert 3 < e["time"] < 3.98 and not e["time_censored"] and e["steps"] == 200
    assert ev.edges(record("lstm", 8, per_layer=0.5, per_step=0.02), "final")["depth"] == pytest.approx(1.75)
    runs = pd.DataFrame([{"dataset": "cinc2017", "family": "lstm", "depth": 8, "seed": s, "key": f"k{s}",
                          "status": "ok", "converged": True, "collapsed": False} for s in range(3)])
    recs = {f"k{s}": record("lstm", 8, per_layer=0.5 + 0.01 * s, per_step=0.02) for s in range(3)}
    grads = ev.gradient_table(runs, recs)
    assert list(grads["layer_init"]) == pytest.approx([3.5, 3.57, 3.64])
    assert ev.c8(grads, 8, runs).verdict == "refuted"            # 3.5 across layers ~ 3.7 across time: within 1
    recs = {f"k{s}": record("lstm", 8, per_layer=0.1 + 0.01 * s, per_step=0.02) for s in range(3)}
    assert ev.c8(ev.gradient_table(runs, recs), 8, runs).verdict == "supported"
    # the gradient at initialisation is measured before training: a run that then failed to converge still counts
    assert ev.c8(ev.gradient_table(runs, recs), 8, runs.assign(converged=[True, True, False])).verdict == "supported"
    # a run without the measurement is not read: too few runs left to decide
    assert ev.c8(ev.gradient_table(runs, recs).iloc[:2], 8, runs).verdict == "inconclusive"


def test_grad_figures_survive_zeros_and_missing_families():
    runs = {"mitdb": pd.DataFrame([{"family": "lstm", "depth": 1, "key": "a"}, {"family": "lstm", "depth": 8, "key": "b"}])}
    recs = {"a": record("lstm", 1), "b": record("lstm", 8, per_step=5.0)}   # underflows to exact zeros in time
    assert ev.fig_grad_time(runs, recs, {"mitdb": 90}, {"lstm": [1, 8], "gru": [1]}) is not None
    assert ev.fig_grad_layers(runs, recs, {"lstm": [1, 8], "gru": [1]}) is not None


def lag_runs(acc: dict, seeds=(0, 1, 2), collapsed=()):
    """Lag-task runs: acc maps (depth, lag) -> test accuracy at lr 0.003; lr 0.01 is always worse on validation."""
    rows = []
    for (depth, lag), a in acc.items():
        for lr, worse in ((0.003, 0.0), (0.01, 0.2)):
            for s in seeds:
                bad = (depth, lag) in collapsed
                rows.append({"family": "lstm", "depth": depth, "lag": lag, "lr": lr, "seed": s, "key": f"{depth}-{lag}-{lr}-{s}",
                             "status": "ok", "converged": True, "collapsed": bad, "test_acc": a - worse + 0.001 * s,
                             "val_score": a - worse + 0.001 * s})
    return pd.DataFrame(rows)


def test_c8_lag_task_reads_drops_and_failures():
    points = {(1, 2): 0.99, (1, 50): 0.6, (2, 2): 0.98, (8, 2): 0.97}
    j = ev.c8_lag(lag_runs(points), [2, 50], [1, 2, 8], 2)
    assert j.verdict == "supported" and j.mean == pytest.approx(0.39 - 0.02)
    assert ev.c8_lag(lag_runs({**points, (1, 50): 0.97}), [2, 50], [1, 2, 8], 2).verdict == "refuted"
    # the long lag failed to train while the deep stack trained: a finding for the claim, not a missing value
    assert ev.c8_lag(lag_runs(points, collapsed=[(1, 50)]), [2, 50], [1, 2, 8], 2).verdict == "supported"
    assert ev.c8_lag(lag_runs(points, collapsed=[(8, 2)]), [2, 50], [1, 2, 8], 2).verdict == "refuted"
    t = ev.lag_table(lag_runs(points, collapsed=[(1, 50)]))
    assert set(t["lr"]) == {0.003} and t.query("lag == 50")["test accuracy"].iloc[0].startswith("failed to train")
    assert ev.fig_lag(lag_runs(points), 2) is not None


def test_norm_ablation_sweep_and_table():
    configs = ev.norm_sweep({"dataset": "mitdb", "epochs": 2}, [1, 8], [1, 8], 2)
    assert {(c.family, c.norm) for c in configs} == {("cnn", "none"), ("lstm", "layer")} and len(configs) == 8
    spec = {("cnn", 2): good(0.8), ("cnn", 8): good(0.85), ("lstm", 2): good(0.6), ("lstm", 8): good(0.5, loss=1.5)}
    own = table(spec, datasets=("mitdb",))["mitdb"].assign(norm=None)
    ablated = table({("cnn", 2): good(0.8), ("cnn", 8): good(0.3, loss=1.2)}, datasets=("mitdb",))["mitdb"].assign(norm="none")
    own = own.assign(converged=True, collapsed=False)
    own.loc[(own["family"] == "lstm") & (own["depth"] == 8) & (own["seed"] > 0), "collapsed"] = True
    ablated = ablated.assign(converged=True, collapsed=False)
    t = ev.norm_table(pd.concat([own, ablated]), 2, 8)
    assert list(t["normalisation"]) == ["the family's own", "no batch norm", "the family's own"]
    assert t.iloc[1]["training loss, 8 - 2"].startswith("0.7")
    assert list(t["trained at depth 8"]) == ["4 of 4 seeds", "4 of 4 seeds", "1 of 4 seeds"]
    assert float(t.iloc[2]["training loss, depth 8"].split()[0]) == pytest.approx(1.5, abs=0.02)  # its usable run
    text = ev.norm_text(pd.concat([own, ablated]), 8)
    assert text == ("At depth 8, the LSTM trained in 1 of 4 seeds with its own normalisation; the plain CNN trained "
                    "in 4 of 4 seeds with its own normalisation and in 4 of 4 seeds with no batch norm."), text


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
    recs = {k: {**record(f, d), "history": [{"epoch": 1, "seconds": 2.0, "grad_norms": {}}]}
            for df in runs.values() for k, f, d in df[["key", "family", "depth"]].itertuples(index=False)}
    swept = {"cnn": [2, 8], "lstm": [2, 8]}
    for fig in (ev.fig_grad_layers(runs, recs, swept), ev.fig_grad_time(runs, recs, {"mitdb": 90, "cinc2017": 50}, swept),
                ev.fig_epoch_time(pd.concat(runs.values()), recs), ev.fig_matched(runs["mitdb"])):
        assert fig is not None
    grads = ev.gradient_table(pd.concat(runs.values()), recs)
    assert ev.fig_grad_decay(grads) is not None
    text = ev.train_loss_text(runs, ["cnn", "lstm"], 2, 8)
    assert re.search(r"- MIT-BIH: plain CNN -?0\.00\d \[.*; LSTM 0\.99\d \[", text)
    assert "in the same 8-layer LSTM" in ev.c8_text(grads, 8) and "per layer" in ev.c8_text(grads, 8)
    _, best = ev.c4(runs, ["cnn"], ["lstm", "reslstm"])
    lit = ev.literature_table(runs, best, 2, 8)
    assert len(lit) == 4 and "depth 8 minus 2: -0.09" in lit["ours (MIT-BIH)"].iloc[0]
    speed = pd.DataFrame([{"family": f, "length": n, "samples_per_s": v / n} for f, v in (("cnn", 4e4), ("lstm", 1e4))
                          for n in (100, 200)])
    assert ev.fig_cost_length(speed, 4) is not None and "4.0x as many samples per second" in ev.cost_text(speed, 4, 32)
