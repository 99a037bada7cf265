"""The analysis behind each chapter: stored runs in, tables, measures and verdicts out.

One module per chapter (depth, overfitting, features); each defines the sweeps its chapter runs,
the per-run measures read from stored records, and one function per verdict, decided by
`ecglib.verdicts`. Chapters keep the prose and call these. Helpers shared by chapters live here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

DATASETS = {"mitdb": "MIT-BIH", "cinc2017": "CinC 2017"}


def keys(*frames: pd.DataFrame) -> list[str]:
    """The store keys behind some tables, sorted, each once."""
    return sorted({k for f in frames for k in f["key"]})
