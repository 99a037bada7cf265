"""Training-code versions: a store that mixes them is checked by retraining, and certified only when equal."""
import json

import pandas as pd

from ecglib import experiments as ex
from ecglib import versions

TINY = {"dataset": "synthetic", "n_train": 64, "length": 160, "width": 8, "epochs": 1, "batch_size": 32}


def _age(store, key, code="0ldc0de0ld00", **metric):
    """Pretend a stored run came from older training code (and, with metric, that it scored differently)."""
    path = store / f"{key}.json"
    record = json.loads(path.read_text())
    record["provenance"]["code"] = code
    for name, value in metric.items():
        record["test"][name] = value
    path.write_text(json.dumps(record))


def test_verify_certifies_an_older_version_only_when_its_runs_retrain_identically(store, one_thread):
    configs = ex.sweep(TINY, family=["cnn", "gru"])
    ex.run_sweep(configs, progress=False)
    assert set(ex.load_runs()["code"]) == {versions.code_version()}
    assert versions.verify().empty                          # nothing older: nothing to do
    for c in configs:
        _age(store, c.key)
    report = versions.verify(runs_per_version=2)
    assert report["same"].all() and len(report) == 2, report
    assert set(versions.canonical(ex.load_runs()["code"])) == {versions.code_version()}
    assert versions.equivalences()[0]["from"] == "0ldc0de0ld00"
    # a version whose runs do not come out the same stays apart
    _age(store, configs[0].key, code="d1ffe4e4d1ff", acc=0.123)
    report = versions.verify(runs_per_version=1)
    assert not report["same"].any() and "test acc: 0.123" in report["differences"].iloc[0]
    assert "d1ffe4e4d1ff" in set(versions.canonical(ex.load_runs()["code"]))


def test_canonical_joins_chains_of_equivalent_versions(store):
    store.mkdir()
    (store / versions.EQUIVALENCE_FILE).write_text(json.dumps({"equivalent": [
        {"from": "aaa", "to": "bbb", "runs": [], "checked_at": ""},
        {"from": "bbb", "to": "ccc", "runs": [], "checked_at": ""}]}))
    named = versions.canonical(pd.Series(["aaa", "bbb", "ccc", "zzz", None]))
    assert len(set(named[:3])) == 1 and named[3] == "zzz" and pd.isna(named[4])


def test_verification_spreads_over_code_paths_before_repeating_one():
    runs = pd.DataFrame({"key": list("abcdef"), "dataset": ["mitdb"] * 4 + ["cinc2017"] * 2,
                         "family": ["cnn", "cnn", "lstm", "lstm", "cnn", "cnn"], "wall_s": [1, 2, 50, 60, 10, 11]})
    assert versions._cheapest_spread(runs, 3) == ["a", "e", "c"]
    assert versions._cheapest_spread(runs, 5) == ["a", "e", "c", "b", "f"]


def test_runs_record_their_thread_count_and_verify_retrains_with_it(store, one_thread):
    import torch
    (config,) = ex.sweep(TINY, family=["lstm"])
    ex.run_sweep([config], progress=False)
    record = ex.load_records([config])[0]
    assert record["provenance"]["threads"] == torch.get_num_threads() == 1
    torch.set_num_threads(2)   # the verifying process runs otherwise; the retrain still uses the run's 1 thread
    try:
        diffs, threads = versions._retrain(config, record)
        assert (diffs, threads) == ([], 1) and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_same_results_sees_a_changed_evidence_flag():
    """A collapse rule that changed while every metric stayed put must not certify: verdicts read the flags."""
    split = {m: 0.5 for _, m in versions.COMPARED}
    a = {"status": "ok", "best_epoch": 3, "converged": True, "collapsed": None,
         **{s: dict(split) for s, _ in versions.COMPARED}}
    assert versions.same_results(a, {**a}) == []
    assert versions.same_results(a, {**a, "collapsed": "one class"}) == ["collapsed: None vs one class"]
    assert versions.same_results(a, {**a, "converged": False}) == ["converged: True vs False"]


def test_code_version_moves_with_the_subsampling_the_probes_and_their_constants():
    """What a run stores depends on more than the training loop: subsampling of the training split, the probes and
    constants such as TRAIN_EVAL_MAX. A change to any of them must move the version; a comment must not."""
    pkg = versions.files.ROOT / "ecglib"
    src = {m: (pkg / f"{m}.py").read_text() for m in (*versions.TRAINING_MODULES, "experiments")}
    base = versions._code_digest(src)
    assert base == versions.code_version()
    for old, new in [("TRAIN_EVAL_MAX = 5000", "TRAIN_EVAL_MAX = 4000"),
                     ("def _capped(y: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:",
                      "def _capped(y: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:\n    cap += 1"),
                     ("def _probe_grad_states(model, datasets, config):",
                      "def _probe_grad_states(model, datasets, config):\n    config = None")]:
        assert old in src["experiments"], old
        assert versions._code_digest({**src, "experiments": src["experiments"].replace(old, new, 1)}) != base, new
    assert versions._code_digest({**src, "diagnostics": src["diagnostics"] + "\nX = 1\n"}) != base
    assert versions._code_digest({**src, "experiments": src["experiments"] + "\n# a comment\n"}) == base
