"""The hybrids chapter's analysis on constructed runs and records: no training, no data."""
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ecglib.evidence import hybrids as hy

matplotlib.use("Agg")
SEEDS = [0, 1, 2, 3]
FAMILIES = hy.contenders(lstm_depth=2, pool=16, cnn_depth=8)
NAMES = hy.names(FAMILIES, shallow_cnn_depth=4)


def store(sps: dict, f1: dict, drop: dict, crops=(5, 20), noise=0.003):
    """runs table + records: per family its training samples/s, test macro-F1 and macro-F1 drop under shuffling
    of 5 s segments (the shallow CNN is 'shallow')."""
    rng = np.random.default_rng(0)
    rows, records = [], {}
    specs = {**FAMILIES, "shallow": dict(family="rescnn", depth=4)}
    for who, spec in specs.items():
        for crop in crops if who != "shallow" else crops[-1:]:
            for s in SEEDS:
                key = f"{who}-{crop}-{s}"
                score = f1[who] + rng.normal(0, noise)
                rows.append({"key": key, "family": spec["family"], "depth": spec["depth"],
                             "pool": spec.get("pool", 8), "crop_s": crop, "seed": s, "status": "ok",
                             "test_macro_f1": score, "val_macro_f1": score, "test_score": score,
                             "val_score": score})
                records[key] = {"classes": ["N", "A", "O", "~"], "train": {"n": 100},
                                "test": {"f1": [score, score, score, None]},
                                "history": [{"seconds": 1000 / sps[who], "samples_per_s": sps[who] * (1 + rng.normal(0, 0.01))}],
                                "probes": {"permute": [{"seconds": 1.0, "macro_f1": score},
                                                       {"seconds": 5.0, "macro_f1": score - drop[who]}]}}
    return hy.with_measures(pd.DataFrame(rows), records), records


def verdict_of(sps, f1, drop):
    runs, records = store(sps, f1, drop)
    length = runs[runs["model"] != NAMES["shallow"]]
    train_speed = hy.training_speedup(length, NAMES)
    order = hy.permutation_drops(runs, records).query("crop_s == 20")
    o = hy.order_effects(order, runs, NAMES)
    return hy.c12(runs, train_speed, o, hy.best_models(runs), NAMES, 16), train_speed, o


GOOD = dict(sps={"lstm": 100, "convlstm": 900, "rescnn": 1000, "shallow": 1500},
            f1={"lstm": 0.5, "convlstm": 0.7, "rescnn": 0.72, "shallow": 0.7},
            drop={"lstm": 0.0, "convlstm": 0.1, "rescnn": 0.0, "shallow": 0.0})


def test_c12_supported_when_fast_order_sensitive_and_accurate():
    v, train_speed, o = verdict_of(**GOOD)
    assert v.verdict == "supported", v.reason
    assert v.value == pytest.approx(math.log(9), abs=0.05) and v.margin == pytest.approx(0.18)
    at = train_speed.query("crop_s == 20").set_index("family")["mean"]
    assert at["convlstm"] == pytest.approx(9, rel=0.05) and at["rescnn"] == pytest.approx(10, rel=0.05)
    assert o["hyb_vs_cnn"]["mean"] == pytest.approx(0.1, abs=0.01) and o["big"] == 5.0
    assert "9.0" in v.summary and len(v.runs) == 28


@pytest.mark.parametrize("change, part", [
    ({"sps": {**GOOD["sps"], "convlstm": 150}}, "closer to the CNN's speed refuted"),   # faster, but nearer the LSTM
    ({"drop": {**GOOD["drop"], "convlstm": 0.0}}, "order refuted"),                      # as order-blind as the CNN
    ({"f1": {**GOOD["f1"], "convlstm": 0.5}}, "accuracy refuted"),                       # no better than the LSTM
])
def test_c12_one_failing_part_refutes_the_claim(change, part):
    v, _, _ = verdict_of(**{**GOOD, **change})
    assert v.verdict == "refuted" and part in v.reason


