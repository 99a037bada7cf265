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
    assert bench.main(SimpleNamespace(json=True, device="cpu", steps=2)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["cnn", "lstm", "convlstm"]
    for r in rows:
        assert {"model", "device", "loop_samples_per_s", "bare_samples_per_s", "ratio"} <= set(r)
        assert r["device"] == "cpu" and r["steps"] == 2 and r["loop_samples_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["loop_samples_per_s"] / r["bare_samples_per_s"])


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
