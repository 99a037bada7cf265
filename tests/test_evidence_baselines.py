"""The baselines chapter's analysis on constructed runs: tables, failures and the figure, no training."""
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ecglib import experiments as ex
from ecglib import protocol
from ecglib.evidence import baselines as ev

matplotlib.use("Agg")


def selection(task_base, family, depth=2, chosen=None):
    chosen = chosen or {"lr": 3e-3, "readout": "mean", "weight_decay": 1e-2}
    config = {**task_base, "family": family, "depth": depth, **chosen}
    table = pd.DataFrame([{"stage": 1, "searched": "lr", "value": 3e-3, "mean": 0.5, "low": 0.4, "high": 0.6, "n": 3,
                           "converged": 3, "collapsed": 0, "diverged": 0}])
    return protocol.Selection(family=family, depth=depth, config=config, table=table, runs=pd.DataFrame(),
                              tried="lr 0.001, 0.003, 0.01; readout mean, max; weight_decay 0.01, 0.001, 0.1")


def fake(task_base, family, scores, accs, converged=True, collapsed=False, **chosen):
    """Stored-run rows and records for one family: one seed per score."""
    sel = selection(task_base, family, chosen=chosen or None)
    rows, records = [], {}
    for seed, (s, a) in enumerate(zip(scores, accs)):
        c = ex.RunConfig(**sel.config, seed=seed)
        rows.append({**c.to_dict(), "key": c.key, "status": "ok", "converged": converged, "collapsed": collapsed,
                     "test_score": s, "test_acc": a})
        records[c.key] = {"classes": ["N", "S", "V", "F", "Q"],
                          "test": {"se": [0.9, 0.5 + seed / 10, 0.8, 0.1, None], "ppv": [0.95, 0.3, 0.7, 0.2, None]}}
    return sel, pd.DataFrame(rows), records


MITDB = {"dataset": "mitdb", "split": "inter", "rr": True, "fs": 90, "width": 8}
CINC = {"dataset": "cinc2017", "fs": 50, "crop_s": 10.0, "width": 8}


@pytest.fixture
def world():
    parts = {("mitdb", "cnn"): fake(MITDB, "cnn", [0.6, 0.62, 0.58], [0.9, 0.92, 0.91]),
             ("mitdb", "lstm"): fake(MITDB, "lstm", [0.3, 0.31, 0.29], [0.5, 0.5, 0.5], collapsed=True,
                                     lr=1e-3, readout="last", forget_bias=1.0),
             ("cinc2017", "cnn"): fake(CINC, "cnn", [0.7, 0.72, 0.74], [0.8, 0.81, 0.82])}
    selections = {k: v[0] for k, v in parts.items()}
    runs = pd.concat([v[1] for v in parts.values()], ignore_index=True)
    records = {k: r for v in parts.values() for k, r in v[2].items()}
    return selections, runs, records


def test_table_reads_usable_runs_at_the_chosen_values(world):
    selections, runs, records = world
    # a run of the same family at another learning rate must not enter the cnn's row
    other = runs.iloc[[0]].assign(lr=1e-2, key="other", test_score=0.0)
    t = ev.table(pd.concat([runs, other]), records, selections).set_index(["task", "family"])
    cnn = t.loc[("MIT-BIH, inter-patient", "plain CNN")]
    assert cnn["usable"] == "3/3" and cnn["test_score"] == pytest.approx(0.6)
    assert 0 <= cnn["test_score_low"] <= 0.6 <= cnn["test_score_high"] <= 1      # bounded interval
    assert cnn["se S"] == pytest.approx(0.6) and math.isnan(cnn["se Q"])
    assert cnn["chosen"] == "lr 0.003, readout mean, weight_decay 0.01"
    lstm = t.loc[("MIT-BIH, inter-patient", "LSTM")]
    assert lstm["usable"] == "0/3" and math.isnan(lstm["test_score"])               # collapsed: no score


def test_failures_name_what_was_tried(world):
    selections, runs, _ = world
    text = ev.failures_text(runs, selections)
    assert "**LSTM**, depth 2, MIT-BIH, inter-patient: failed to train (3 runs: 0 diverged, 0 unconverged, " \
           "3 collapsed; tried: lr 0.001" in text
    assert "plain CNN" not in text
    ok = {k: v for k, v in selections.items() if k[1] == "cnn"}
    assert ev.failures_text(runs[runs["family"] == "cnn"], ok).startswith("Every family trained")