def test_c12_reads_accuracy_from_usable_runs_and_a_failed_lstm_is_a_finding():
    """An LSTM that collapsed at every crop is never averaged in as a score: the hybrid that trained beats it as a
    finding; a collapsed hybrid run is not the best model, and speed still reads every finished run."""
    runs, records = store(**GOOD)
    runs = runs.assign(converged=True, collapsed=runs["family"].eq("lstm"))
    length = runs[runs["model"] != NAMES["shallow"]]
    o = hy.order_effects(hy.permutation_drops(runs, records).query("crop_s == 20"), runs, NAMES)
    best = hy.best_models(runs)
    assert "lstm" not in best and best["convlstm"]["crop_s"] in (5, 20)
    v = hy.c12(runs, hy.training_speedup(length, NAMES), o, best, NAMES, 16)
    assert v.verdict == "supported" and "the LSTM failed to train at every crop" in v.reason, v.reason
    assert "LSTM failed to train at every crop, the best hybrid" in v.summary and "nan" not in v.summary
    assert NAMES["lstm"] not in o["drops"].index and NAMES["convlstm"] in o["drops"].index
    # one collapsed hybrid seed drops out of the pair, the others still decide
    runs.loc[(runs["family"] == "convlstm") & (runs["seed"] == 0), "collapsed"] = True
    assert hy.best_models(runs)["convlstm"]["val_score"] == pytest.approx(0.7, abs=0.01)
    # nothing usable at all (a smoke-sized book): no best model, and the published table still renders
    runs["converged"] = False
    assert hy.best_models(runs) == {} and hy.best_runs(runs, {}).empty
    assert len(hy.published_table(runs, {}, 50)) == 2
    v = hy.c12(runs, hy.training_speedup(length, NAMES), o, {}, NAMES, 16)
    assert v.verdict == "inconclusive" and "accuracy inconclusive" in v.reason


def test_sweeps_share_configs_and_check_the_pareto_crop():
    base = dict(dataset="cinc2017", fs=50, width=8, epochs=1)
    sw = hy.sweeps(base, FAMILIES, [5, 10], 10, [4, 16], [1, 2], 4, 2)
    assert len(sw["all"]) == len(set(c.key for c in sw["all"])) < len(sw["length"] + sw["front"] + sw["shallow"])
    with pytest.raises(ValueError, match="crop_s=7 must be one of"):
        hy.sweeps(base, FAMILIES, [5, 10], 7, [4], [1], 4, 2)


def test_whole_records_are_their_own_sweep_and_read_against_the_longest_crop():
    base = dict(dataset="cinc2017", fs=50, width=8, epochs=1)
    sw = hy.sweeps(base, FAMILIES, [5, 20], 20, [4], [1], 4, 2, whole_s=61)
    assert {(c.family, c.crop_s) for c in sw["whole"]} == {("convlstm", 61), ("rescnn", 61)} and len(sw["whole"]) == 4
    assert not set(sw["whole"]) & set(sw["all"])          # the verdicts' longest crop stays the length sweep's
    assert hy.sweeps(base, FAMILIES, [5, 20], 20, [4], [1], 4, 2)["whole"] == []
    assert len(hy.sweeps(base, FAMILIES, [5, 20], 20, [4], [1], 4, 3, whole_s=61, whole_seeds=1)["whole"]) == 2
    runs, _ = store(**GOOD)
    length = runs[runs["model"] != NAMES["shallow"]].assign(converged=True, collapsed=False)
    at20 = length[(length["crop_s"] == 20) & length["family"].isin(["convlstm", "rescnn"])]
    gain = {"convlstm": 0.05, "rescnn": 0.0}
    whole = at20.assign(crop_s=61, key=at20["key"] + "-whole", test_score=at20["test_score"] + at20["family"].map(gain),
                        converged=True, collapsed=False)
    whole.loc[(whole["family"] == "rescnn") & (whole["seed"] == 0), "collapsed"] = True   # one CNN seed fails
    t = hy.whole_table(length, whole).set_index("model")
    assert t.loc[NAMES["convlstm"], "mean"] == pytest.approx(0.05, abs=1e-9)
    assert t.loc[NAMES["convlstm"], "seeds"] == len(SEEDS) and t.loc[NAMES["rescnn"], "seeds"] == len(SEEDS) - 1
    text = hy.whole_text(t.reset_index(), whole, 61, 20)
    assert f"Failed to train: {NAMES['rescnn']} 1 of {len(SEEDS)} seeds" in text
    assert "whole-record run" in hy.whole_text(None, None, None, 20)


def test_only_the_longest_crop_carries_the_order_probe():
    """The shorter crops stay probe-free, so their configs are the baselines chapter's (trained once)."""
    base = dict(dataset="cinc2017", fs=50, width=8, epochs=1)
    sw = hy.sweeps(base, FAMILIES, [5, 10, 20], 10, [4, 16], [1, 2], 4, 2, control_s=5, cnn_width=12,
                   permute_s=[1, 2])
    for c in sw["all"]:
        assert (c.probes == ("permute",) or c.probes == ["permute"]) == (c.crop_s == 20), c
        assert not c.probes or list(c.permute_s) == [1, 2]
    assert {c.crop_s for c in sw["shallow"] + sw["control"] + sw["matched"]} == {20}
    plain = hy.sweeps(base, FAMILIES, [5, 10, 20], 10, [4], [1], 4, 1)
    assert all(not c.probes for c in plain["all"])


