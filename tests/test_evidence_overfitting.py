"""The overfitting chapter's analysis on constructed runs tables: no training, no data."""
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ecglib.evidence import overfitting as ov
from ecglib.protocol import is_usable

matplotlib.use("Agg")
SEEDS = [0, 1, 2, 3]
PAIR = ["cnn", "lstm"]


def runs(cells, by=("family", "depth"), seeds=SEEDS, **fixed):
    """A usable runs table: cells maps a tuple of `by` values -> (train, seen, test) score; seeds add 0.002 * s."""
    rows = []
    for key, (train, seen, test) in cells.items():
        for s in seeds:
            e = 0.002 * s
            rows.append({**dict(zip(by, key)), "seed": s, "status": "ok", "converged": True, "collapsed": False,
                         "key": "-".join(map(str, key)) + f"-{s}", "n_params": 1000, "dataset": "mitdb",
                         "train_score": train + e, "seen_score": seen, "test_score": test - e, "val_score": test,
                         **fixed})
    return ov.with_gaps(pd.DataFrame(rows))


def test_gaps_split_into_overfitting_and_patient_shift():
    g = runs({("cnn", 2): (0.9, 0.7, 0.4)}, seeds=[0])
    assert g["overfit"].iloc[0] == pytest.approx(0.2) and g["shift"].iloc[0] == pytest.approx(0.3)
    assert g["gap"].iloc[0] == pytest.approx(g["overfit"].iloc[0] + g["shift"].iloc[0])
    old = g.drop(columns=["seen_score", "overfit", "shift"]).pipe(ov.with_gaps)   # a record before seen_holdout
    assert old["overfit"].isna().all() and old["gap"].notna().all()


def test_c2_is_the_depth_by_family_interaction():
    # Both families overfit more when deep, by the same amount: no interaction, whatever the main effect of depth.
    same = runs({("cnn", 2): (0.8, 0.7, 0.5), ("cnn", 8): (0.9, 0.6, 0.5),
                 ("lstm", 2): (0.8, 0.7, 0.5), ("lstm", 8): (0.9, 0.6, 0.5)})
    e = ov.c2_effects(same, 2, 8)
    assert e["growth"][0] == pytest.approx(0.2) and e["interaction"][0] == pytest.approx(0.0, abs=1e-9)
    assert e["judgement"].verdict == "refuted"
    more = runs({("cnn", 2): (0.8, 0.7, 0.5), ("cnn", 8): (0.8, 0.7, 0.5),
                 ("lstm", 2): (0.8, 0.7, 0.5), ("lstm", 8): (0.95, 0.6, 0.5)})
    e = ov.c2_effects(more, 2, 8)
    assert e["judgement"].verdict == "supported" and e["interaction"][0] == pytest.approx(0.25, abs=0.01)
    assert list(ov.c2_table(e)["pairs"]) == [4, 4, 4]
    v = ov.c2(e, {("lstm", True): (0.3, 0.2, 0.4)}, PAIR, [more])
    assert v.claim == "C2" and "grew by" in v.summary and v.figure == "fig-overfitting-c2"
    assert ov.fig_c2(more, PAIR, [2, 8]) is not None


