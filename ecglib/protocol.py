"""The training protocol's selection step: every family tuned on validation data only, with the same effort.

A comparison of model families is only as good as its weakest baseline (Melis et al. 2018: well-tuned LSTMs
beat newer models reported as better). So before any chapter judges a family, `select` searches its
hyperparameters on the validation split, never the test set, with the same number of candidates for every
family. Following Greff et al. (2017), who found the learning rate by far the most important hyperparameter and
interactions small enough to tune one at a time, the search is a coordinate search: the learning rate first,
then the readout, then one family-specific knob (the forget-gate bias of gated recurrent families,
Jozefowicz et al. 2015; weight decay for the others), each stage keeping the best value so far.

    sel = select({"dataset": "mitdb", "width": 32}, "lstm", depth=2, seeds=[0, 1, 2])
    sel.config          # base + the chosen values: feed it to experiments.sweep for the final runs
    sel.table           # every candidate: stage, values, mean validation score with its 95% CI, flags
    sel.tried           # "lr 0.001, 0.003, 0.01; readout mean, last, max; forget_bias 1, 0"
    final = run_sweep(sweep(sel.config, seed=range(5)))   # seeds 0-2 are the selection runs, reused

Selection runs are ordinary stored runs (the store trains each once), so the final runs of the chosen
candidate reuse them. The score that selects is the mean validation score over seeds; on MIT-BIH
inter-patient, seed s validates on DS1 fold s mod 5 (experiments.validation_fold), so the mean pools patients.

Gates: `usable` keeps the runs a verdict may read (finished, converged, not collapsed); `failed` names the
families and depths whose runs all failed even after selection, with what was tried; `remedy_sweeps` gives such a
family the standard remedies (REMEDIES) before the book calls it "failed to train".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecglib import experiments as ex
from ecglib.models import CONV_FAMILIES

LRS = (1e-3, 3e-3, 1e-2)
# Ordered stages per kind of family: (RunConfig field, values). A later stage's first value is the default the
# earlier stages ran with, so it is the incumbent and costs nothing new. Every kind adds the same number of
# candidates (CANDIDATES): the same effort for every family.
SEARCH = {
    "conv": [("lr", LRS), ("readout", ("mean", "max")), ("weight_decay", (1e-2, 1e-3, 1e-1))],
    "gated": [("lr", LRS), ("readout", ("mean", "last", "max")), ("forget_bias", (1.0, 0.0))],
    "rnn": [("lr", LRS), ("readout", ("mean", "last", "max")), ("weight_decay", (1e-2, 1e-1))],
}
CANDIDATES = 6
SELECT_BY = "val_score"     # the only metric selection reads
# What a family whose selected setting still failed to train gets next, before the book calls it "failed to
# train": the two standard answers to a recurrent net stuck on a plateau over a long input. Train longer at a
# rate that is not cut while the loss is flat (the plateau schedule cuts it after 2 flat epochs, so a run that
# has not left the plateau soon ends with almost no learning rate; a GRU on CinC left it after 18-23 epochs),
# and shorten the sequence. Numbers scale the selected setting's value; anything else replaces it.
REMEDIES = {"longer training": {"schedule": "cosine", "epochs": 2.0, "patience": 3.0},
            "half the sampling rate": {"fs": 0.5}}


def kind(family: str) -> str:
    if family in CONV_FAMILIES:
        return "conv"
    return "rnn" if family == "rnn" else "gated"


def stages(family: str) -> list[tuple[str, tuple]]:
    return SEARCH[kind(family)]


@dataclass
class Selection:
    family: str
    depth: int
    config: dict            # base + family, depth and the chosen values (no seed)
    table: pd.DataFrame     # one row per candidate: stage, the searched fields, mean, low, high, n, flags
    runs: pd.DataFrame      # every selection run (load_runs rows)
    tried: str              # the search in words, for "failed to train (tried: ...)"

    @property
    def chosen(self) -> dict:
        return {name: self.config[name] for name, _ in stages(self.family)}

    @property
    def failed(self) -> bool:
        """No usable run at the chosen values: the family did not train even after the search."""
        at = self.runs
        for name, value in self.chosen.items():
            at = at[at[name] == value]
        return not is_usable(at).any()


def _candidate_scores(runs: pd.DataFrame, name: str, values: tuple) -> pd.DataFrame:
    """Mean validation score of each value of `name` over seeds (in the order of `values`), with the counts a
    reader needs to trust it. Reads only SELECT_BY and the flags: test columns never enter selection."""
    from ecglib.stats import mean_ci

    rows = []
    for v in values:
        g = runs[runs[name] == v]
        mean, low, high = mean_ci(_selection_score(g))
        rows.append({"value": v, "mean": mean, "low": low, "high": high, "n": int(g[SELECT_BY].notna().sum()),
                     "converged": int(g["converged"].sum()), "collapsed": int(g["collapsed"].sum()),
                     "diverged": int((g["status"] == "diverged").sum())})
    return pd.DataFrame(rows)


def _selection_score(runs: pd.DataFrame) -> pd.Series:
    """The validation score selection ranks by, with every run a verdict could not read (diverged, unconverged,
    collapsed) scored 0: a candidate must train usable models to win, or it would be chosen and then leave its
    family with nothing the verdicts may read."""
    return runs[SELECT_BY].where(is_usable(runs), 0.0)


def _best(scores: pd.DataFrame) -> int:
    """Row of the best candidate: highest mean validation score; a NaN mean (every seed diverged) never wins;
    ties go to the earlier row, the incumbent."""
    means = scores["mean"].to_numpy(dtype=float)
    return 0 if np.all(np.isnan(means)) else int(np.nanargmax(means))


def select(base: dict, family: str, depth: int, seeds=(0, 1, 2), executor: str = "local", fresh: bool = False,
           progress: bool = True) -> Selection:
    """Coordinate search over stages(family) on validation data; every candidate trained with every seed."""
    plan = stages(family)
    current = {**base, "family": family, "depth": depth}
    for name, values in plan[1:]:   # later stages start from their incumbent (a value the base may set)
        current.setdefault(name, values[0])
    tables, all_runs = [], []
    for stage, (name, values) in enumerate(plan, 1):
        if stage > 1:   # the incumbent was trained in the stage before: first, so it wins ties
            values = (current[name],) + tuple(v for v in values if v != current[name])
        runs = ex.run_sweep([c for v in values for c in ex.sweep({**current, name: v}, seed=list(seeds))],
                            executor=executor, fresh=fresh, progress=progress)
        scores = _candidate_scores(runs, name, values)
        current[name] = values[_best(scores)]
        tables.append(scores.assign(stage=stage, searched=name))
        all_runs.append(runs)
    table = pd.concat(tables, ignore_index=True)[["stage", "searched", "value", "mean", "low", "high", "n",
                                                   "converged", "collapsed", "diverged"]]
    tried = "; ".join(f"{name} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in values)}"
                      for name, values in plan)
    return Selection(family=family, depth=depth, config=current, table=table,
                     runs=pd.concat(all_runs, ignore_index=True).drop_duplicates("key"), tried=tried)


def remedied(config: dict, remedy: dict) -> dict:
    """`config` with one remedy applied: a number scales the config's value (int fields stay ints; fs=None
    reads the dataset default), anything else replaces it."""
    out = dict(config)
    for name, change in remedy.items():
        if isinstance(change, (int, float)) and not isinstance(change, bool):
            value = out.get(name, ex.RunConfig.__dataclass_fields__[name].default)
            if name == "fs" and value is None:
                value = ex.DEFAULT_FS[out["dataset"]]
            if value is None:
                raise ValueError(f"remedy {remedy} scales {name}, which is None in {config}: give a value instead")
            out[name] = int(round(value * change)) if isinstance(value, int) else float(value * change)
        else:
            out[name] = change
    return out


def remedy_sweeps(config: dict, seeds, remedies: dict | None = None) -> dict[str, list]:
    """remedy name -> `config` (a failed family's selected setting) with that remedy, one run per seed."""
    return {name: ex.sweep(remedied(config, change), seed=list(seeds))
            for name, change in (REMEDIES if remedies is None else remedies).items()}


def describe_remedy(remedy: dict) -> str:
    """{'epochs': 2.0, 'schedule': 'cosine'} -> 'epochs ×2, schedule cosine'."""
    return ", ".join(f"{k} ×{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k} {v}"
                     for k, v in remedy.items())


def tuned(runs: pd.DataFrame, field: str = "lr") -> pd.DataFrame:
    """Per configuration point (every config column except `field` and the seed), the runs of the `field` value
    with the best mean validation score: a sweep that trains a grid of learning rates at every point reads only
    the chosen one. Validation only, ties to the smaller value; a point with no validation score keeps its first.
    A constructed table is grouped by the config columns it has."""
    if runs.empty or runs[field].nunique(dropna=False) < 2:
        return runs
    config = [f for f in ex.RunConfig.__dataclass_fields__ if f in runs.columns and f not in (field, "seed")]
    point = pd.Series([repr(t) for t in runs[config].itertuples(index=False)], index=runs.index)
    keep = []
    for _, g in runs.groupby(point, sort=False):
        score = _selection_score(g).groupby(g[field]).mean()
        keep.append(g[g[field] == (score.idxmax() if score.notna().any() else g[field].iloc[0])])
    return pd.concat(keep)


def tune_lr(sweeps: dict[str, list], lrs, selection_seeds, executor: str = "local", fresh: bool = False,
            progress: bool = True) -> tuple[dict[str, list], pd.DataFrame]:
    """The learning rate chosen per point of a sweep, as `select` chooses it for one family, at a fraction of the cost
    of training every seed at every rate. A point is a config apart from its lr and seed. Every point of every sweep
    is trained at each of `lrs` with the selection seeds; the rate with the best mean validation score (tuned) is
    kept, and each sweep comes back with all its configs at their point's rate, so the selection runs are reused
    as final runs and only the further seeds train at the chosen rate. Also returns the selection runs."""
    if not lrs:
        return sweeps, pd.DataFrame()
    point = lambda c: ex.RunConfig(**{**c.to_dict(), "lr": lrs[0], "seed": 0}).key
    points = {}
    for cs in sweeps.values():
        for c in cs:
            points.setdefault(point(c), c)
    candidates = [ex.RunConfig(**{**c.to_dict(), "lr": lr, "seed": s})
                  for c in points.values() for lr in lrs for s in selection_seeds]
    runs = ex.run_sweep(candidates, executor=executor, fresh=fresh, progress=progress)
    runs = runs.assign(point=runs["key"].map({c.key: point(c) for c in candidates}))
    chosen = {}
    for p in points:   # ties and all-NaN points go to the first rate of lrs, as in select
        at = runs[runs["point"] == p]
        means = _selection_score(at).groupby(at["lr"]).mean().reindex(list(lrs))
        chosen[p] = lrs[_best(pd.DataFrame({"mean": means.to_numpy()}))]
    return ({name: [ex.RunConfig(**{**c.to_dict(), "lr": chosen[point(c)]}) for c in cs] for name, cs in sweeps.items()},
            runs)


def vary_at_tuned_lr(configs: list, field: str, values, lrs, selection_seeds, executor: str = "local",
                     fresh: bool = False, progress: bool = True) -> list:
    """`configs` at the learning rate tune_lr chooses for each point, followed by the same configs with `field` set to
    each of `values` at that rate. For a change to the data, not the model (the labels trained on, RR context): the
    paired runs differ in `field` alone, and the rate is chosen without the variant, on the reference configs, whose
    selection runs a shared sweep (the depth sweep, when `configs` are on its base) already holds."""
    tuned = tune_lr({"reference": list(configs)}, lrs, selection_seeds, executor, fresh, progress)[0]["reference"]
    return tuned + [ex.RunConfig(**{**c.to_dict(), field: v}) for v in values for c in tuned]


def is_usable(runs: pd.DataFrame, at_chance_ok: bool = False) -> pd.Series:
    """True for the runs a verdict may read: finished without diverging, converged, and not collapsed. A table
    without one of these columns (a constructed one) is not judged on it. at_chance_ok keeps collapsed runs, for
    a measure whose outcome is chance itself (a pattern the model cannot see)."""
    # "planned": a placeholder of `python -m ecglib plan` (experiments._plan_runs), taken as a run that trained
    ok = runs["status"].isin(["ok", "planned"]) if "status" in runs else pd.Series(True, index=runs.index)
    for flag, good in (("collapsed", False), ("converged", True))[int(at_chance_ok):]:
        if flag in runs.columns:
            ok &= runs[flag].fillna(not good).astype(bool).eq(good)
    return ok


def usable(runs: pd.DataFrame, at_chance_ok: bool = False) -> pd.DataFrame:
    """The rows of `runs` that is_usable keeps."""
    return runs[is_usable(runs, at_chance_ok)]


def failed_by_seed(runs: pd.DataFrame) -> pd.Series:
    """Per seed of `runs` (one configuration): 1.0 if none of that seed's runs is usable, 0.0 if one is."""
    return (~is_usable(runs)).groupby(runs["seed"]).all().astype(float)


def failure_counts(runs: pd.DataFrame, labels: dict, depths) -> str:
    """'LSTM: 4 of 5 seeds at depth 8, 0 of 5 at depth 2; ...': per family (labels: family -> name) and depth,
    the seeds that failed to train (no usable run)."""
    out = []
    for family, name in labels.items():
        parts = []
        for d in depths:
            f = failed_by_seed(runs[(runs["family"] == family) & (runs["depth"] == d)])
            parts.append(f"{int(f.sum())} of {len(f)} seeds at depth {d}")
        out.append(f"{name}: {', '.join(parts)}")
    return "; ".join(out)


def failed(runs: pd.DataFrame, by=("family", "depth"), tried: dict | None = None) -> pd.DataFrame:
    """Groups of `by` none of whose runs is usable, with why (counts of diverged, unconverged and collapsed
    runs) and, where `tried` maps a group's family to its Selection.tried, what was tried."""
    by = list(by)
    rows = []
    for key, g in runs.groupby(by, sort=True, dropna=False):
        if is_usable(g).any():
            continue
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row.update(runs=len(g), diverged=int((g["status"] == "diverged").sum()),
                   unconverged=int((~g["converged"].astype(bool)).sum()), collapsed=int(g["collapsed"].sum()),
                   tried=(tried or {}).get(row.get("family"), ""))
        rows.append(row)
    return pd.DataFrame(rows, columns=by + ["runs", "diverged", "unconverged", "collapsed", "tried"])
