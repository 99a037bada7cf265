"""The seeds' pattern-span example as a controlled classification task.

Answer 2 of the seed question pictures "a very simple signal where after three positive cycles you
get a negative cycle" and argues that a CNN needs several layers before it sees the whole pattern,
while one LSTM layer sees it at once. This module builds that signal so the claim can be tested.

A sequence is a train of cycles, `PERIOD` samples each. Every cycle is a smooth bump that is
positive (+1), negative (-1) or absent (0), with a random amplitude, plus Gaussian noise. The label
is one rule on the cycle signs:

    positive  iff  some `span` consecutive positive cycles are immediately followed by a negative one

so the pattern covers span + 1 cycles, (span + 1) * PERIOD samples. It sits at a random position.

Every sequence, of either class, holds the same four blocks at random places in a random background:
two runs of exactly `span` positives and two runs of `span - 1` positives, each closed by a 0 or -1
cycle, with exactly one -1 among the four closers. In a positive sequence the -1 closes a span-run
(the pattern), in a negative one it closes a (span - 1)-run (the near miss), and the other span-runs
end in 0 (the pattern without its negative cycle). Background runs of positives are at most
span - 2 long, so nothing else matches. The only thing that differs between the classes is whether
the lone -1 closer follows span or span - 1 positives, and telling those apart needs span + 1
consecutive cycles: any window of `span` cycles or fewer sees the same things, equally often, in
both classes, so a detector that sees less than the pattern is at chance. Classes are balanced.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ecglib.data import Split

PERIOD = 8          # samples per cycle: a pattern of span + 1 cycles spans (span + 1) * PERIOD samples
NOISE = 0.3         # standard deviation of the additive Gaussian noise (bump peak amplitude is ~1)
CLASSES = ["absent", "present"]
_SPLITS = ("train", "val", "test")
_N_BLOCKS = 4       # two span-runs and two (span - 1)-runs per sequence


def pattern_samples(span: int, period: int = PERIOD) -> int:
    """Length in samples of the pattern (span positive cycles and the negative one)."""
    return (span + 1) * period


def min_length(span: int, period: int = PERIOD) -> int:
    """The shortest sequence that holds the four blocks with a background cycle between them."""
    return (_N_BLOCKS * (span + 1) + _N_BLOCKS - 1) * period


def _background(rng: np.random.Generator, n: int, span: int, closed: bool) -> list[int]:
    """Random cycles whose positive runs stay shorter than span - 1, so they never match the rule;
    `closed` ends on a non-positive cycle so that the block after it starts a fresh run."""
    cycles, run = [], 0
    for s in rng.integers(-1, 2, size=n):
        s = 0 if s == 1 and run >= span - 2 else int(s)
        run = run + 1 if s == 1 else 0
        cycles.append(s)
    if closed and cycles and cycles[-1] == 1:
        cycles[-1] = 0
    return cycles


def _signs(rng: np.random.Generator, n_cycles: int, span: int, present: bool) -> tuple[np.ndarray, int]:
    """One sequence of cycle signs and the cycle where the pattern starts (-1 when absent)."""
    runs = rng.permutation([span, span, span - 1, span - 1])
    closers = np.zeros(_N_BLOCKS, dtype=int)
    closers[rng.choice(np.flatnonzero(runs == (span if present else span - 1)))] = -1
    free = n_cycles - int((runs + 1).sum()) - (_N_BLOCKS - 1)
    gaps = rng.multinomial(free, np.full(_N_BLOCKS + 1, 1 / (_N_BLOCKS + 1)))
    gaps[1:-1] += 1  # at least one background cycle between blocks keeps them apart
    cycles, start = _background(rng, gaps[0], span, closed=True), -1
    for i, (run, closer) in enumerate(zip(runs, closers)):
        if closer == -1 and run == span:
            start = len(cycles)
        cycles += [1] * int(run) + [int(closer)]
        cycles += _background(rng, gaps[i + 1], span, closed=i < _N_BLOCKS - 1)
    return np.array(cycles, dtype=np.int8), start


def _signal(rng: np.random.Generator, signs: np.ndarray, length: int, period: int, noise: float) -> np.ndarray:
    bump = np.sin(np.pi * (np.arange(period) + 0.5) / period) ** 2
    amplitude = signs * rng.uniform(0.7, 1.3, size=len(signs))
    x = np.zeros(length, dtype=np.float64)
    x[: len(signs) * period] = (amplitude[:, None] * bump[None, :]).ravel()
    return (x + noise * rng.standard_normal(length)).astype(np.float32)


def _split(rng: np.random.Generator, n: int, span: int, length: int, period: int, noise: float) -> Split:
    n_cycles = length // period
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)  # balanced: half absent, half present
    X = np.empty((n, 1, length), dtype=np.float32)
    rows = []
    for i, present in enumerate(y):
        signs, start = _signs(rng, n_cycles, span, bool(present))
        X[i, 0] = _signal(rng, signs, length, period, noise)
        rows.append({"signs": "".join("-0+"[s + 1] for s in signs), "pattern_cycle": start,
                     "label": CLASSES[present]})
    return Split(X=X, y=y, meta=pd.DataFrame(rows), classes=list(CLASSES), fs=1.0)


def pattern_span_splits(span: int, length: int, n_train: int, seed: int, *, period: int = PERIOD,
                        noise: float = NOISE) -> dict[str, Split]:
    """Train, val and test splits of the pattern-span task; val and test hold n_train // 4 each.

    X is float32 (n, 1, length), y is 1 where the pattern is present. meta has one row per sequence:
    `signs` (the cycle signs as a string of '+', '0', '-'), `pattern_cycle` (the cycle where the
    pattern starts, -1 when absent) and `label`. Everything follows from `seed`.
    """
    for name, value, least in (("span", span, 1), ("period", period, 2), ("n_train", n_train, 4)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if length < min_length(span, period):
        raise ValueError(
            f"length {length} is too short for span {span}: the task needs at least "
            f"{min_length(span, period)} samples ({_N_BLOCKS} blocks of span + 1 = {span + 1} cycles of "
            f"{period} samples, with a cycle between blocks)"
        )
    sizes = {"train": n_train, "val": max(n_train // 4, 2), "test": max(n_train // 4, 2)}
    streams = np.random.SeedSequence(seed).spawn(len(_SPLITS))
    return {name: _split(np.random.default_rng(ss), sizes[name], span, length, period, noise)
            for name, ss in zip(_SPLITS, streams)}


# ---- the lag task: how far back one layer can carry a fact (claim C8's behavioural check) ----

LAG_CLASSES = ["negative", "positive"]


def lag_splits(lag: int, length: int, n_train: int, seed: int) -> dict[str, Split]:
    """Train, val and test splits (val and test n_train // 4 each) of a task whose label is fixed `lag` steps
    before the end: the adding problem of Hochreiter & Schmidhuber (1997) as a classification.

    Two channels: values drawn uniformly from [-1, 1] at every step, and a marker that is 1 at step
    length - 1 - lag and 0 elsewhere. The label is the sign of the value under the marker (its magnitude is
    at least 0.5, so no label rests on a value near 0). Everything else is noise. A model that reads its last
    state must carry that one value `lag` steps; nothing else in the sequence tells the classes apart.
    """
    for name, value, least in (("lag", lag, 0), ("length", length, 1), ("n_train", n_train, 4)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if lag >= length:
        raise ValueError(f"lag {lag} needs a sequence longer than it: length {length} must be >= lag + 1")
    sizes = {"train": n_train, "val": max(n_train // 4, 2), "test": max(n_train // 4, 2)}
    out = {}
    for name, ss in zip(_SPLITS, np.random.SeedSequence(seed).spawn(len(_SPLITS))):
        rng, n = np.random.default_rng(ss), sizes[name]
        y = rng.permutation(np.arange(n) % 2).astype(np.int64)   # balanced
        X = np.zeros((n, 2, length), dtype=np.float32)
        X[:, 0] = rng.uniform(-1, 1, size=(n, length))
        X[:, 0, length - 1 - lag] = (2 * y - 1) * rng.uniform(0.5, 1, size=n)
        X[:, 1, length - 1 - lag] = 1
        out[name] = Split(X=X, y=y, meta=pd.DataFrame({"label": [LAG_CLASSES[c] for c in y]}),
                          classes=list(LAG_CLASSES), fs=1.0)
    return out


# ---- the product task (C11: a label that needs a multiplicative interaction) ----

PRODUCT_CLASSES = ["differ", "agree"]


def product_splits(span: int, length: int, n_train: int, seed: int, *, period: int = PERIOD,
                   noise: float = NOISE) -> dict[str, Split]:
    """Train, val and test splits of the product task; val and test hold n_train // 4 each.

    Two channels. Channel 0 holds one bump of amplitude a at a random cycle, channel 1 one bump of amplitude b
    exactly `span` cycles later; a and b have independent random signs (magnitudes 0.7-1.3) and both channels
    carry Gaussian noise. The label is sign(a * b) > 0 ("agree"). Each sign alone is independent of the label, so
    any classifier that adds a function of channel 0 to a function of channel 1 is at chance: the label needs the
    product, and a model must see both bumps, (span + 1) * period samples, to form it. meta: a_cycle, a, b."""
    for name, value, least in (("span", span, 1), ("period", period, 2), ("n_train", n_train, 4)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    n_cycles = length // period
    if n_cycles < span + 1:
        raise ValueError(f"length {length} is too short for span {span}: the product task needs at least "
                         f"{pattern_samples(span, period)} samples (span + 1 = {span + 1} cycles of {period})")
    sizes = {"train": n_train, "val": max(n_train // 4, 2), "test": max(n_train // 4, 2)}
    bump = np.sin(np.pi * (np.arange(period) + 0.5) / period) ** 2
    out = {}
    for name, ss in zip(_SPLITS, np.random.SeedSequence(seed).spawn(len(_SPLITS))):
        rng, n = np.random.default_rng(ss), sizes[name]
        y = rng.permutation(np.arange(n) % 2).astype(np.int64)
        sign_a = rng.choice([-1.0, 1.0], size=n)
        a = sign_a * rng.uniform(0.7, 1.3, size=n)
        b = sign_a * np.where(y == 1, 1.0, -1.0) * rng.uniform(0.7, 1.3, size=n)
        start = rng.integers(0, n_cycles - span, size=n)
        X = (noise * rng.standard_normal((n, 2, length))).astype(np.float32)
        for i in range(n):
            X[i, 0, start[i] * period:(start[i] + 1) * period] += a[i] * bump
            X[i, 1, (start[i] + span) * period:(start[i] + span + 1) * period] += b[i] * bump
        out[name] = Split(X=X, y=y, meta=pd.DataFrame({"a_cycle": start, "a": a, "b": b}),
                          classes=list(PRODUCT_CLASSES), fs=1.0)
    return out
