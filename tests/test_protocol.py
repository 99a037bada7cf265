"""The training protocol's selection: equal effort per family, validation data only, gates on evidence."""
import itertools

import numpy as np
import pandas as pd
import pytest

from ecglib import experiments as ex
from ecglib import protocol
from ecglib import train as train_module
from ecglib.models import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"dataset": "synthetic", "n_train": 64, "length": 160, "width": 8, "epochs": 2, "batch_size": 32,
        "max_batches": 2}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGLIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_gets_the_same_number_of_candidates(family):
    plan = protocol.stages(family)
    # each later stage's first value is the incumbent, trained already
    assert sum(len(v) for _, v in plan) - (len(plan) - 1) == protocol.CANDIDATES
    assert plan[0][0] == "lr"   # the learning rate first (Greff et al. 2017)
    for name, values in plan:   # every candidate is a valid run of this family
        for v in values:
            ex.RunConfig(family=family, **{name: v})


def fake_runs(configs, val, test):
    """load_runs-like rows for `configs`, with val and test scores given per (field value) by two dicts."""
    rows = []
    for c in configs:
        d = c.to_dict()
        rows.append({**d, "key": c.key, "status": "ok", "converged": True, "collapsed": False,
                     "val_score": val(d), "test_score": test(d)})
    return pd.DataFrame(rows)


def test_selection_reads_validation_scores_only(monkeypatch, store):
    # test scores rank the candidates the opposite way: a selection that peeked would pick lr 1e-3 etc.
    val_rank = {1e-3: 0.1, 3e-3: 0.2, 1e-2: 0.9, "mean": 0.0, "last": 0.5, "max": 0.1, 1.0: 0.0, 0.0: 0.3}

    def score(d):
        return (val_rank[d["lr"]] + val_rank[d["readout"]] + val_rank[d["forget_bias"]]
                + 0.01 * d["seed"])

    def sweep_without_test_labels(configs, **kw):
        runs = fake_runs(configs, score, lambda d: 3 - score(d))
        return runs.drop(columns="test_score") if kw.get("drop_test", True) else runs

    monkeypatch.setattr(ex, "run_sweep", sweep_without_test_labels)   # KeyError if selection read test_score
    sel = protocol.select(TINY, "lstm", 2, seeds=[0, 1, 2])
    assert sel.chosen == {"lr": 1e-2, "readout": "last", "forget_bias": 0.0}
    assert list(sel.table["stage"]) == [1, 1, 1, 2, 2, 2, 3, 3]
    assert sel.table.loc[3, "value"] == "mean"   # the incumbent is tried first in its stage

    def sweep_with_reversed_test(configs, **kw):
        return fake_runs(configs, score, lambda d: 3 - score(d))

    monkeypatch.setattr(ex, "run_sweep", sweep_with_reversed_test)
    assert protocol.select(TINY, "lstm", 2, seeds=[0, 1, 2]).chosen == sel.chosen


def test_select_end_to_end_stores_and_reuses_its_runs(store, monkeypatch):
    calls = []
    real = train_module.train
    monkeypatch.setattr(train_module, "train", lambda m, *a, **k: calls.append(1) or real(m, *a, **k))
    sel = protocol.select(TINY, "cnn", 2, seeds=[0, 1], progress=False)
    assert len(calls) == 2 * protocol.CANDIDATES          # six candidates, two seeds, the incumbents not retrained
    assert sel.config["lr"] in protocol.LRS and sel.config["readout"] in ("mean", "max")
    assert len(sel.runs) == 2 * protocol.CANDIDATES and set(sel.runs["family"]) == {"cnn"}
    assert sel.tried == "lr 0.001, 0.003, 0.01; readout mean, max; weight_decay 0.01, 0.001, 0.1"
    # the final runs of the chosen candidate reuse the selection runs of the same seeds
    final = ex.run_sweep(ex.sweep(sel.config, seed=[0, 1, 2]), progress=False)
    assert len(calls) == 2 * protocol.CANDIDATES + 1 and len(final) == 3
    again = protocol.select(TINY, "cnn", 2, seeds=[0, 1], progress=False)
    assert len(calls) == 2 * protocol.CANDIDATES + 1 and again.config == sel.config


