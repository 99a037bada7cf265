"""The conclusions page's generated parts, from constructed ledgers and runs tables."""

import matplotlib
import pandas as pd
import pytest

from ecglib import ledger
from ecglib.evidence import conclusions as co

matplotlib.use("Agg")


def ledger_of(verdicts: dict, chapter="depth"):
    rows = [ledger.Verdict(claim=c, chapter=chapter, verdict=v, summary=f"{c} summary.", effect=f"{c} effect",
                           value=0.1, low=0.05, high=0.15, margin=0.02, reason=f"{c} reason", runs=[f"k{c}"],
                           figure="fig-x")
            for c, v in verdicts.items()]
    return pd.DataFrame([r.__dict__ for r in rows])


def test_answer_names_the_best_supported_explanation_and_how_sure():
    v = ledger_of({"C1": "refuted", "C2": "refuted", "C4": "supported", "C7": "supported", "C9": "supported",
                   "C13": "inconclusive"})
    text = co.answer(v, "smoke")
    assert text.startswith("**Architecture** explains the depth gap best")
    assert "C4, C7, C9 speak for it" in text
    assert "*Overfitting*: for none; against C2, C9" in text and "*Vanishing gradients*: for none; against C1" in text
    assert "**How sure:** 5 of 13 claims are decided" in text and "`smoke` profile" in text


def test_answer_with_nothing_decided_says_so():
    text = co.answer(ledger_of({"C1": "inconclusive"}), "smoke")
    assert text.startswith("**No single explanation**") and "0 of 13 claims" in text and "weak" in text


def test_a_claim_judged_twice_depends_when_its_chapters_disagree():
    v = pd.concat([ledger_of({"C4": "supported"}, "depth"), ledger_of({"C4": "refuted"}, "features")])
    assert co.claim_verdict(v, "C4") == "depends" and co.claim_verdict(v, "C5") == "missing"
    assert co.claim_verdict(pd.concat([v.iloc[:1], ledger_of({"C4": "inconclusive"})]), "C4") == "supported"


def test_ledger_table_is_compact_with_badges_links_and_missing_claims():
    table = co.ledger_table(ledger_of({"C2": "refuted", "C1": "supported"}))
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 13 and lines[0].count("|") == 6
    assert lines[2].startswith("| C1 |") and "{bdg-success}`supported`" in lines[2]
    assert "0.100 [0.050, 0.150] (±0.02)" in lines[2] and "{doc}`depth </_executed/depth>`" in lines[2]
    assert "{bdg-light}`missing`" in lines[4]   # C3


def test_traceability_and_details():
    v = ledger_of({"C1": "supported", "C2": "refuted"})
    assert "Claims without a verdict:** C3" in co.traceability(v, {"kC1"})
    assert "missing from the store:** C2" in co.traceability(v, {"kC1"})
    d = co.details(v, {"kC1"})
    assert d.count(":::{dropdown}") == 2 and "*Rule:* C1 reason" in d and "1 of 1 cited runs" in d


def test_forest_plot_scales_effects_by_their_margins():
    v = ledger_of({"C1": "supported", "C10": "depends"})
    v.loc[v["claim"] == "C10", "margin"] = 0.0   # an exact count has no margin
    fig = co.fig_forest(v)
    ax = fig.axes[0]
    xs = [line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 1 and line.get_marker() == "o"]
    assert xs == pytest.approx([5.0])   # 0.1 / 0.02; C10 drawn as text
    assert any("exact count" in t.get_text() for t in ax.texts)


