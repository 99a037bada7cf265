"""The reproducibility chapter: how this build was made (commit, machine), which runs the store holds and where
they came from, the compute behind each chapter, the wall time and parameters of each chapter, and the software
versions.

Compute is counted from each run's provenance.wall_s (the whole run: data preparation, the training loop, the final
evaluations and probes; what training it again costs), not train_s (the training loop alone). A CPU run held
provenance.threads cores for that time (the process executor trains one run per core, one thread each), so its CPU
core-hours are wall_s x threads; a run on a GPU counts its wall time as GPU hours."""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from .. import experiments

PACKAGES = ["ecglib", "torch", "numpy", "scipy", "pandas", "scikit-learn", "wfdb", "matplotlib", "seaborn",
            "papermill", "jupytext", "jupyter-book", "sphinx", "myst-nb", "ray"]


def build_text(profile: str) -> str:
    import torch
    commit = experiments.git_commit()
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"CPU ({platform.processor() or platform.machine()})")
    state = " (with uncommitted changes)" if commit.endswith("-dirty") else ""
    return (f"This book was built with profile **`{profile}`** at commit `{commit.removesuffix('-dirty')}`{state}, on "
            f"{platform.system()} {platform.release()}, {os.cpu_count()} CPU cores, compute device {device}.")


COMPUTE = ["CPU core-hours", "GPU hours"]


def compute(runs: pd.DataFrame) -> dict:
    """CPU core-hours (wall_s x threads of the runs on a CPU) and GPU hours (wall_s of the others) of `runs`."""
    cpu = runs["device"].astype(str).str.startswith("cpu")
    # threads unknown (records from before runs stored it): counted as 1
    threads = pd.to_numeric(runs["threads"], errors="coerce").fillna(1) if "threads" in runs else 1
    return {"CPU core-hours": float((runs["wall_s"] * threads)[cpu].sum() / 3600),
            "GPU hours": float(runs["wall_s"][~cpu].sum() / 3600)}


def tally(values) -> str:
    """'a (3), b (1)': each value with its number of runs, the most common first."""
    return ", ".join(f"{v} ({n})" for v, n in pd.Series(values, dtype=object).fillna("unknown").value_counts().items())


def runs_by_device(runs: pd.DataFrame) -> pd.DataFrame:
    """Stored runs per device, torch thread count and training-code version (certified-equivalent versions as
    one): how many, how many diverged, their compute."""
    by = ["device", "threads", "code"]
    if not len(runs):
        return pd.DataFrame(columns=[*by, "runs", "diverged", *COMPUTE])
    from ecglib.versions import canonical
    threads = runs["threads"] if "threads" in runs else pd.Series(float("nan"), index=runs.index)
    runs = runs.assign(code=canonical(runs["code"]).to_numpy(),
                       threads=threads.map(lambda t: "unknown" if pd.isna(t) else int(t)))
    rows = [{**dict(zip(by, group)), "runs": len(g), "diverged": int((g["status"] == "diverged").sum()), **compute(g)}
            for group, g in runs.groupby(by, dropna=False)]
    return pd.DataFrame(rows, columns=[*by, "runs", "diverged", *COMPUTE])


def runs_read(folder, order=()) -> dict[str, list[str]]:
    """{chapter: keys of the stored runs it read}, from the <chapter>.runs.txt logs `python -m ecglib build` leaves
    in _executed/ (experiments.RUNS_LOG); chapters in `order` (the book's) first, each key once."""
    logs = {p.name.removesuffix(".runs.txt"): p for p in Path(folder).glob("*.runs.txt")
            if not p.name.endswith(".partial.runs.txt")}   # a chapter that failed is not part of the book
    names = [c for c in order if c in logs] + sorted(set(logs) - set(order))
    return {c: list(dict.fromkeys(logs[c].read_text().split())) for c in names}


TOTAL = "the book (each run once)"


def runs_of(reads: dict[str, list[str]], runs: pd.DataFrame) -> pd.DataFrame:
    """The stored runs some chapter read; the whole store when no chapter left a list (executed outside a build)."""
    if not any(reads.values()):
        return runs
    return runs[runs["key"].isin({k for keys in reads.values() for k in keys})]