def runs_frame(rows):
    cols = ["family", "depth", "seed", "status", "converged", "collapsed"]
    return pd.DataFrame(rows, columns=cols)


def test_gates_keep_only_converged_uncollapsed_runs():
    runs = runs_frame([
        ("cnn", 2, 0, "ok", True, False),
        ("cnn", 2, 1, "ok", False, False),      # ran out of epochs while still improving
        ("lstm", 8, 0, "ok", True, True),       # one class
        ("lstm", 8, 1, "diverged", False, True),
        ("lstm", 2, 0, "ok", True, False),
    ])
    assert protocol.usable(runs)[["family", "depth", "seed"]].values.tolist() == [["cnn", 2, 0], ["lstm", 2, 0]]
    bad = protocol.failed(runs, tried={"lstm": "lr 0.001, 0.003, 0.01; readout mean, last, max"})
    assert bad[["family", "depth", "runs", "diverged", "unconverged", "collapsed"]].values.tolist() == [
        ["lstm", 8, 2, 1, 1, 2]]
    assert bad.loc[0, "tried"].startswith("lr 0.001")


def test_a_selection_whose_chosen_runs_all_collapsed_has_failed(monkeypatch, store):
    monkeypatch.setattr(ex, "run_sweep", lambda configs, **kw: fake_runs(configs, lambda d: 0.5, lambda d: 0.5)
                        .assign(collapsed=True))
    sel = protocol.select(TINY, "rnn", 4, seeds=[0, 1])
    assert sel.failed and sel.chosen == {"lr": 1e-3, "readout": "mean", "weight_decay": 1e-2}   # ties: incumbents


def test_remedies_change_the_selected_setting_and_nothing_else(monkeypatch, store):
    cinc = {"dataset": "cinc2017", "fs": 50, "crop_s": 10.0, "epochs": 40, "patience": 6, "batch_size": 32}
    monkeypatch.setattr(ex, "run_sweep", lambda configs, **kw: fake_runs(configs, lambda d: 0.5, lambda d: 0.5)
                        .assign(collapsed=True))
    failed = protocol.select(cinc, "lstm", 2, seeds=[0, 1])
    sweeps = protocol.remedy_sweeps(failed.config, seeds=[0, 1])
    assert set(sweeps) == set(protocol.REMEDIES)
    longer = sweeps["longer training"]
    assert [c.seed for c in longer] == [0, 1]
    assert (longer[0].schedule, longer[0].epochs, longer[0].patience, longer[0].fs) == ("cosine", 80, 18, 50)
    assert longer[0].lr == failed.config["lr"] and longer[0].readout == failed.config["readout"]
    assert sweeps["half the sampling rate"][0].fs == 25 and sweeps["half the sampling rate"][0].epochs == 40
    # fs left at the dataset default is halved from that default, not from None
    assert protocol.remedied({"dataset": "mitdb"}, {"fs": 0.5})["fs"] == ex.DEFAULT_FS["mitdb"] / 2
    assert protocol.describe_remedy(protocol.REMEDIES["longer training"]) == \
        "schedule cosine, epochs ×2, patience ×3"
    with pytest.raises(ValueError, match="patience"):
        protocol.remedied({"patience": None}, {"patience": 3.0})


