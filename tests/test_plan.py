"""Plan mode (python -m ecglib plan): sweeps list the runs the store lacks and train nothing; placeholders let a
selection complete; prices come from the store's own timings; the command on a throwaway book."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecglib import cli, protocol
from ecglib import experiments as ex
from ecglib import plan
from ecglib.files import ROOT

TINY = {"dataset": "synthetic", "n_train": 64, "length": 160, "width": 8, "epochs": 10, "batch_size": 32}


def record(config, seconds=(1.0,), wall_s=None, threads=1) -> dict:
    """A stored run of `config` without training it, with its epochs' seconds and wall time."""
    split = {"loss": 0.5, "acc": 0.8, "macro_f1": 0.7, "score": 0.7, "n": 10}
    return {"format": ex.STORE_FORMAT, "key": config.key, "config": config.to_dict(), "status": "ok",
            "diverged_epoch": None, "best_epoch": 1, "converged": True, "collapsed": None, "n_params": 10,
            "receptive_field": None, "train": split, "val": split, "test": split,
            "history": [{"epoch": i + 1, "seconds": s} for i, s in enumerate(seconds)],
            "provenance": {"commit": "abc", "code": "c0de00000000", "device": "cpu: x86_64", "threads": threads,
                           "train_s": sum(seconds), "wall_s": sum(seconds) if wall_s is None else wall_s,
                           "finished_at": "2026-01-01T00:00:00+00:00"}}


@pytest.fixture
def planning(store, tmp_path, monkeypatch) -> Path:
    """Plan mode on the scratch store, with training forbidden."""
    def no_training(config):
        raise AssertionError("a plan trained a run")

    monkeypatch.setattr(ex, "execute", no_training)
    path = tmp_path / "plan" / "plan.jsonl"
    path.parent.mkdir()
    monkeypatch.setenv(ex.PLAN, str(path))
    monkeypatch.setenv(ex.CHAPTER, "depth")
    return path


def test_a_planned_sweep_lists_exactly_the_missing_runs_and_writes_nothing(store, planning):
    configs = ex.sweep(TINY, seed=[0, 1, 2])
    ex.write_record(record(configs[0]))
    before = sorted(p.name for p in store.rglob("*"))
    df = ex.run_sweep(configs, progress=False)
    assert sorted(df["key"]) == sorted(c.key for c in configs)
    assert df.set_index("key")["status"].to_dict() == {configs[0].key: "ok", configs[1].key: "planned",
                                                       configs[2].key: "planned"}
    assert protocol.is_usable(df).all()          # a placeholder counts as a run that trained
    ex.run_sweep(configs, progress=False)        # asked again: each missing key is listed once
    lines = [json.loads(line) for line in planning.read_text().splitlines()]
    assert [line["key"] for line in lines] == [configs[1].key, configs[2].key]
    assert {line["chapter"] for line in lines} == {"depth"} and lines[0]["config"]["seed"] == 1
    assert sorted(p.name for p in store.rglob("*")) == before     # no record, no lock folder