def test_failed_runs_come_from_the_protocol_flags():
    runs = pd.DataFrame([
        {"key": "a", "dataset": "mitdb", "family": "lstm", "depth": 8, "status": "ok", "converged": True, "collapsed": True},
        {"key": "b", "dataset": "mitdb", "family": "lstm", "depth": 8, "status": "diverged", "converged": False,
         "collapsed": False},
        {"key": "c", "dataset": "mitdb", "family": "cnn", "depth": 8, "status": "ok", "converged": True, "collapsed": False},
        {"key": "d", "dataset": "synthetic", "family": "cnn", "depth": 1, "status": "ok", "converged": False,
         "collapsed": True},
    ])
    f = co.failed_runs(runs)
    assert f.to_dict("records") == [{"dataset": "mitdb", "family": "lstm", "depth": 8, "runs": 2, "not usable": 2,
                                     "diverged": 1, "unconverged": 1, "collapsed": 1}]
    assert co.failed_text(runs, f).startswith("2 of 3 stored ECG runs")
    assert "annealed" not in co.failed_text(runs, f)
    text = co.failed_text(runs.assign(levelled=[False, False, True, False]), f)
    assert "1 runs that ran their whole budget count as converged" in text and "at most 1% of its peak" in text


def test_verdict_lines_for_the_top_of_a_chapter():
    v = [ledger.Verdict(claim="C11", chapter="features", verdict="refuted", summary="s", effect="gated - plain",
                        value=-0.01, low=-0.02, high=0.0)]
    assert co.verdict_lines(v) == ("- {bdg-danger}`refuted` **C11**: " + ledger.CLAIM_TEXT["C11"]
                                   + " *gated - plain:* -0.010 [-0.020, 0.000]")


def test_best_prefers_a_configuration_enough_seeds_vouch_for():
    """Two lucky seeds of a remedy run must not outrank five seeds of the recipe: the best needs MIN_RUNS seeds."""
    rows = [{"family": "gru", "depth": 2, "width": 32, "epochs": 40, "seed": s, "val_score": 0.60, "test_score": 0.5,
             "status": "ok", "converged": True, "collapsed": False} for s in range(5)]
    rows += [{"family": "gru", "depth": 2, "width": 32, "epochs": 80, "seed": s, "val_score": 0.70, "test_score": 0.55,
              "status": "ok", "converged": s < 2, "collapsed": False} for s in range(3)]
    b = co.best(pd.DataFrame(rows), ["gru"])
    assert set(b["epochs"]) == {40} and len(b) == 5
    few = pd.DataFrame(rows[5:])                      # nothing has three usable seeds: the best there is
    assert set(co.best(few, ["gru"])["epochs"]) == {80}


def test_anchors_state_the_cinc_setting_of_the_configuration_they_chose():
    """The CinC row scores the best configuration by validation (never by test) and says how its setting differs from
    the challenge's: the training share and crop come from that configuration, not from a fixed sentence."""
    def run(key, fraction, seed, val, f1):
        return {"key": key, "dataset": "cinc2017", "labels": "final", "split": "inter", "shuffle_labels": False,
                "family": "rescnn", "depth": 8, "width": 32, "fs": 50.0, "crop_s": 10.0, "train_fraction": fraction,
                "seed": seed, "val_score": val, "test_score": f1, "test_acc": f1, "status": "ok", "converged": True,
                "collapsed": False}
    # the full-share runs validate better but test worse: the choice must follow validation
    rows = [run(f"a{s}", 0.3, s, 0.70, 0.80) for s in range(3)] + [run(f"b{s}", 1.0, s, 0.75, 0.76) for s in range(3)]
    records = {r["key"]: {"classes": ["N", "A", "O", "~"], "test": {"f1": [0.9, r["test_score"], 0.6, 0.5]}}
               for r in rows}
    table, used = co.anchors(pd.DataFrame(rows), records)
    row = table[table["benchmark"].str.startswith("CinC")].iloc[0]
    assert row["ours"] == "best CNN: residual CNN, depth 8, width 32" and used == ["b0", "b1", "b2"]
    assert row["our value"].startswith("0.753")                # mean of 0.9, 0.76, 0.6
    assert "50 Hz" in row["protocol difference"] and "10 s crops" in row["protocol difference"]
    assert "trained on 100% of the training records" in row["protocol difference"]
