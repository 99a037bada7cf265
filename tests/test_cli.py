"""`python -m ecglib build` and `runs`: bad input fails fast with exit code 2 and a clear line."""
import json
import os
import re
import subprocess
import sys

import pytest

from ecglib import book
from ecglib import experiments as ex


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ecglib", *args], capture_output=True, text=True,
                          cwd=book.ROOT, env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--chapter", "nope"], r"error: unknown chapter\(s\) 'nope'; valid chapters: "),
    (["-p", "nope", "1"], r"error: unknown parameter\(s\) 'nope' for chapter\(s\) .*; valid parameters: "),
    (["--profile", "nope"], r"error: unknown profile 'nope'; valid profiles: default, full, smoke"),
    (["--chapter", "depth", "-p", "seeds", "-1"], r"error: -p seeds '-1': seeds of chapter depth must be an integer >= 1"),
    (["--chapter", "depth", "-p", "seeds", "notalist"], r"error: -p seeds 'notalist': seeds of chapter depth must be an "
                                                        r"integer >= 1 \(its default is 3\), got 'notalist'"),
    (["--chapter", "depth", "-p", "seeds", "2.5"], r"error: -p seeds '2.5': seeds of chapter depth must be an integer"),
    (["--fresh", "--store-only"], r"error: --fresh retrains every run and --store-only trains none: pass one of them"),
])
def test_build_rejects_bad_input_before_anything_runs(args, message):
    runtimes = book.ROOT / "_executed" / "runtimes.json"
    before = runtimes.stat().st_mtime_ns if runtimes.exists() else None
    r = cli("build", "--no-render", *args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and re.search(message, r.stderr), r.stderr
    assert "executing" not in r.stdout
    assert (runtimes.stat().st_mtime_ns if runtimes.exists() else None) == before


def test_runs_json_lists_the_store(tmp_path):
    store = tmp_path / "results"
    r = cli("runs", "--json", env={"ECGLIB_RESULTS": str(store)})
    assert r.returncode == 0 and json.loads(r.stdout) == []
    assert "no stored runs" in cli("runs", env={"ECGLIB_RESULTS": str(store)}).stdout
    config = ex.RunConfig(dataset="synthetic", n_train=32, length=160, width=4, epochs=1, batch_size=32)
    ex.run_sweep([config], store=store, progress=False)
    r = cli("runs", "--json", env={"ECGLIB_RESULTS": str(store)})
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["key"] == config.key and row["family"] == "cnn" and row["status"] == "ok"
    assert 0 <= row["test_macro_f1"] <= 1
    r = cli("runs", env={"ECGLIB_RESULTS": str(store)})
    assert config.key in r.stdout
