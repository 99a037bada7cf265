"""The reproducibility page's tables from constructed runs and runtimes."""
import pandas as pd

from ecglib.evidence import reproducibility as rp


def test_reproducibility_tables():
    runs = pd.DataFrame([{"device": "cpu", "commit": "abc", "key": k, "status": s, "wall_s": 1800.0}
                         for k, s in (("a", "ok"), ("b", "diverged"))])
    assert rp.runs_by_device(runs).to_dict("records") == [
        {"device": "cpu", "commit": "abc", "runs": 2, "diverged": 1, "training_hours": 1.0}]
    assert rp.runs_by_device(runs.iloc[0:0]).empty
    runtimes = {"depth": {"profile": "smoke", "seconds": 120, "finished_at": "t", "parameters": {"seeds": 2}},
                "data": {"profile": "smoke", "seconds": 60}}
    assert rp.runtimes_table(runtimes)["minutes"].tolist() == [2.0, 1.0]
    assert rp.parameters_table(runtimes).to_dict("records") == [{"chapter": "depth", "parameter": "seeds", "value": "2"}]
    assert rp.runtimes_table({}).empty and rp.parameters_table({}).empty
    sw = rp.software_table().set_index("package")["version"]
    assert sw["pandas"] == pd.__version__ and rp.version("no-such-package-xyz") == "not installed"
    assert "profile **`smoke`** at commit `" in rp.build_text("smoke")
