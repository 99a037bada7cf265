"""The analysis behind each chapter: stored runs in, tables, measures and verdicts out.

One module per chapter (depth, overfitting, features); each defines the sweeps its chapter runs,
the per-run measures read from stored records, and one function per verdict, decided by
`ecglib.verdicts`. Chapters keep the prose and call these. Helpers shared by chapters live here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

DATASETS = {"mitdb": "MIT-BIH", "cinc2017": "CinC 2017"}


def collapsed(record: dict) -> bool:
    """True when a run predicts a single class on its whole test set (its confusion matrix has one column)."""
    confusion = (record.get("test") or {}).get("confusion")
    return confusion is not None and int((np.asarray(confusion).sum(0) > 0).sum()) == 1


def flag_collapsed(runs: pd.DataFrame, records: dict[str, dict]) -> pd.DataFrame:
    """runs with a boolean `collapsed` column: the store's when load_runs provides it, else read from records."""
    if "collapsed" in runs.columns:
        return runs.assign(collapsed=runs["collapsed"].fillna(False).astype(bool))
    return runs.assign(collapsed=[collapsed(records[k]) if k in records else False for k in runs["key"]])


def usable(runs: pd.DataFrame) -> pd.Series:
    """Runs whose metrics can enter a comparison: finished ("ok"), not collapsed, converged where flagged."""
    ok = runs["status"].eq("ok") if "status" in runs else pd.Series(True, index=runs.index)
    for flag, good in (("collapsed", False), ("converged", True)):
        if flag in runs.columns:
            ok &= runs[flag].fillna(not good).astype(bool).eq(good)
    return ok


def keys(*frames: pd.DataFrame) -> list[str]:
    """The store keys behind some tables, sorted, each once."""
    return sorted({k for f in frames for k in f["key"]})
