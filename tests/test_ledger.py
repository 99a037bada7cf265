"""ledger.export: the claims ledger as CSV and JSON, each verdict with the runs and code behind it."""
import json

import pandas as pd

from ecglib import experiments, ledger


def test_export_writes_parseable_csv_and_json_with_provenance(tmp_path, monkeypatch):
    store = tmp_path / "results"
    monkeypatch.setenv("ECGLIB_RESULTS", str(store))
    store.mkdir()
    (store / "abc.json").write_text(json.dumps({"provenance": {"commit": "1234567890ab", "code": "c0de"}}))
    ledger.save("depth", [
        ledger.Verdict("C8", "depth", "refuted", "s", "ratio", 0.5, 0.25, 0.75, runs=["abc", "gone"]),
        ledger.Verdict("C1", "depth", "inconclusive", "s", "difference", 0.1, float("nan"), float("nan"),
                       runs=["abc"]),
    ])
    ledger.save("features", [ledger.Verdict("C10", "features", "supported", "s", "parameter ratio", 4.0, 4.0, 4.0)])
    out = tmp_path / "html"
    out.mkdir()
    csv_path, json_path = ledger.export(out, profiles={"depth": "smoke"})

    table = pd.read_csv(csv_path)
    assert list(table["claim"]) == ["C1", "C8", "C10"]
    assert list(table.columns[:7]) == ["claim", "chapter", "verdict", "effect", "value", "low", "high"]
    c1, c8, c10 = table.to_dict("records")
    assert c8["runs"] == "abc gone" and c8["n_runs"] == 2
    assert c8["code_version"] == "1234567890ab missing from the store" and c8["profile"] == "smoke"
    assert pd.isna(c1["low"]) and c1["code_version"] == "1234567890ab" and c1["training_code"] == "c0de"
    assert c8["training_code"] == "c0de"   # the missing run has no code to name
    assert c10["n_runs"] == 0 and c10["code_version"] == experiments.git_commit() and pd.isna(c10["profile"])

    doc = json.loads(json_path.read_text())
    assert doc["book_commit"] == experiments.git_commit() and doc["columns"] == list(table.columns)
    rows = doc["verdicts"]
    assert [r["claim"] for r in rows] == ["C1", "C8", "C10"]
    assert rows[1]["runs"] == ["abc", "gone"] and rows[1]["low"] == 0.25 and rows[0]["low"] is None


def test_fmt_ci_never_prints_a_bare_nan():
    assert ledger.fmt_ci(0.8123, 0.79, 0.834) == "0.812 [0.790, 0.834]"
    assert ledger.fmt_ci(0.5, float("nan"), float("nan")) == "0.500 (no CI: too few values)"
    assert ledger.fmt_ci(float("nan"), float("nan"), float("nan")) == "no value (no usable run)"
