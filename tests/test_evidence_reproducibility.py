"""The reproducibility page's tables from constructed runs and runtimes."""
import pandas as pd

from ecglib.evidence import reproducibility as rp


def test_reproducibility_tables():
    runs = pd.DataFrame([{"device": "cpu: x86_64", "commit": "abc", "code": "c1", "key": k, "status": s,
                          "wall_s": 1800.0} for k, s in (("a", "ok"), ("b", "diverged"))])
    assert rp.runs_by_device(runs).to_dict("records") == [   # records from before runs stored threads: 1 thread
        {"device": "cpu: x86_64", "threads": "unknown", "code": "c1", "runs": 2, "diverged": 1,
         "CPU core-hours": 1.0, "GPU hours": 0.0}]
    assert rp.runs_by_device(runs.iloc[0:0]).empty
    runtimes = {"depth": {"profile": "smoke", "seconds": 120, "finished_at": "t", "parameters": {"seeds": 2}},
                "data": {"profile": "smoke", "seconds": 60}}
    assert rp.runtimes_table(runtimes)["minutes"].tolist() == [2.0, 1.0]
    assert rp.parameters_table(runtimes).to_dict("records") == [{"chapter": "depth", "parameter": "seeds", "value": "2"}]
    assert rp.runtimes_table({}).empty and rp.parameters_table({}).empty
    sw = rp.software_table().set_index("package")["version"]
    assert sw["pandas"] == pd.__version__ and rp.version("no-such-package-xyz") == "not installed"
    assert "profile **`smoke`** at commit `" in rp.build_text("smoke")


def constructed_runs() -> pd.DataFrame:
    """Four runs: two CPU runs at 2 threads, one at 1 thread on older code, one on a GPU."""
    rows = [("a", "cpu: x86_64", 2, "new", 3600.0), ("b", "cpu: x86_64", 2, "new", 1800.0),
            ("c", "cpu: x86_64", 1, "old", 3600.0), ("d", "NVIDIA H200", 1, "new", 900.0)]
    return pd.DataFrame([{"key": k, "device": dev, "threads": t, "code": code, "wall_s": w, "train_s": w / 2,
                          "status": "ok"} for k, dev, t, code, w in rows])


def test_compute_per_chapter_counts_a_shared_run_once():
    runs = constructed_runs()
    reads = {"baselines": ["a", "b"], "empty": [], "depth": ["b", "c", "d", "gone"], "hybrids": ["a"]}
    table = rp.compute_table(reads, runs).set_index("chapter")
    assert list(table.index) == ["baselines", "depth", "hybrids", rp.TOTAL]     # a chapter that read nothing: no row
    assert table["runs read"].tolist() == [2, 4, 1, 5]                          # "gone": read, since deleted
    assert table["new runs"].tolist() == [2, 3, 0, 5]                            # charged to the first reader
    assert table["new runs"].iloc[:-1].sum() == table.loc[rp.TOTAL, "runs read"]
    assert table["missing"].tolist() == [0, 1, 0, 1]
    # CPU core-hours = wall hours x threads; the GPU run's wall time is GPU hours
    assert table.loc["baselines", "CPU core-hours"] == 3.0 and table.loc["baselines", "GPU hours"] == 0.0
    assert table.loc["depth", "CPU core-hours"] == 2.0 and table.loc["depth", "GPU hours"] == 0.25
    assert table.loc[rp.TOTAL, "CPU core-hours"] == 4.0 and table.loc[rp.TOTAL, "GPU hours"] == 0.25   # b once
    assert table.loc["depth", "devices"] == "cpu: x86_64 (2), NVIDIA H200 (1)"
    assert table.loc[rp.TOTAL, "code versions"] == "new (3), old (1)"
    assert rp.compute_table({}, runs).empty and rp.compute_table({"x": []}, runs).empty

    text = rp.compute_text(reads, runs)
    assert "**4 stored runs**: 4.00 CPU core-hours and 0.25 GPU hours" in text and "took 50%" in text
    assert "holds 0 further runs" in text and "lower bound" not in text
    assert "1 of the runs were stored before runs recorded their thread count" in rp.compute_text(
        reads, runs.assign(threads=[2, None, 1, 1]))
    assert "holds 3 further runs" in rp.compute_text({"x": ["a"]}, runs)
    assert "No chapter of this build read a stored run" in rp.compute_text({}, runs)
    assert len(rp.runs_of({}, runs)) == 4 and list(rp.runs_of({"x": ["d"]}, runs)["key"]) == ["d"]

    by_device = rp.runs_by_device(runs).set_index(["device", "threads", "code"])
    assert by_device["runs"].to_dict() == {("NVIDIA H200", 1, "new"): 1, ("cpu: x86_64", 1, "old"): 1,
                                           ("cpu: x86_64", 2, "new"): 2}
    assert by_device.loc[("cpu: x86_64", 2, "new"), "CPU core-hours"] == 3.0


def test_runs_read_follows_the_book_order(tmp_path):
    (tmp_path / "depth.runs.txt").write_text("b\nc\nb\n")
    (tmp_path / "baselines.runs.txt").write_text("a\n")
    (tmp_path / "zeta.runs.txt").write_text("")
    (tmp_path / "hybrids.partial.runs.txt").write_text("x\n")     # a chapter that failed: not in the book
    reads = rp.runs_read(tmp_path, order=["baselines", "depth", "hybrids"])
    assert reads == {"baselines": ["a"], "depth": ["b", "c"], "zeta": []}
    assert rp.runs_read(tmp_path / "none") == {}


def test_the_page_says_whether_the_build_trained():
    assert "trained nothing" in rp.store_only_text({"a": {"store_only": True}, "b": {"store_only": True}})
    assert rp.store_only_text({"a": {"store_only": True}, "b": {}}).startswith("1 of 2 chapters")
    assert rp.store_only_text({"a": {}}).startswith("Chapters trained any run the store lacked")
