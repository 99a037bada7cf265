"""The reproducibility chapter: how this build was made (commit, machine), which runs the store holds and where
they came from, the wall time and parameters of each chapter, and the software versions."""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata

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


def runs_by_device(runs: pd.DataFrame) -> pd.DataFrame:
    """Stored runs per device and commit: how many, how many diverged, training hours."""
    if not len(runs):
        return pd.DataFrame(columns=["device", "commit", "runs", "diverged", "training_hours"])
    return runs.groupby(["device", "commit"], dropna=False).agg(
        runs=("key", "size"), diverged=("status", lambda s: int((s == "diverged").sum())),
        training_hours=("wall_s", lambda s: s.sum() / 3600)).reset_index()


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
