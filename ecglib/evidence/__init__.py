"""The analysis behind each chapter: stored runs in, tables, measures and verdicts out.

One module per chapter (depth, overfitting, features); each defines the sweeps its chapter runs,
the per-run measures read from stored records, and one function per verdict, decided by
`ecglib.verdicts`. Chapters keep the prose and call these. Helpers shared by chapters live here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

DATASETS = {"mitdb": "MIT-BIH", "cinc2017": "CinC 2017", "gunpoint": "GunPoint", "basicmotions": "BasicMotions",
            "product": "product task", "synthetic": "pattern span"}


def seed_list(seeds) -> list[int]:
    """A chapter's `seeds` parameter as a list: a count n means seeds 0..n-1."""
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def keys(*frames: pd.DataFrame) -> list[str]:
    """The store keys behind some tables, sorted, each once."""
    return sorted({k for f in frames for k in f["key"]})


SCHEDULES = {"plateau": "a one-epoch warm-up, then the rate cut 0.3x after 2 epochs without a better validation score",
             "onecycle": "a one-cycle schedule", "cosine": "cosine decay"}
SCORES = {"mitdb": "macro-F1 over N, S, V, F", "cinc2017": "challenge F1 over N, A, O", "synthetic": "macro-F1"}


def recipe(base: dict, lrs=None) -> str:
    """How a base config trains, in words read from the config itself (RunConfig's defaults where it is silent),
    so the text cannot drift from the code. `lrs`: the rates a sweep chose from per point (protocol.tune_lr)."""
    from ..experiments import RunConfig

    c = RunConfig(**base)
    stop = ("no early stopping" if c.patience is None else
            f"early stopping after {c.patience} epochs without a better validation {SCORES[c.dataset]}")
    rate = f"{c.lr:g}" if not lrs else "the rate validation chose from " + ", ".join(f"{v:g}" for v in lrs)
    return f"AdamW at {rate} in batches of {c.batch_size} with {SCHEDULES[c.schedule]}, {stop}"
