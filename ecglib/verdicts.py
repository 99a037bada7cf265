"""The book's one verdict rule: an effect, its 95% CI, and a practical margin fixed before the data.

Equivalence-testing logic (Lakens 2017, "Equivalence tests"). Each claim predicts an effect in one
direction; MARGINS (below) says, per claim and quantity, how large an effect has to be before it
matters in practice. Then, for a claimed direction "above" (read "below" with signs flipped):

- supported:    the CI lies entirely above zero AND the mean lies beyond the margin (a detectable
                effect whose best estimate is large enough to matter);
- refuted:      the CI lies inside the no-effect band (-margin, +margin) (equivalence: any effect
                is negligible), or entirely below zero (the opposite of the claim);
- inconclusive: anything else, e.g. a CI straddling zero that reaches beyond the margin, a real
                effect whose size the CI cannot place against the margin, a missing (NaN) CI or
                fewer runs than MIN_RUNS.

`not_worse` is the non-inferiority form, for parts of a claim such as "the LSTM is not worse than
the CNN". A claim with several parts joins them with `all_of`; one claim judged on several databases
or tasks is joined with `combine`. Every Judgement carries its reason as a sentence the book prints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

VERDICTS = ("supported", "refuted", "depends", "inconclusive")
MIN_RUNS = 3  # a t interval from 2 values has 1 degree of freedom: too wide and too fragile to decide


@dataclass(frozen=True)
class Margin:
    value: float  # the smallest effect that matters, in `unit`; |effect| below it counts as no effect
    unit: str
    why: str


# One table, declared before the data: claim -> quantity -> margin. Chapters name a quantity, never a number.
_F1 = "macro-F1"
# The field's score: macro-F1 over N, S, V, F on MIT-BIH (Q left out), the challenge F1 over N, A, O on CinC 2017.
_SCORE = "test score (macro-F1 over the scored classes)"
MARGINS: dict[str, dict[str, Margin]] = {
    "C1": {
        "train_loss": Margin(0.05, "cross-entropy", "about 5% of the loss of a 5-class model at chance (ln 5 = 1.61) "
                                                    "and larger than the seed-to-seed spread of a converged loss"),
        "fail_share": Margin(0.2, "share of seeds", "one seed in five: in the five-seed comparisons a single "
                                                    "seed that fails to train is the smallest difference that counts"),
        "layer_decay": Margin(0.5, "log10", "half an order of magnitude: a factor ~3 between first and last layer, "
                                            "beyond what layer-size differences alone produce"),
    },
    "C2": {"gap": Margin(0.02, _SCORE, "two points of the score: about the seed-to-seed spread of a test score")},
    "C3": {"test_acc": Margin(0.05, "accuracy", "five points on a balanced two-class task, well clear of chance "
                                                "fluctuations on its test set")},
    "C4": {"test_score": Margin(0.02, _SCORE, "two points of the test score: about the seed-to-seed spread of a "
                                             "test score")},
    "C5": {"gap": Margin(0.02, _SCORE, "two points of score of overfitting gap: about the seed-to-seed spread of a "
                                    "score, the same margin as C2's gap"),
           "fail_share": Margin(0.2, "share of seeds", "one seed in five, as for C1's failures")},
    "C6": {"gap": Margin(0.02, _SCORE, "two points of the score: about the seed-to-seed spread of a test score")},
    "C7": {"test_acc": Margin(0.05, "accuracy", "five points on a balanced two-class task"),
           "chance": Margin(0.1, "accuracy", "a model blind to the pattern counts as at chance (0.5) unless it is "
                                             "ten points above it: the 'below 0.6' the features chapter stated before "
                                             "its first run, over four standard errors of a chance accuracy on "
                                             "the default profile's 500 test sequences")},
    "C8": {"orders": Margin(1.0, "log10", "one order of magnitude: a tenfold difference in gradient"),
           "acc_drop": Margin(0.05, "accuracy", "five points on the balanced two-class lag task, as for C3 and C7: "
                                                "well clear of chance fluctuations on its test set")},
    "C9": {"gap": Margin(0.02, _SCORE, "two points of the score: about the seed-to-seed spread of a test score"),
           "test_score": Margin(0.02, _SCORE, "two points of test score lost would be a real price")},
    "C10": {"param_ratio": Margin(0.0, "ratio - 1", "an exact count: any excess is an excess")},
    "C11": {"layers": Margin(0.5, "layers", "half a layer: gates save a layer in at least half the seeds")},
    "C12": {"log_speedup": Margin(0.18, "log speed-up", "a 1.2x speed-up (log 1.2 = 0.18): less is within the noise "
                                                         "of timing on a shared machine"),
            "drop": Margin(0.02, _F1, "two points of macro-F1"),
            "test_score": Margin(0.02, "challenge F1", "two points of the challenge score (mean F1 of N, A, O): about "
                                                       "the seed-to-seed spread of a test score")},
    "C13": {"log2_depth": Margin(1.0, "doublings of depth", "one doubling: the step of the depth grids, so tasks "
                                 "that saturate one grid step apart do not differ 'heavily'")},
}


def margin(claim: str, quantity: str) -> Margin:
    try:
        return MARGINS[claim][quantity]
    except KeyError:
        known = ", ".join(f"{c}/{q}" for c, qs in MARGINS.items() for q in qs)
        raise KeyError(f"no margin declared for {claim}/{quantity}; declare it in ecglib.verdicts.MARGINS "
                       f"(declared: {known})") from None


@dataclass(frozen=True)
class Judgement:
    verdict: str
    reason: str
    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan
    margin: float = math.nan
    n: int | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; valid: {', '.join(VERDICTS)}")


def _num(x) -> float:
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):
        return math.nan


def _f(x: float) -> str:
    return f"{x:.3g}"


def _unusable(mean, low, high, n, min_runs, what) -> str | None:
    """Why no verdict can be read from this estimate, or None. Says exactly what is missing."""
    if n is not None and n < min_runs:
        return f"{what}: {n} run(s) or pair(s), a verdict needs at least {min_runs}"
    if math.isnan(mean):
        return (f"{what}: undefined from {n} values (constant or missing values)" if n
                else f"{what}: no estimate (no finished runs to compare)")
    if math.isnan(low) or math.isnan(high):
        return f"{what}: no confidence interval could be computed from {n} values" if n else \
            f"{what}: no confidence interval"
    return None


def judge(mean, low, high, n: int | None, m: Margin, claimed: str = "above", what: str = "the effect",
          min_runs: int = MIN_RUNS) -> Judgement:
    """The verdict on one effect (mean, CI low, CI high, n runs; n=None for an exact number)."""
    if claimed not in ("above", "below"):
        raise ValueError(f"claimed must be 'above' or 'below', got {claimed!r}")
    mean, low, high = _num(mean), _num(low), _num(high)
    args = dict(mean=mean, low=low, high=high, margin=m.value, n=n)
    why = _unusable(mean, low, high, n, min_runs, what)
    if why:
        return Judgement("inconclusive", why, **args)
    s = 1 if claimed == "above" else -1
    lo, hi, mu = sorted((s * low, s * high)) + [s * mean]  # in the claimed direction's frame: claim = positive
    ci = f"{what} {_f(mean)} [{_f(low)}, {_f(high)}]"
    band = f"the no-effect band ±{_f(m.value)} {m.unit}"
    side = "above" if s == 1 else "below"
    if lo > 0 and mu > m.value:
        return Judgement("supported", f"{ci}: the CI lies {side} zero and the mean beyond the margin "
                                      f"{_f(m.value)} {m.unit}", **args)
    if hi < 0:
        return Judgement("refuted", f"{ci}: the CI lies on the opposite side of zero to the claim", **args)
    if -m.value < lo and hi < m.value:
        return Judgement("refuted", f"{ci}: the CI lies inside {band}, so any effect is negligible", **args)
    if lo > 0:
        return Judgement("inconclusive", f"{ci}: the CI lies {side} zero but the mean is within {band}", **args)
    return Judgement("inconclusive", f"{ci}: the CI straddles zero and reaches beyond {band}", **args)


def not_worse(mean, low, high, n: int | None, m: Margin, what: str = "the difference",
              min_runs: int = MIN_RUNS) -> Judgement:
    """Non-inferiority: supported when the CI lies above -margin, refuted when it lies below -margin."""
    mean, low, high = _num(mean), _num(low), _num(high)
    args = dict(mean=mean, low=low, high=high, margin=m.value, n=n)
    why = _unusable(mean, low, high, n, min_runs, what)
    if why:
        return Judgement("inconclusive", why, **args)
    ci = f"{what} {_f(mean)} [{_f(low)}, {_f(high)}]"
    if low > -m.value:
        return Judgement("supported", f"{ci}: not worse by more than the margin {_f(m.value)} {m.unit}", **args)
    if high < -m.value:
        return Judgement("refuted", f"{ci}: worse by more than the margin {_f(m.value)} {m.unit}", **args)
    return Judgement("inconclusive", f"{ci}: the CI reaches below -{_f(m.value)} {m.unit} and above it", **args)


def all_of(parts: dict[str, Judgement]) -> Judgement:
    """A claim with several parts: supported if every part is, refuted if any part is, else inconclusive.

    The estimate carried is the first part's (the claim's headline effect)."""
    if not parts:
        raise ValueError("all_of needs at least one part")
    verdicts = {j.verdict for j in parts.values()}
    verdict = ("refuted" if "refuted" in verdicts else "supported" if verdicts == {"supported"}
               else "inconclusive")
    first = next(iter(parts.values()))
    reason = "; ".join(f"{name} {j.verdict} ({j.reason})" for name, j in parts.items())
    return Judgement(verdict, reason, first.mean, first.low, first.high, first.margin, first.n)


def combine(per_setting: dict[str, Judgement], headline: str | None = None) -> Judgement:
    """One claim judged on several databases or tasks.

    All decisive verdicts agree -> that verdict (settings left inconclusive are named in the reason);
    supported in one setting and refuted in another -> "depends"; nothing decisive -> "inconclusive".
    The estimate carried is `headline`'s (default: the first setting's).
    """
    if not per_setting:
        raise ValueError("combine needs at least one setting")
    decisive = {j.verdict for j in per_setting.values() if j.verdict != "inconclusive"}
    open_ = [name for name, j in per_setting.items() if j.verdict == "inconclusive"]
    if not decisive:
        verdict, lead = "inconclusive", "inconclusive in every setting"
    elif len(decisive) > 1:
        verdict, lead = "depends", "the settings disagree decisively, so the answer depends on the task"
    else:
        verdict = decisive.pop()
        lead = (f"{verdict} wherever decisive; left open by {', '.join(open_)}" if open_
                else f"{verdict} in every setting")
    reason = lead + ". " + " ".join(f"{name}: {j.verdict} ({j.reason})." for name, j in per_setting.items())
    h = per_setting[headline] if headline else next(iter(per_setting.values()))
    return Judgement(verdict, reason, h.mean, h.low, h.high, h.margin, h.n)
