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
                             "test_macro_f1": score, "val_macro_f1": score})
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


def test_sweeps_share_configs_and_check_the_pareto_crop():
    base = dict(dataset="cinc2017", fs=50, width=8, epochs=1)
    sw = hy.sweeps(base, FAMILIES, [5, 10], 10, [4, 16], [1, 2], 4, 2)
    assert len(sw["all"]) == len(set(c.key for c in sw["all"])) < len(sw["length"] + sw["front"] + sw["shallow"])
    with pytest.raises(ValueError, match="crop_s=7 must be one of"):
        hy.sweeps(base, FAMILIES, [5, 10], 7, [4], [1], 4, 2)


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
