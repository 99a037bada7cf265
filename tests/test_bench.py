"""`python -m ecglib bench`: the report's shape (timing ratios are not asserted: they are noisy)."""
import json
from types import SimpleNamespace

import pytest
import torch

from ecglib import bench, cli


@pytest.fixture
def tiny(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(bench, "BATCH_SIZE", 4)
    monkeypatch.setattr(bench, "SEQ_LEN", 64)
    monkeypatch.setattr(bench, "REPEATS", 2)
    yield
    torch.set_num_threads(threads)


def test_bench_json(tiny, capsys):
    assert bench.main(SimpleNamespace(json=True, device="cpu", steps=2, repeats=3, seq_len=48)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["cnn", "lstm", "convlstm"]
    for r in rows:
        assert {"model", "device", "loop_samples_per_s", "bare_samples_per_s", "ratio"} <= set(r)
        assert r["device"] == "cpu" and r["steps"] == 2 and r["loop_samples_per_s"] > 0
        assert r["seq_len"] == 48 and r["repeats"] == 3
        assert r["ratio_low"] <= r["ratio"] <= r["ratio_high"]


def test_the_ratio_is_the_median_of_interleaved_pairs(tiny, monkeypatch):
    # pair timings (loop, bare): 10/10, 30/10 (a noisy neighbour slowed bare), 9/10 -> ratios 1, 3, 0.9
    loops, bares = iter([10.0, 30.0, 9.0] * 3), iter([10.0, 10.0, 10.0] * 3)
    monkeypatch.setattr(bench, "bare_loop", lambda *a: next(bares))
    monkeypatch.setattr(bench.train, "train", lambda *a, **k: SimpleNamespace(history=[{"samples_per_s": next(loops)}]))
    rows = bench.run(device="cpu", steps=1, repeats=3)
    assert rows[0]["ratio"] == pytest.approx(1.0) and rows[0]["ratio_low"] == pytest.approx(0.9)
    assert rows[0]["ratio_high"] == pytest.approx(3.0) and rows[0]["loop_samples_per_s"] == 10.0


def test_bench_table(tiny, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "bare_loop", lambda *a: calls.append(1) or 1.0)
    args = cli.parser().parse_args(["bench", "--device", "cpu", "--steps", "1", "--repeats", "1"])
    assert bench.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["model", "device"] and len(out) == 4
    assert len(calls) == 3      # --repeats 1: one bare measurement per model


def test_the_bare_loop_trains_like_the_loop(tiny):
    # same init, batches, optimiser and schedule: one epoch of each ends at the same weights
    from ecglib import models, train

    ds = bench.Batches(8)
    cfg = train.TrainConfig(epochs=1, batch_size=4, schedule="onecycle", patience=None, progress=False, device="cpu")
    weights = []
    for loop in ("loop", "bare"):
        train.seed_everything(0)
        model = models.build_model("cnn", 2, width=4)
        if loop == "loop":
            train.train(model, ds, bench.Batches(4, seed=1), cfg)
        else:
            bench.bare_loop(model, ds, cfg, torch.device("cpu"))
        weights.append(model.state_dict())
    assert all(torch.allclose(weights[0][k].float(), weights[1][k].float()) for k in weights[0])