def test_summary_and_selection_tables_and_figure(world):
    selections, runs, records = world
    summary = ev.table(runs, records, selections)
    shown = ev.summary_table(summary)
    assert shown.loc[0, "test score"].startswith("0.600 [") and "se S" in shown.columns
    assert shown.loc[1, "test score"] == "no usable run"     # the collapsed LSTM
    assert set(ev.selection_table(selections)["family"]) == {"plain CNN", "LSTM"}
    fig = ev.fig_baselines(summary)
    assert len(fig.axes) == 2 and fig.axes[0].get_ylim() == (0, 1.02)
    assert ev.anchors_table()["source"].str.len().min() > 0
    beside = ev.anchors_table(summary).set_index("source")
    # the CinC anchors sit beside the best usable CinC family (the cnn, 0.72 mean), and MIT-BIH's accuracy
    # beside the cnn (the collapsed LSTM has no score); no usable intra-patient run: said, not blank
    assert beside.loc["clifford2017af", "ours (best family)"].startswith("plain CNN: 0.720 [")
    assert beside.loc["clifford2017af", "ours − published"] == pytest.approx(0.72 - 0.83)
    assert beside.loc["dechazal2004automatic", "ours − published"] == pytest.approx(0.91 - 0.862)
    assert beside.loc["kachuee2018ecg", "ours (best family)"] == "no usable run"


def test_remedies_are_tried_on_failed_families_only_and_reported(world):
    selections, runs, _ = world
    sweeps = ev.remedy_sweeps(runs, selections, seeds=[0, 1, 2])
    assert {k[:2] for k in sweeps} == {("mitdb", "lstm")}           # the collapsed LSTM; the CNNs trained
    longer = sweeps[("mitdb", "lstm", "longer training")]
    fix = pd.DataFrame([{**c.to_dict(), "key": c.key, "status": "ok", "converged": True, "collapsed": s < 0.35,
                         "test_score": s, "best_epoch": b}
                        for c, s, b in zip(longer, [0.5, 0.55, 0.3], [20, 25, 3])])
    t = ev.remedies_table(fix, sweeps)
    assert t["remedy"].tolist() == ["longer training", "half the sampling rate"]
    row = t.iloc[0]
    assert row["usable"] == "2/3" and row["test score"].startswith("0.525 [") and row["mean best epoch"] == 16.0
    assert t.iloc[1]["usable"] == "0/3" and t.iloc[1]["test score"] == "no usable run"
    text = ev.remedies_text(t)
    assert "**LSTM**, MIT-BIH, inter-patient: with longer training, 2 of 3 seeds trained (test score 0.525 [" in text
    assert "is a floor" in text
    assert "does not reliably leave" in ev.remedies_text(t.assign(usable=["1/3", "0/3"]))
    assert "half the sampling rate" not in text
    assert "no remedy made it train" in ev.remedies_text(t.assign(usable="0/3"))
    assert ev.remedies_text(t.iloc[:0]).startswith("No family failed")


def test_task_of_tells_the_intra_patient_control_apart():
    assert ev.task_of({"dataset": "mitdb", "split": "intra"}) == "mitdb-intra"
    assert ev.task_of({"dataset": "mitdb", "split": "inter"}) == "mitdb"
    assert ev.task_of({"dataset": "cinc2017"}) == "cinc2017"
    assert np.all(ev.ANCHORS["value"].between(0, 1))


def test_recipe_text_is_read_from_the_config():
    from ecglib.evidence import recipe

    assert recipe({"dataset": "mitdb"}) == ("AdamW at 0.003 in batches of 128 with a one-epoch warm-up, then the rate cut 0.3x after 2 "
                                            "epochs without a better validation score, early stopping after 6 epochs "
                                            "without a better validation macro-F1 over N, S, V, F")
    text = recipe({"dataset": "cinc2017", "schedule": "onecycle", "patience": None, "lr": 1e-2})
    assert text == "AdamW at 0.01 in batches of 128 with a one-cycle schedule, no early stopping"
    assert recipe({"dataset": "mitdb", "batch_size": 32}, lrs=[1e-3, 1e-2]).startswith(
        "AdamW at the rate validation chose from 0.001, 0.01 in batches of 32")