def test_tuned_keeps_each_points_best_learning_rate_on_validation_only():
    """A table that holds every seed at every learning rate is read at the rate with the best mean validation
    score, chosen separately for every family and depth; test scores never enter the choice."""
    configs = ex.sweep({"dataset": "mitdb"}, family=["cnn"], depth=[1, 8], lr=[1e-3, 1e-2], seed=[0, 1]) \
        + ex.sweep({"dataset": "mitdb", "family": "lstm"}, depth=[1], lr=[1e-3, 1e-2], seed=[0, 1])
    val = {("cnn", 1, 1e-3): 0.5, ("cnn", 1, 1e-2): 0.6, ("cnn", 8, 1e-3): 0.7, ("cnn", 8, 1e-2): 0.4,
           ("lstm", 1, 1e-3): 0.3, ("lstm", 1, 1e-2): 0.3}
    runs = pd.DataFrame([{**c.to_dict(), "val_score": val[c.family, c.depth, c.lr] + 0.01 * c.seed,
                          "test_score": 1.0 - val[c.family, c.depth, c.lr]} for c in configs])
    got = protocol.tuned(runs)
    chosen = got.groupby(["family", "depth"])["lr"].agg(set).to_dict()
    assert chosen == {("cnn", 1): {1e-2}, ("cnn", 8): {1e-3}, ("lstm", 1): {1e-3}}   # a tie: the first rate
    assert len(got) == 3 * 2                                                        # every seed of the chosen rate
    one_rate = runs[runs["lr"] == 1e-3]
    assert protocol.tuned(one_rate).equals(one_rate)                                 # nothing to choose


def test_tune_lr_selects_per_point_with_the_selection_seeds_and_reuses_them(monkeypatch):
    """Each point (here family x depth, in two sweeps that share one point) is trained at every rate with the
    selection seeds only; every config of every sweep comes back at its point's best rate on validation."""
    from ecglib.evidence import depth as depth_ev

    val = {("cnn", 1, 1e-3): 0.5, ("cnn", 1, 1e-2): 0.6, ("cnn", 8, 1e-3): 0.7, ("cnn", 8, 1e-2): 0.4,
           ("lstm", 1, 1e-3): 0.3, ("lstm", 1, 1e-2): 0.3}
    trained = []

    def run_sweep(configs, **kw):
        trained.extend(configs)
        return fake_runs(configs, lambda d: val[d["family"], d["depth"], d["lr"]] + 0.01 * d["seed"],
                         lambda d: 1 - val[d["family"], d["depth"], d["lr"]]).drop(columns="test_score")

    monkeypatch.setattr(ex, "run_sweep", run_sweep)
    base = {"dataset": "mitdb"}
    sweeps = {"a": depth_ev.depth_sweep(base, ["cnn"], ["lstm"], [1, 8], [1], 5),
              "b": depth_ev.depth_sweep(base, ["cnn"], [], [8], [], 2)}
    tuned, runs = protocol.tune_lr(sweeps, [1e-3, 1e-2], [0, 1])
    assert len(trained) == 3 * 2 * 2 and {c.seed for c in trained} == {0, 1}   # points x rates x selection seeds
    assert len(runs) == len(trained)
    lr = lambda cs: {(c.family, c.depth): c.lr for c in cs}
    assert lr(tuned["a"]) == {("cnn", 1): 1e-2, ("cnn", 8): 1e-3, ("lstm", 1): 1e-3}   # a tie: the first rate
    assert lr(tuned["b"]) == {("cnn", 8): 1e-3} and len(tuned["a"]) == 15 and len(tuned["b"]) == 2
    assert [c.seed for c in tuned["a"]] == [c.seed for c in sweeps["a"]]
    # the selection runs of the chosen rate are final runs: same keys
    assert {c.key for c in tuned["a"] if c.seed < 2} <= {c.key for c in trained}
    assert protocol.tune_lr(sweeps, [], [0])[0] is sweeps                          # no grid: nothing to choose


