"""The data chapter's tables and figures from a constructed summary and splits: no database needed."""
import matplotlib
import numpy as np
import pandas as pd

from ecglib import data
from ecglib.evidence import datasets as ds

matplotlib.use("Agg")
SUMMARY = {"mitdb": {"DS1": {"classes": {"N": 450, "S": 10, "V": 30, "F": 4, "Q": 2}},
                     "DS2": {"classes": {"N": 440, "S": 20, "V": 30, "F": 3, "Q": 1}}},
           "cinc2017": {"all": {"N": 10}, "train": {"N": 7, "A": 2, "O": 3, "~": 1},
                        "test": {"N": 2, "A": 1, "O": 1, "~": 1}}}


def test_class_counts_tables_and_text():
    counts = ds.class_counts(SUMMARY)
    t = ds.count_table(counts, "MIT-BIH")
    assert list(t.columns) == ["set"] + data.AAMI_CLASSES + ["total"] and t["total"].tolist() == [496, 494]
    assert ds.count_table(counts, "CinC 2017")["total"].tolist() == [13, 5]   # "all" is not a set
    assert "45 to 1" in ds.imbalance_text(SUMMARY) and "2.0 times as many S beats" in ds.imbalance_text(SUMMARY)
    assert ds.fig_class_counts(counts) is not None


def test_example_figures_from_constructed_splits():
    rng = np.random.default_rng(0)
    beats = data.Split(X=rng.normal(size=(10, 1, 36)).astype("float32"), y=np.arange(10) % 5,
                       meta=pd.DataFrame({"aami": [data.AAMI_CLASSES[i % 5] for i in range(10)],
                                          "record": ["100"] * 10, "symbol": ["N"] * 10}),
                       classes=data.AAMI_CLASSES, fs=50.0)
    assert ds.fig_beats(beats, 2, rng) is not None
    n = 8
    strips = data.Split(X=rng.normal(size=(n, 1, 600)).astype("float32"), y=np.arange(n) % 4,
                        meta=pd.DataFrame({"record": [f"A{i}" for i in range(n)], "label": [data.CINC_CLASSES[i % 4] for i in range(n)],
                                           "length_s": [30.0] * (n - 1) + [60.0]}),
                        classes=data.CINC_CLASSES, fs=10.0, lengths=np.array([300] * (n - 1) + [600]))
    meta = ds.lengths({"train": strips})
    assert ds.lengths_text(meta, {"train": strips}, 10).startswith("88% of the records last 30 s; the longest lasts 60.0 s")
    assert ds.fig_lengths(meta) is not None and ds.fig_strips(strips, rng) is not None