def test_each_family_is_selected_at_its_own_depth_and_a_missing_one_fails_before_training(monkeypatch):
    seen = []
    monkeypatch.setattr(ev.protocol, "select", lambda base, family, depth, **kw: seen.append((family, depth)))
    ev.select_all({"mitdb": {"dataset": "mitdb"}}, ["cnn", "lstm"], {"cnn": 8, "lstm": 2}, [0])
    assert seen == [("cnn", 8), ("lstm", 2)]
    ev.select_all({"mitdb": {"dataset": "mitdb"}}, ["cnn"], 3, [0])
    assert seen[-1] == ("cnn", 3)
    seen.clear()
    with pytest.raises(ValueError, match="no depth for family 'gru'"):
        ev.select_all({"mitdb": {"dataset": "mitdb"}}, ["cnn", "gru"], {"cnn": 8}, [0])
    assert seen == []


def test_equal_effort_gives_the_failed_familys_remedy_to_every_family(world):
    """On a task named in equal_effort, every family gets the remedy (the failed LSTM's own remedy runs are the same
    configs), and the table sets each beside the chapter's recipe on the same seeds, paired."""
    selections, runs, _ = world
    sweeps = ev.effort_sweeps(selections, [0, 1, 2], {"mitdb": "longer training"})
    assert set(sweeps) == {("mitdb", "cnn"), ("mitdb", "lstm")}
    assert [c.key for c in sweeps[("mitdb", "lstm")]] == \
        [c.key for c in ev.remedy_sweeps(runs, selections, [0, 1, 2])[("mitdb", "lstm", "longer training")]]
    assert all(c.schedule == "cosine" for cs in sweeps.values() for c in cs)
    scores = {"cnn": [0.65, 0.66, 0.62], "lstm": [0.5, 0.2, 0.45]}
    effort = pd.DataFrame([{**c.to_dict(), "key": c.key, "status": "ok", "converged": True,
                            "collapsed": s < 0.35, "test_score": s, "best_epoch": 30}
                           for (_, f), cs in sweeps.items() for c, s in zip(cs, scores[f])])
    t = ev.effort_table(runs.assign(best_epoch=10), effort, sweeps).set_index("family")
    assert t.loc["plain CNN", "trained, the chapter's recipe"] == "3/3" and t.loc["plain CNN", "trained, equal effort"] == "3/3"
    assert t.loc["plain CNN", "difference (paired)"].startswith("0.043 [")       # (0.05 + 0.04 + 0.04) / 3
    assert t.loc["LSTM", "trained, the chapter's recipe"] == "0/3" and t.loc["LSTM", "trained, equal effort"] == "2/3"
    assert t.loc["LSTM", "difference (paired)"] == "no pair" and t.loc["LSTM", "best epoch, equal effort"] == 30
    with pytest.raises(ValueError, match="known"):
        ev.effort_sweeps(selections, [0], {"mitdb": "more epochs"})


def test_more_data_repeats_the_equal_effort_runs_on_more_records_paired_by_seed(world):
    """The more-data runs are the equal-effort configs with only the training share changed; the table and text set
    them beside those runs by seed, and name the best family against the published CinC score."""
    selections, _, _ = world
    selections[("cinc2017", "cnn")] = selection({**CINC, "train_fraction": 0.3}, "cnn")
    effort = ev.effort_sweeps(selections, [0, 1, 2], {"cinc2017": "longer training", "mitdb": "longer training"})
    data = ev.data_sweeps(effort, {"cinc2017": 1.0})
    assert set(data) == {("cinc2017", "cnn")}
    for before, after in zip(effort[("cinc2017", "cnn")], data[("cinc2017", "cnn")]):
        assert after.train_fraction == 1.0 and after.key != before.key
        assert {k: v for k, v in after.to_dict().items() if k != "train_fraction"} == \
            {k: v for k, v in before.to_dict().items() if k != "train_fraction"}
    assert ev.data_sweeps(effort, {"cinc2017": 1.0}, families=["lstm"]) == {}
    before = {"cinc2017": [0.70, 0.72, 0.74], "data": [0.75, 0.78, 0.79]}
    rows = [{**c.to_dict(), "key": c.key, "status": "ok", "converged": True, "collapsed": False, "test_score": s,
             "best_epoch": 20} for cs, scores in ((effort[("cinc2017", "cnn")], before["cinc2017"]),
                                                  (data[("cinc2017", "cnn")], before["data"])) for c, s in zip(cs, scores)]
    runs = pd.DataFrame(rows)
    t = ev.data_table(runs, effort, data).set_index("family")
    assert t.loc["plain CNN", "trained, 100% of the training records"] == "3/3"
    assert t.loc["plain CNN", "difference (paired)"].startswith("0.053 [")      # (0.05 + 0.06 + 0.05) / 3
    text = ev.data_text(runs, effort, data)
    assert "plain CNN, 0.773 [" in text and "0.057 below the best published score (0.83" in text
    assert "gained: plain CNN" in text
    # a seed whose more-data run failed drops out of the pairs and the score
    text = ev.data_text(runs.assign(converged=[True] * 5 + [False]), effort, data)
    assert "(2 seeds)" in text
    assert ev.data_text(runs, effort, {}).startswith("This profile trains every family on its stated share")
    assert "More data made a family train" not in ev.data_text(runs, effort, data)
    # a family that failed in 2 of 3 seeds on the smaller share and trained in all on more data is named
    text = ev.data_text(runs.assign(converged=[True, False, False] + [True] * 3), effort, data)
    assert "More data made a family train that mostly failed without it: the plain CNN (1 of 3 seeds trained on the " \
           "smaller share, 3 of 3 on this one)." in text