def test_speed_tables_and_figures():
    speed = pd.DataFrame([{"repeat": r, "seconds": s, "model": m, "samples_per_s": v * (1 + 0.01 * r)}
                          for r in range(3) for s in (5, 10) for m, v in ((NAMES["lstm"], 10.0),
                                                                          (NAMES["convlstm"], 40.0),
                                                                          (NAMES["rescnn"], 80.0))])
    s = hy.speedups(speed, NAMES["lstm"]).set_index("model")
    assert s.loc[NAMES["convlstm"], "mean"].tolist() == pytest.approx([4, 4], rel=1e-6)
    assert "4.00" in hy.speedup_text(speed, NAMES, 16, 50, 3)
    assert list(hy.speedup_table(speed, NAMES["lstm"]).columns) == ["model", "5 s", "10 s"]
    palette, pools = hy.palettes(NAMES, [4, 16])
    assert hy.fig_throughput(speed, palette, 50, 32)
    runs, records = store(**GOOD)
    assert hy.fig_length(runs[runs["model"] != NAMES["shallow"]], palette)
    p = hy.pareto(runs, 20)
    assert p["front"].iloc[0] and hy.fig_pareto(p, pools, 20) and len(hy.pareto_table(p)) == 4
    order = hy.permutation_drops(runs, records).query("crop_s == 20")
    rf = {NAMES["rescnn"]: 100, NAMES["shallow"]: 25, NAMES["convlstm"]: 20}
    assert hy.fig_order(order, palette, rf, NAMES, 50)
    assert "within ±0.02 at every scale" in hy.invariance(order, NAMES["shallow"], 25, 50)
    assert len(hy.published_table(runs, hy.best_models(runs), 50)) == 5


def with_controls(f1_loss: dict, matched_f1: float):
    """GOOD's store plus, at 20 s, the shuffled-segment controls (each family loses f1_loss[family] when trained on
    shuffled segments) and a CNN at matched compute scoring matched_f1."""
    runs, records = store(**GOOD)
    names = hy.names(FAMILIES, 4, cnn_width=24, control_s=5)
    extra = []
    for s in SEEDS:
        at = runs[(runs["crop_s"] == 20) & (runs["seed"] == s)].set_index("family")
        for f in ("convlstm", "rescnn"):
            r = at.loc[f] if at.loc[f].ndim == 1 else at.loc[f].iloc[0]
            extra.append({**r.to_dict(), "family": f, "model": names[f"{f}-shuffled"], "key": f"{f}-shuffled-{s}",
                          "test_score": r["test_score"] - f1_loss[f]})
        extra.append({**at.loc["rescnn"].iloc[0].to_dict(), "family": "rescnn", "model": names["matched"],
                      "key": f"matched-{s}", "test_score": matched_f1 + 0.001 * s})
    return pd.concat([runs, pd.DataFrame(extra)], ignore_index=True), records, names


def test_c12_controls_shuffled_training_and_matched_compute():
    runs, records, names = with_controls({"convlstm": 0.1, "rescnn": 0.0}, matched_f1=0.69)
    control, matched = hy.control_effect(runs, names), hy.matched_effect(runs, names)
    assert control["mean"] == pytest.approx(0.1, abs=0.01) and control["n"] == len(SEEDS)
    assert matched["mean"] == pytest.approx(0.7 - 0.69 - 0.0015, abs=0.01)
    base = runs[~runs["model"].str.contains("shuffled|matched")]
    length = base[base["model"] != NAMES["shallow"]]
    o = hy.order_effects(hy.permutation_drops(base, records).query("crop_s == 20"), base, NAMES)
    best = hy.best_models(runs)
    assert "matched" not in best["rescnn"]["model"] and "shuffled" not in best["convlstm"]["model"]
    v = hy.c12(base, hy.training_speedup(length, NAMES), o, best, names, 16, control, matched)
    assert v.verdict == "supported", v.reason
    # order that does not pay (the CNN loses as much from shuffled training) refutes the order part
    runs, _, names = with_controls({"convlstm": 0.0, "rescnn": 0.0}, matched_f1=0.69)
    v = hy.c12(base, hy.training_speedup(length, NAMES), o, best, names, 16, hy.control_effect(runs, names), matched)
    assert v.verdict == "refuted" and "order pays refuted" in v.reason
    # a hybrid clearly worse than the CNN at matched compute refutes the accuracy part
    runs, _, names = with_controls({"convlstm": 0.1, "rescnn": 0.0}, matched_f1=0.8)
    v = hy.c12(base, hy.training_speedup(length, NAMES), o, best, names, 16, control, hy.matched_effect(runs, names))
    assert v.verdict == "refuted" and "matched compute refuted" in v.reason
    assert "hybrid minus the residual CNN at matched compute" in v.summary


