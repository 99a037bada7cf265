"""The pattern-span task: shapes, balance, determinism, and that the label is what the rule says."""
import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from ecglib import synthetic
from ecglib.synthetic import PERIOD, min_length, pattern_samples, pattern_span_splits


def _rule(signs: str, span: int) -> int:
    """Brute force: some `span` positive cycles immediately followed by a negative one."""
    return int(any(signs[i:i + span] == "+" * span and signs[i + span] == "-" for i in range(len(signs) - span)))


@pytest.fixture(scope="module")
def splits():
    return pattern_span_splits(span=3, length=48 * PERIOD, n_train=200, seed=7)


def test_shapes_and_sizes(splits):
    assert set(splits) == {"train", "val", "test"}
    for name, n in (("train", 200), ("val", 50), ("test", 50)):
        s = splits[name]
        assert s.X.shape == (n, 1, 48 * PERIOD) and s.X.dtype == np.float32
        assert s.y.shape == (n,) and s.y.dtype == np.int64
        assert len(s.meta) == n and {"signs", "pattern_cycle", "label"} <= set(s.meta.columns)
        assert s.classes == ["absent", "present"] and s.fs == 1.0
        assert np.isfinite(s.X).all()


def test_classes_are_balanced(splits):
    for s in splits.values():
        assert (s.y == 1).sum() == (s.y == 0).sum()


def test_same_seed_same_data_other_seed_other_data(splits):
    again = pattern_span_splits(span=3, length=48 * PERIOD, n_train=200, seed=7)
    other = pattern_span_splits(span=3, length=48 * PERIOD, n_train=200, seed=8)
    for name in splits:
        np.testing.assert_array_equal(splits[name].X, again[name].X)
        np.testing.assert_array_equal(splits[name].y, again[name].y)
        assert not np.array_equal(splits[name].X, other[name].X)
    assert not set(splits["train"].meta.signs) & set(splits["test"].meta.signs)


@pytest.mark.parametrize("span", [1, 2, 3, 6])
def test_label_follows_the_rule(span):
    s = pattern_span_splits(span=span, length=min_length(span) + 5 * PERIOD, n_train=120, seed=span)["train"]
    assert [_rule(signs, span) for signs in s.meta.signs] == s.y.tolist()
    for signs, start, y in zip(s.meta.signs, s.meta.pattern_cycle, s.y):
        if y:
            assert signs[start:start + span + 1] == "+" * span + "-"
        else:
            assert start == -1


def test_signal_carries_the_cycle_signs():
    s = pattern_span_splits(span=3, length=40 * PERIOD + 3, n_train=40, seed=1, noise=0.0)["train"]
    for x, signs in zip(s.X[:, 0], s.meta.signs):
        cycles = x[: len(signs) * PERIOD].reshape(len(signs), PERIOD).sum(axis=1)
        np.testing.assert_array_equal(np.sign(cycles).astype(int), ["-0+".index(c) - 1 for c in signs])
        assert np.all(x[len(signs) * PERIOD:] == 0)


def test_a_window_shorter_than_the_pattern_is_at_chance():
    # Counts of every run of up to w cycle signs, fed to a linear classifier: with w = span + 1 the
    # pattern is visible, with w = span the classes look the same.
    span = 3
    s = pattern_span_splits(span=span, length=40 * PERIOD, n_train=2000, seed=0)

    def accuracy(w):
        counts = CountVectorizer(analyzer="char", ngram_range=(1, w), lowercase=False)
        clf = LogisticRegression(max_iter=2000, C=10.0)
        clf.fit(counts.fit_transform(s["train"].meta.signs), s["train"].y)
        return clf.score(counts.transform(s["test"].meta.signs), s["test"].y)

    assert accuracy(span) < 0.6
    assert accuracy(span + 1) > 0.97


def test_pattern_length_in_samples():
    assert pattern_samples(3) == 4 * PERIOD
    assert pattern_samples(3, period=10) == 40


@pytest.mark.parametrize("kwargs, word", [
    ({"span": 0}, "span"), ({"span": 2.5}, "span"), ({"n_train": 2}, "n_train"),
    ({"length": 10}, "length"), ({"period": 1}, "period"), ({"noise": -1.0}, "noise"),
])
def test_bad_input_is_named(kwargs, word):
    args = {"span": 3, "length": 48 * PERIOD, "n_train": 20, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=word):
        pattern_span_splits(**args)


def test_lag_task_label_is_the_sign_under_the_marker_and_nothing_else():
    from ecglib.synthetic import lag_splits
    s = lag_splits(lag=7, length=30, n_train=400, seed=1)
    X, y = s["train"].X, s["train"].y
    assert X.shape == (400, 2, 30) and y.mean() == 0.5 and len(s["test"].y) == 100
    assert (X[:, 1].argmax(1) == 22).all() and (X[:, 1].sum(1) == 1).all()
    assert ((X[:, 0, 22] > 0) == (y == 1)).all() and (np.abs(X[:, 0, 22]) >= 0.5).all()
    # every other step is noise: a classifier that does not see step 22 is at chance
    rest = np.delete(X[:, 0], 22, axis=1)
    test = np.delete(s["test"].X[:, 0], 22, axis=1)
    assert LogisticRegression().fit(rest, y).score(test, s["test"].y) < 0.65
    assert np.array_equal(lag_splits(7, 30, 400, 1)["val"].X, s["val"].X)
    with pytest.raises(ValueError, match="length 5 must be >= lag \\+ 1"):
        lag_splits(lag=5, length=5, n_train=8, seed=0)


def test_product_task_needs_the_product():
    """Each channel's sign alone says nothing about the label; their product says everything."""

    s = synthetic.product_splits(2, 96, 2000, seed=0)
    tr, te = s["train"], s["test"]
    assert tr.X.shape == (2000, 2, 96) and te.X.shape == (500, 2, 96)
    assert abs(tr.y.mean() - 0.5) < 0.01

    def signs(split):   # the signed area of each channel: what an additive model can read
        return np.sign(split.X.sum(axis=2))

    additive = LogisticRegression().fit(signs(tr), tr.y).score(signs(te), te.y)
    product = LogisticRegression().fit(signs(tr).prod(1, keepdims=True), tr.y).score(
        signs(te).prod(1, keepdims=True), te.y)
    assert additive < 0.6 and product > 0.8
    assert (np.sign(te.meta.a * te.meta.b) > 0).astype(int).tolist() == te.y.tolist()


def test_product_task_rejects_a_length_too_short():
    with pytest.raises(ValueError, match="too short for span 3"):
        synthetic.product_splits(3, 24, 100, seed=0)