def test_more_data_is_checked_before_anything_trains():
    ev.check_more_data({"cinc2017": 1.0}, ["cnn"], ["cnn"], {"cinc2017": "longer training"})
    ev.check_more_data(None, ["cnn"])
    with pytest.raises(ValueError, match=r"more_data names tasks \['cinc2017'\] without equal-effort runs"):
        ev.check_more_data({"cinc2017": 1.0}, ["cnn"], None, {"mitdb": "longer training"})
    with pytest.raises(ValueError, match=r"data_families \['gru'\] are not among"):
        ev.check_more_data({"cinc2017": 1.0}, ["cnn"], ["gru"], {"cinc2017": "longer training"})
    for share in (0, 1.5, "all", True):
        with pytest.raises(ValueError, match=r"a number in \(0, 1\]"):
            ev.check_more_data({"cinc2017": share}, ["cnn"], None, {"cinc2017": "longer training"})


def test_an_ablation_switches_one_option_off_at_each_selected_setting_paired_by_seed(world):
    """Only the settings that switch the option on are ablated; the ablated configs differ from the final runs in
    that option alone, and the table and text pair them by seed (with - without)."""
    selections, _, _ = world
    selections[("mitdb", "cnn")] = selection({**MITDB, "template": True}, "cnn")
    sweeps = ev.ablation_sweeps(selections, [0, 1, 2], ["template"])
    assert set(sweeps) == {("mitdb", "cnn", "template")}                      # the LSTM and CinC have it off
    final = ex.sweep(selections[("mitdb", "cnn")].config, seed=[0, 1, 2])
    for on, off in zip(final, sweeps[("mitdb", "cnn", "template")]):
        assert off.template is False and off.key != on.key
        assert {k: v for k, v in off.to_dict().items() if k != "template"} == \
            {k: v for k, v in on.to_dict().items() if k != "template"}
    scores = [(c, s) for cs, ss in ((final, [0.55, 0.57, 0.56]), (sweeps[("mitdb", "cnn", "template")], [0.45, 0.48, 0.47]))
              for c, s in zip(cs, ss)]
    runs = pd.DataFrame([{**c.to_dict(), "key": c.key, "status": "ok", "converged": True, "collapsed": False,
                          "test_score": s, "best_epoch": 5} for c, s in scores])
    t = ev.ablation_table(runs, sweeps).set_index("family")
    assert t.loc["plain CNN", "option"] == "template" and t.loc["plain CNN", "trained, with template"] == "3/3"
    assert t.loc["plain CNN", "difference (paired)"].startswith("0.093 [")     # (0.10 + 0.09 + 0.09) / 3
    assert ev.ablation_text(runs, sweeps).startswith("- MIT-BIH, inter-patient, `template`: it helped the plain CNN "
                                                     "(0.093 [")
    hurt = runs.assign(test_score=[s for _, s in scores][::-1])             # the arms swapped: the option hurts
    assert "it hurt the plain CNN" in ev.ablation_text(hurt, sweeps)
    assert ev.ablation_text(runs, {}).startswith("This profile ablates no input option")
    assert ev.ablation_sweeps(selections, [0], []) == {}


def test_ablations_are_checked_before_anything_trains():
    ev.check_ablations(["template", "rr"])
    ev.check_ablations(None)
    for bad in (["lr"], ["templates"]):
        with pytest.raises(ValueError, match=r"switches off an on/off run option; valid: .*template"):
            ev.check_ablations(bad)