def test_a_matched_compute_gap_that_the_remedy_undoes_does_not_refute():
    """The hybrid clearly worse than the matched CNN under the recipe refutes accuracy, unless under the standard
    remedy it is not clearly worse than even the full-width CNN: then the part is inconclusive."""
    runs, records, names = with_controls({"convlstm": 0.1, "rescnn": 0.0}, matched_f1=0.8)
    base = runs[~runs["model"].str.contains("shuffled|matched")]
    length = base[base["model"] != NAMES["shallow"]]
    o = hy.order_effects(hy.permutation_drops(base, records).query("crop_s == 20"), base, NAMES)
    control, matched = hy.control_effect(runs, names), hy.matched_effect(runs, names)
    remedied = lambda gap: pd.DataFrame([{"key": f"{f}-{s}", "family": f, "seed": s, "status": "ok", "converged": True,
                                          "collapsed": False, "test_score": 0.75 + (gap if f == "convlstm" else 0)
                                          + 0.001 * s} for f in ("convlstm", "rescnn") for s in SEEDS])
    args = (base, hy.training_speedup(length, NAMES), o, hy.best_models(runs), names, 16, control, matched)
    closed = hy.remedy_effect(remedied(-0.005))
    assert closed["diff"]["mean"] == pytest.approx(-0.005) and closed["trained"]["convlstm"] == f"{len(SEEDS)}/{len(SEEDS)}"
    v = hy.c12(*args, remedy=closed)
    assert "matched compute inconclusive" in v.reason and "recipe may have understated the hybrid" in v.reason, v.reason
    assert "with the longer budget, hybrid minus the full-width CNN" in v.summary
    v = hy.c12(*args, remedy=hy.remedy_effect(remedied(-0.2)))           # the remedy does not undo it
    assert v.verdict == "refuted" and "matched compute refuted" in v.reason
    assert "longer training" in hy.remedy_text(closed, "longer training", 10)
    with pytest.raises(ValueError, match="not a standard remedy"):
        hy.remedy_sweeps({}, [0], "more coffee")
    assert hy.remedy_sweeps({}, [0], None) == {}


def test_matched_width_matches_the_hybrids_flops():
    from ecglib.diagnostics import flops_per_sample
    from ecglib.models import build_model
    w = hy.matched_width(FAMILIES, 16, fs=50, crop_s=4)
    flops = lambda spec, width: flops_per_sample(build_model(width=width, n_classes=4, **hy.model_spec(spec)), 200)
    target = flops(FAMILIES["convlstm"], 16)
    # the chosen width is the closest on the log scale: its neighbours are no closer
    gap = lambda width: abs(np.log(flops(FAMILIES["rescnn"], width) / target))
    assert gap(w) <= min(gap(w - 1), gap(w + 1))


def test_flops_count_the_recurrent_layers_by_hand():
    from ecglib.diagnostics import flops_per_sample
    from ecglib.models import build_model
    h, steps, classes = 8, 50, 4
    head = 2 * h * classes
    for family, gates in (("lstm", 4), ("gru", 3), ("rnn", 1)):
        layer1 = 2 * gates * h * (1 + h) * steps
        layer2 = 2 * gates * h * (h + h) * steps
        assert flops_per_sample(build_model(family, 2, h, n_classes=classes), steps) == layer1 + layer2 + head


def test_sampling_rate_sweep_and_table():
    base = dict(dataset="cinc2017", fs=50, width=8, epochs=1)
    sw = hy.sweeps(base, FAMILIES, [5, 10], 10, [4], [1], 4, 2, rates=[25, 50, 100])
    assert sorted({c.fs for c in sw["rate"]}) == [25, 50, 100] and {c.family for c in sw["rate"]} == {"rescnn"}
    # 50 Hz at crop 10 is the length sweep's residual CNN: trained once
    assert len(sw["all"]) == len(set(sw["all"])) and sum(c.fs == 50 for c in sw["rate"]) == 2
    assert all(c in sw["length"] for c in sw["rate"] if c.fs == 50)
    runs = pd.DataFrame([{"key": f"{fs}-{s}", "fs": fs, "seed": s, "status": "ok", "converged": True,
                          "collapsed": False, "test_score": {25: 0.60, 50: 0.70, 100: 0.72}[fs] + 0.01 * s}
                         for fs in (25, 50, 100) for s in range(3)])
    t = hy.rate_table(runs, 50)
    assert list(t["fs"]) == [25, 50, 100] and t["seeds"].tolist() == [3, 3, 3]
    assert t.loc[0, "minus 50 Hz"].startswith("-0.100") and t.loc[1, "minus 50 Hz"].startswith("0.000")
    assert "best at 100 Hz" in hy.rate_text(t, 50)
    runs["converged"] = False   # nothing usable: said, not crashed
    assert "No usable run" in hy.rate_text(hy.rate_table(runs, 50), 50)