def compute_table(reads: dict[str, list[str]], runs: pd.DataFrame) -> pd.DataFrame:
    """Per chapter that read stored runs: how many, how many of them no earlier chapter read ('new runs': each run
    is charged to the first chapter that read it, so the column sums to the total), how many are no longer in the
    store, their compute (see the module docstring), devices and training-code versions; a last row over the union
    of the chapters' runs, a run read by several chapters counted once."""
    columns = ["chapter", "runs read", "new runs", "missing", *COMPUTE, "devices", "code versions"]
    from ecglib.versions import canonical
    runs = runs.drop_duplicates("key").set_index("key")
    runs = runs.assign(code=canonical(runs["code"]).to_numpy())

    def row(name: str, keys: list[str], new: int) -> dict:
        found = runs.loc[runs.index.intersection(keys)]
        return {"chapter": name, "runs read": len(keys), "new runs": new, "missing": len(keys) - len(found),
                **compute(found), "devices": tally(found["device"]), "code versions": tally(found["code"])}

    seen: dict[str, None] = {}   # the union, in reading order
    rows = []
    for name, keys in reads.items():
        if keys:
            rows.append(row(name, keys, sum(k not in seen for k in keys)))
            seen.update(dict.fromkeys(keys))
    if seen:
        rows.append(row(TOTAL, list(seen), len(seen)))
    return pd.DataFrame(rows, columns=columns)


def compute_text(reads: dict[str, list[str]], runs: pd.DataFrame) -> str:
    """The totals in words: runs, compute, how much of it the training loop took, and what the store holds beyond."""
    book = runs_of(reads, runs) if any(reads.values()) else runs.iloc[0:0]
    if not len(book):
        return ("*No chapter of this build read a stored run (or the chapters were executed outside "
                "`python -m ecglib build`, which records the runs each one reads).*")
    c = compute(book)
    loop = book["train_s"].sum() / book["wall_s"].sum() if "train_s" in book and book["wall_s"].sum() else float("nan")
    rest = len(set(runs["key"]) - set(book["key"]))
    unknown = int(book["threads"].isna().sum()) if "threads" in book else len(book)
    return (f"The book rests on **{len(book)} stored runs**: {c['CPU core-hours']:.2f} CPU core-hours and "
            f"{c['GPU hours']:.2f} GPU hours of compute, of which the training loop itself took {loop:.0%} (the rest "
            f"is data preparation, the final evaluations and the probes). The store holds {rest} further run"
            f"{'' if rest == 1 else 's'} that no chapter of this build read."
            + (f" {unknown} of the runs were stored before runs recorded their thread count: they count as one "
               "thread, so the CPU core-hours are a lower bound." if unknown else ""))


def store_only_text(runtimes: dict) -> str:
    """Whether this build trained anything: chapters executed with --store-only could not."""
    flags = [bool(r.get("store_only")) for r in runtimes.values()]
    if flags and all(flags):
        return "Every chapter was executed with `--store-only`: this build trained nothing; it read the store."
    if any(flags):
        return (f"{sum(flags)} of {len(flags)} chapters were executed with `--store-only` (trained nothing); the "
                "others trained any run the store lacked.")
    return "Chapters trained any run the store lacked (a build with `--store-only` trains nothing)."


def runtimes_table(runtimes: dict) -> pd.DataFrame:
    """One row per chapter of _executed/runtimes.json: profile, minutes, when it finished."""
    return pd.DataFrame([{"chapter": name, "profile": r.get("profile"), "minutes": r.get("seconds", float("nan")) / 60,
                          "finished (UTC)": r.get("finished_at")} for name, r in runtimes.items()],
                        columns=["chapter", "profile", "minutes", "finished (UTC)"])


def parameters_table(runtimes: dict) -> pd.DataFrame:
    """Every chapter's parameters in this build (profile values with overrides applied), as JSON values."""
    return pd.DataFrame([{"chapter": name, "parameter": k, "value": json.dumps(v)}
                         for name, r in runtimes.items() for k, v in (r.get("parameters") or {}).items()],
                        columns=["chapter", "parameter", "value"])


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def software_table() -> pd.DataFrame:
    return pd.DataFrame([{"package": "python", "version": platform.python_version()}]
                        + [{"package": p, "version": version(p)} for p in PACKAGES])