def test_placeholders_let_a_selection_complete_and_list_its_candidates(store, planning):
    sel = protocol.select(TINY, "cnn", 2, seeds=(0, 1), progress=False)
    stages = protocol.stages("cnn")
    assert sel.chosen == {name: values[0] for name, values in stages}   # equal scores: the incumbents stay
    assert not sel.failed
    # every candidate of every stage, with each seed; the incumbent is one config shared by the stages
    expected = {c.key for name, values in stages for v in values
                for c in ex.sweep({**TINY, "family": "cnn", "depth": 2, **sel.chosen, name: v}, seed=[0, 1])}
    keys = [json.loads(line)["key"] for line in planning.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(expected) == 2 * (1 + sum(len(v) - 1 for _, v in stages))
    assert set(keys) == expected


def test_a_config_matching_stored_runs_is_priced_from_their_epochs_and_fixed_cost():
    base = ex.RunConfig(**TINY, family="cnn", depth=2)
    d1 = ex.RunConfig(**TINY, family="cnn", depth=1)
    records = [record(base, seconds=(2.0, 3.0, 4.0), wall_s=20.0),             # 3 s/epoch, 3 epochs, 11 s fixed
               record(ex.RunConfig(**{**TINY, "seed": 1}, family="cnn", depth=2), seconds=(3.0,) * 5, wall_s=25.0),
               record(d1, seconds=(1.0,) * 4, wall_s=10.0, threads=2)]
    m = plan.measurements(records)
    target = ex.RunConfig(**{**TINY, "seed": 7, "lr": 0.01}, family="cnn", depth=2)
    assert plan.price(target, m) == (pytest.approx(3.0 * 4 + 10.5), "measured")   # median epochs 4, fixed 10.5
    # depth 4: per-epoch time on the line through depths 1 (1 s) and 2 (3 s); epochs and fixed cost of depth 2
    assert plan.price(ex.RunConfig(**TINY, family="cnn", depth=4), m) == (pytest.approx(7.0 * 4 + 10.5), "scaled")
    # another patience: the stored runs' epochs (3, 5) less their patience (6) plus this one's (8), under the cap
    assert plan.price(ex.RunConfig(**{**TINY, "patience": 8}, family="cnn", depth=2), m)[0] == \
        pytest.approx(3.0 * 6 + 10.5)
    assert plan.price(ex.RunConfig(**{**TINY, "patience": 8, "epochs": 5}, family="cnn", depth=2), m)[0] == \
        pytest.approx(3.0 * 5 + 10.5)
    # shuffled labels: no stored run of that kind, so the cap counts
    assert plan.price(ex.RunConfig(**{**TINY, "shuffle_labels": True}, family="cnn", depth=2), m)[0] == \
        pytest.approx(3.0 * 10 + 10.5)
    # threads: a 2-thread run's seconds count twice (core-seconds)
    assert plan.price(d1, m) == (pytest.approx((1.0 * 4 + 6.0) * 2), "measured")
    lstm = ex.RunConfig(**TINY, family="lstm", depth=1, readout="last")
    assert plan.price(lstm, m) == (pytest.approx((1.0 * 4 + 6.0) * 2), "rough")   # no stored LSTM: any run, per step
    assert plan.price(ex.RunConfig(**{**TINY, "width": 16}, family="cnn", depth=2), m)[1] == "rough"
    # a dataset without stored runs: the family's seconds per training item x input sample, times the config's
    gunpoint = ex.RunConfig(**{**TINY, "dataset": "gunpoint"}, family="cnn", depth=2)
    assert plan.steps(base) == 64 * 160 and plan.steps(gunpoint) > 0
    assert plan.price(gunpoint, m) == (pytest.approx((3.0 * 4 + 10.5) * plan.steps(gunpoint) / (64 * 160)), "rough")
    seconds, basis = plan.price(base, plan.measurements([]))
    assert math.isnan(seconds) and basis == "unpriced"


def test_plan_help_and_an_unknown_chapter():
    out = subprocess.run([sys.executable, "-m", "ecglib", "plan", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--profile" in out.stdout and "--detail" in out.stdout


def test_an_unknown_chapter_is_one_clear_line(capsys):
    assert cli.main(["plan", "--chapter", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown chapter(s) 'nope'; valid chapters: ") and "depth" in err


HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""


def chapter(seeds_before: list, seeds_after: list) -> str:
    """A chapter that sweeps, fails in a cell (as a figure on placeholders may), saves a verdict, sweeps again."""
    cells = ['profile = "default"\nexecutor = "local"\nfresh = False\nseeds = 1',
             f"from ecglib import experiments as ex, ledger\nbase = {TINY!r}\n"
             f"ex.run_sweep(ex.sweep(base, seed={seeds_before}), progress=False)",
             "1 / 0", "ledger.save('tiny', [])",
             f"ex.run_sweep(ex.sweep(base, seed={seeds_after}), progress=False)"]
    body = "\n".join(f"```{{code-cell}} ipython3\n{':tags: [parameters]' + chr(10) if i == 0 else ''}{c}\n```\n"
                     for i, c in enumerate(cells))
    return f"{HEADER}\n# Tiny\n\n{body}"


def test_plan_executes_every_cell_charges_shared_runs_once_and_writes_nothing(store, tmp_path, monkeypatch, capsys):
    root = tmp_path / "book"
    (root / "chapters").mkdir(parents=True)
    (root / "params").mkdir()
    (root / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "chapters/intro",
                                                   "chapters": [{"file": "_executed/a"}, {"file": "_executed/b"}]}))
    (root / "chapters" / "a.md").write_text(chapter([0, 1], [2]))
    (root / "chapters" / "b.md").write_text(chapter([1, 2], [3]))
    (root / "params" / "default.yml").write_text("a: {}\nb: {}\n")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))   # the kernels import this checkout's ecglib
    ex.write_record(record(ex.RunConfig(**TINY, seed=0), seconds=(2.0,) * 3, wall_s=10.0))
    before = sorted(p.name for p in store.rglob("*"))
    out = tmp_path / "plan.csv"
    table = plan.plan("default", root=root, detail=True, out=out)
    rows = table.set_index("chapter")
    assert rows.loc["a", "runs read"] == 1 and rows.loc["a", "runs missing"] == 2 and rows.loc["a", "runs to train"] == 2
    assert rows.loc["b", "runs missing"] == 3 and rows.loc["b", "runs to train"] == 1        # seeds 1, 2: a's
    assert rows.loc[plan.TOTAL, "runs to train"] == 3 and rows.loc[plan.TOTAL, "rough"] == 0
    assert rows.loc[plan.TOTAL, "est. CPU-hours"] == pytest.approx(3 * 10.0 / 3600)     # each priced as seed 0
    assert rows.loc["a", "failed cells"] == 1                  # 1 / 0 failed, and the sweep after it still ran
    assert sorted(p.name for p in store.rglob("*")) == before  # no run, no lock, no ledger in the store
    assert not (root / "_executed").exists() and out.exists() and (tmp_path / "plan-detail.csv").exists()
    printed = capsys.readouterr().out
    assert "[1/2] a:" in printed and "[2/2] b:" in printed
    assert ex.PLAN not in os.environ and ex.CHAPTER not in os.environ