def test_collapsed_runs_have_no_gap_and_cannot_refute_c2():
    g = runs({("cnn", 2): (0.8, 0.7, 0.5), ("cnn", 8): (0.8, 0.7, 0.5),
              ("lstm", 2): (0.8, 0.7, 0.5), ("lstm", 8): (0.8, 0.7, 0.5)})
    g = ov.with_gaps(g.assign(collapsed=g["family"].eq("lstm")))
    assert g.loc[g["family"] == "lstm", "overfit"].isna().all()
    e = ov.c2_effects(g, 2, 8)
    assert e["judgement"].verdict == "inconclusive" and "collapsed" in e["judgement"].reason
    n = g["seed"].nunique()
    assert (f"(failed to train: LSTM: {n} of {n} seeds at depth 8, {n} of {n} seeds at depth 2; plain CNN: 0 of {n} "
            f"seeds at depth 8, 0 of {n} seeds at depth 2)") in e["judgement"].reason, e["judgement"].reason
    assert is_usable(g.assign(collapsed=False, converged=[True, False] * (len(g) // 2))).sum() == len(g) // 2


def test_c5_reads_the_starved_lstm_against_its_own_seed():
    cells = {("lstm", 8, 1.0): (0.9, 0.7, 0.5), ("lstm", 8, 0.0): (0.8, 0.75, 0.5),     # starved: gap 0.05 < 0.2
             ("cnn", 8, 1.0): (0.9, 0.7, 0.5), ("cnn", 8, 0.0): (0.9, 0.7, 0.5)}
    r = runs(cells, by=("family", "depth", "early_lr_scale"))
    v = ov.c5(r, 0.0, 8, 4)
    assert v.verdict == "refuted" and v.value == pytest.approx(-0.15, abs=0.01) and "first 4 of the 8" in v.summary
    wider = runs({**cells, ("lstm", 8, 0.0): (0.95, 0.6, 0.5)}, by=("family", "depth", "early_lr_scale"))
    assert ov.c5(wider, 0.0, 8, 4).verdict == "supported"
    failing = ov.with_gaps(r.assign(converged=True, collapsed=(r["family"] == "lstm") & (r["early_lr_scale"] == 0.0)))
    v = ov.c5(failing, 0.0, 8, 4)
    assert v.verdict == "refuted" and "starved, the LSTM failed to train in 4 of 4 seeds; trained normally, in 0 of 4" \
        in v.reason and "cannot overfit" in v.reason and v.value == pytest.approx(1.0), v.reason
    assert "share of seeds" in v.effect
    failing.loc[failing["seed"].isin([0, 1]), "collapsed"] = False     # 2 of 4 starved seeds fail: not decisive
    assert ov.c5(ov.with_gaps(failing), 0.0, 8, 4).verdict == "inconclusive"
    t = ov.starve_table(r, PAIR, [0.0], [])
    assert len(t) == 2 and (t["pairs"] == 4).all()
    assert ov.fig_starve(r, PAIR, [0.0]) is not None


def test_c6_width_judged_at_each_patient_count_and_combined():
    cells = {}
    for f in PAIR:
        for n in (2, 16):
            for w in (8, 64):
                over = 0.3 if (w == 64 and n == 2) else 0.1    # width overfits only with little variety
                cells[(f, n, w)] = (0.9, 0.9 - over, 0.5)
    r = runs(cells, by=("family", "n_patients", "width"), train_beats=2000)
    v = ov.c6(r, [8, 64], [2, 16])
    assert v.verdict == "depends" and "2 patients: 0.200" in v.summary and "2000 training beats" in v.summary
    assert len(ov.variety_table(r, PAIR)) == 8 and ov.fig_variety(r, PAIR, [8, 64]) is not None
    # only many patients decide (few: width makes no difference beyond noise, read as inconclusive): that setting
    # is the headline, not the fewest patients'
    cells.update({(f, 2, w): (0.9, 0.9 - (0.1 if w == 8 else np.nan), 0.5) for f in PAIR for w in (8, 64)})
    cells.update({(f, 16, 64): (0.9, 0.6, 0.5) for f in PAIR})
    v = ov.c6(runs(cells, by=("family", "n_patients", "width"), train_beats=2000), [8, 64], [2, 16])
    assert v.verdict == "supported" and v.value == pytest.approx(0.2, abs=0.02) and "at 16 training patients" in v.effect


def test_c9_from_the_overfitting_gap():
    regimes = {"base": {}, "all three": {"dropout": 0.3}}
    reg = runs({("lstm", "base"): (0.95, 0.7, 0.6), ("lstm", "all three"): (0.8, 0.75, 0.6),
                ("cnn", "base"): (0.9, 0.7, 0.6), ("cnn", "all three"): (0.9, 0.7, 0.6)}, by=("family", "regime"))
    assert ov.c9(reg, regimes).verdict == "supported"
    reg.loc[reg["regime"] == "all three", "test_score"] -= 0.2            # narrower gap, but at a price
    v = ov.c9(reg, regimes)
    assert v.verdict == "refuted" and "test score kept refuted" in v.reason
    t = ov.regime_table(reg, regimes, PAIR)
    assert list(t["regime"]) == ["all three"] * 2 and (t["pairs"] == 4).all()
    assert ov.fig_regimes(reg, regimes, PAIR) is not None


def test_sweeps_start_from_each_familys_selection():
    sel = {(f, d): type("S", (), {"config": {"dataset": "mitdb", "family": f, "depth": d, "seen_holdout": 0.2,
                                             "lr": 1e-3 if f == "cnn" else 1e-2}})() for f in PAIR for d in (2, 8)}
    starve = ov.starve_sweep(sel, PAIR, 8, 4, [0.0], [0, 1])
    assert {(c.family, c.lr, c.early_layers, c.early_lr_scale) for c in starve} == {("cnn", 1e-3, 4, 0.0),
                                                                                  ("lstm", 1e-2, 4, 0.0)}
    variety = ov.variety_sweep(sel, PAIR, 2, 500, [8, 64], [2, 4], [0])
    assert len(variety) == 8 and {c.train_beats for c in variety} == {500} and {c.train_fraction for c in variety} == {1.0}
    configs, regime_of = ov.regime_sweep({f: sel[(f, 2)].config for f in PAIR}, {"base": {}, "x": {"dropout": 0.3}},
                                         [0, 1])
    assert len(configs) == 8 and sorted(set(regime_of.values())) == ["base", "x"]


def test_chapter_parameters_fail_before_training():
    good = dict(pair=PAIR, depths=[2, 8], pair_depth=2, regimes={"a": {}, "b": {}}, starve_scales=[0.0],
                widths=[8, 64], patients=[2])
    ov.check_params(**good)
    ov.check_params(**good, variety_families=["cnn"])   # the LSTM beside C6 is optional
    for bad, match in ((dict(depths=[8, 2]), "shallow < deep"), (dict(pair_depth=4), "contain pair_depth 4"),
                       (dict(regimes={"a": {}}), "needs a reference"), (dict(starve_scales=[1.0]), "in \\[0, 1\\)"),
                       (dict(widths=[8]), "widths needs two"),
                       (dict(variety_families=["lstm"]), "must include cnn")):
        with pytest.raises(ValueError, match=match):
            ov.check_params(**{**good, **bad})


def test_depth_sweep_figures_survive_runs_without_gaps():
    r = runs({("cnn", 2): (0.9, 0.7, 0.5), ("lstm", 2): (0.9, 0.7, 0.5)})
    for fig in (ov.fig_gap_depth(r), ov.fig_gap_params(r)):
        assert fig is not None and not any(ax.get_legend() for ax in fig.axes)   # one shared legend below
    fig = ov.fig_gap_params(r.assign(gap=math.nan))
    fig.canvas.draw()
    assert any("no usable run" in t.get_text() for t in fig.axes[1].texts)


def test_memorisation_leakage_and_label_noise_texts():
    recs = [{"config": {"family": f, "shuffle_labels": sh, "seed": s},
             "history": [{"epoch": e, "train_f1": (0.3 if sh else 0.9) * e / 2} for e in (1, 2)]}
            for f in PAIR for sh in (False, True) for s in SEEDS]
    memo = ov.memorised(ov.memo_curves(recs))
    assert memo[("lstm", True)][0] == pytest.approx(0.3) and ov.fig_memorisation(ov.memo_curves(recs))
    assert "random** labels: plain CNN 0.300" in ov.memo_text(memo, PAIR)
    leak = runs({(f, sp): (0.9, 0.7, 0.5 + 0.2 * (sp == "intra")) for f in PAIR for sp in ("inter", "intra")},
                by=("family", "split"), test_acc=0.9)
    assert ov.fig_leakage(leak, PAIR) is not None and len(ov.leakage_table(leak, 2)) == 3 + 4
    assert ov.paired_text(leak, PAIR, "split", "test_score", "intra", "inter", "X").startswith("X (paired by seed):")
    noise = leak.assign(labels=np.where(leak["split"] == "inter", "final", "original"))
    assert ov.fig_label_noise(noise, PAIR) is not None


def test_no_usable_run_gives_inconclusive_verdicts_not_errors():
    """Smoke-sized runs stop before they converge: every verdict must then read inconclusive, never raise."""
    def unusable(cells, by, **fixed):
        return ov.with_gaps(runs(cells, by=by, **fixed).assign(converged=False))
    c2 = unusable({(f, d): (0.9, 0.7, 0.5) for f in PAIR for d in (1, 2)}, ("family", "depth"))
    assert ov.c2_effects(c2, 1, 2)["judgement"].verdict == "inconclusive" and ov.fig_c2(c2, PAIR, [1, 2])
    st = unusable({(f, 2, s): (0.9, 0.7, 0.5) for f in PAIR for s in (0.0, 1.0)}, ("family", "depth", "early_lr_scale"))
    assert ov.c5(st, 0.0, 2, 1).verdict == "inconclusive" and ov.fig_starve(st, PAIR, [0.0])
    assert len(ov.starve_table(st, PAIR, [0.0], []))
    va = unusable({(f, 2, w): (0.9, 0.7, 0.5) for f in PAIR for w in (4, 8)}, ("family", "n_patients", "width"),
                  train_beats=300)
    assert ov.c6(va, [4, 8], [2]).verdict == "inconclusive" and ov.fig_variety(va, PAIR, [4, 8])
    assert len(ov.variety_table(va, PAIR)) == 4


def test_flow_ratio_reads_gradients_per_weight_from_a_stored_record():
    import dataclasses
    from ecglib import experiments
    from ecglib.evidence import overfitting as ov
    config = dataclasses.asdict(experiments.RunConfig(family="lstm", depth=3, width=8))
    sizes = ov.layer_sizes(config, n_classes=5)
    # every layer's norm is sqrt(its size): one unit per weight everywhere, so nothing decays (log10 ratio 0)
    record = {"config": config, "classes": list("NSVFQ"),
              "history": [{"grad_norms": {f"layers.{i}": n ** 0.5 for i, n in enumerate(sizes)}}] * 2}
    assert sizes[0] < sizes[1] and abs(ov.flow_ratio(record)) < 1e-9


def test_describe_names_the_control_seeds_and_the_noise_depth():
    own = {"fs": 90, "train_fraction": 0.1, "seen_holdout": 0.2, "epochs": 40, "patience": 5, "width": 32}
    cinc = {"fs": 50, "crop_s": 10.0, "train_fraction": 0.3}
    text = ov.describe("default", 5, own, cinc, [2, 4], 2, control_seeds=3, noise_depth=1)
    assert "5 seed(s) per configuration (3 in experiments 7 and 8" in text and "Label noise: depth 1," in text
    plain = ov.describe("default", 5, own, cinc, [2, 4], 2)
    assert "experiments 7 and 8" not in plain and "Label noise: depth 2," in plain