def test_a_data_variant_runs_at_the_rate_chosen_for_its_reference(monkeypatch):
    """RR context or noisy labels change the data, not the model: the rate is chosen on the reference configs only
    (the variant never enters selection), and each variant run pairs with a reference run that differs in that field
    alone, so a shared sweep's tuned runs are reused as the reference."""
    trained = []

    def run_sweep(configs, **kw):
        trained.extend(configs)
        return fake_runs(configs, lambda d: {1e-3: 0.4, 1e-2: 0.6}[d["lr"]] + 0.01 * d["seed"], lambda d: 0.0)

    monkeypatch.setattr(ex, "run_sweep", run_sweep)
    ref = ex.sweep({"dataset": "mitdb", "depth": 2}, family=["cnn", "lstm"], seed=[0, 1, 2])
    out = protocol.vary_at_tuned_lr(ref, "rr", [True], [1e-3, 1e-2], [0])
    assert not any(c.rr for c in trained) and len(trained) == 2 * 2          # points x rates, reference only
    assert len(out) == 12 and {c.lr for c in out} == {1e-2}
    tuned = protocol.tune_lr({"r": ref}, [1e-3, 1e-2], [0])[0]["r"]
    assert [c.key for c in out[:6]] == [c.key for c in tuned]               # the reference: the tuned sweep itself
    for a, b in zip(out[:6], out[6:]):
        assert {k for k, v in a.to_dict().items() if b.to_dict()[k] != v} == {"rr"}


def test_selection_never_picks_a_rate_whose_runs_the_verdicts_cannot_read(monkeypatch):
    """lr 1e-2 scores best on validation but every run of it collapsed: it would win, then leave no usable run."""
    def run_sweep(configs, **kw):
        runs = fake_runs(configs, lambda d: {1e-3: 0.4, 3e-3: 0.5, 1e-2: 0.9}[d["lr"]], lambda d: 0.0)
        return runs.assign(collapsed=runs["lr"] == 1e-2)

    monkeypatch.setattr(ex, "run_sweep", run_sweep)
    assert protocol.select(TINY, "cnn", 2, seeds=[0, 1]).chosen["lr"] == 3e-3
    tuned, _ = protocol.tune_lr({"a": ex.sweep(TINY, seed=[0, 1])}, list(protocol.LRS), [0, 1])
    assert {c.lr for c in tuned["a"]} == {3e-3}
    assert set(protocol.tuned(run_sweep(ex.sweep(TINY, lr=list(protocol.LRS), seed=[0, 1])))["lr"]) == {3e-3}


@pytest.mark.parametrize("reason, train_score, collapsed", [
    ("validation score 0.27 within 0.05 of chance (0.25)", 0.62, False),   # learned; its validation patients differ
    ("validation score 0.27 within 0.05 of chance (0.25)", 0.28, True),    # at chance on its own training data too
    ("predicts class 0 for 100.0% of items", 0.62, True),                  # one class: collapsed whatever it fit
    (None, 0.62, False),
])
def test_the_gate_keeps_a_run_at_chance_on_validation_only(store, reason, train_score, collapsed):
    """A stored run flagged for its validation score alone counts as collapsed only when its training score is at
    chance too: the gate reads the record's reason, its chance level and its training score."""
    c = ex.RunConfig(**TINY, family="cnn", depth=1)
    metrics = {"loss": 1.0, "acc": 0.5, "macro_f1": 0.3, "score": 0.27}
    record = {"format": ex.STORE_FORMAT, "key": c.key, "config": c.to_dict(), "status": "ok", "diverged_epoch": None,
              "best_epoch": 1,
              "converged": True, "collapsed": reason, "chance": 0.25, "n_params": 1, "receptive_field": None,
              "classes": [], "train": {**metrics, "score": train_score}, "val": metrics, "test": metrics,
              "history": [], "probes": {}, "provenance": {"wall_s": 1.0, "device": "cpu", "commit": "unknown",
                                                          "finished_at": None}}
    ex.write_record(record, store)
    runs = ex.load_runs([c])
    assert runs["collapsed"].tolist() == [collapsed]
    assert protocol.is_usable(runs).tolist() == [not collapsed]
