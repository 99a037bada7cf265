"""Which training code a stored run ran, and when two versions of it train alike.

Every run records code_version(): a hash of the code that decides how it trains (TRAINING_MODULES whole,
TRAINING_FUNCTIONS of experiments.py), with docstrings and comments left out. Any code change moves it, even a
neutral refactor, so a store that mixes versions is flagged (plots.provenance), never silently pooled. `verify`
retrains a few stored runs of each other version with today's code and, when every metric comes out the same,
records the two versions as equivalent in the store (.equivalent-code.json), so their runs count as one version.

    python -m ecglib verify --runs 2     # retrain the 2 cheapest runs of every other version, certify if equal
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ecglib import files

# What decides how a run trains: these modules whole, and these functions of this one. code_version hashes their
# code (docstrings and comments left out), so a store can tell runs of different training code apart.
# The probes and their constants count too: they make the measurements a run stores beside its metrics.
TRAINING_MODULES = ("data", "models", "train", "synthetic", "diagnostics")
TRAINING_FUNCTIONS = ("_subset", "_stratified", "_capped", "load_splits", "_patients", "validation_fold",
                      "scored_classes", "make_datasets", "build", "_metrics", "execute", "_evaluate_seen", "_fs",
                      "_downsample", "_batch")   # and every _probe_* function
TRAINING_CONSTANTS = ("TRAIN_EVAL_MAX", "CURVE_POINTS", "SALIENCY_PER_CLASS", "STATE_GRAD_BATCH", "STATE_GRAD_POINTS",
                      "PROBES")


def _code_digest(sources: dict[str, str]) -> str:
    def strip(tree):
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        return ast.dump(tree)

    trees = {name: ast.parse(src) for name, src in sources.items()}
    own = trees.pop("experiments")
    parts = [strip(trees[m]) for m in TRAINING_MODULES]
    parts += [strip(n) for n in own.body if isinstance(n, ast.FunctionDef)
              and (n.name in TRAINING_FUNCTIONS or n.name.startswith("_probe_"))]
    parts += [ast.dump(n) for n in own.body if isinstance(n, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id in TRAINING_CONSTANTS for t in n.targets)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def code_version() -> str:
    """Hash of the training code this process runs (TRAINING_MODULES and TRAINING_FUNCTIONS): two runs with the
    same code_version trained the same way. A change to a comment or docstring keeps it; any code change, even a
    neutral one, moves it, so a store that mixes versions is flagged, never silently pooled."""
    pkg = Path(__file__).parent
    return _code_digest({m: (pkg / f"{m}.py").read_text() for m in (*TRAINING_MODULES, "experiments")})


def code_version_at(commit: str) -> str | None:
    """code_version of a past commit of this checkout (for runs stored before runs recorded it), or None when the
    commit is dirty, unknown or not in this clone's history."""
    if not commit or commit.endswith("-dirty") or commit == "unknown":
        return None
    return _code_version_at(commit)


@functools.lru_cache(maxsize=None)
def _code_version_at(commit: str) -> str | None:
    sources = {}
    for m in (*TRAINING_MODULES, "experiments"):
        try:
            sources[m] = subprocess.run(["git", "show", f"{commit}:ecglib/{m}.py"], cwd=files.ROOT, capture_output=True,
                                        text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
    return _code_digest(sources)



EQUIVALENCE_FILE = ".equivalent-code.json"
COMPARED = [(split, m) for split in ("train", "val", "test") for m in ("loss", "acc", "macro_f1", "score")]


def _equivalence_path(store=None) -> Path:
    from ecglib.experiments import store_dir
    return store_dir(store) / EQUIVALENCE_FILE


def equivalences(store=None) -> list[dict]:
    """The certified pairs of the store: [{"from", "to", "runs", "checked_at"}]."""
    path = _equivalence_path(store)
    return json.loads(path.read_text())["equivalent"] if path.exists() else []


def canonical(codes, store=None) -> pd.Series:
    """Each version mapped to one name for its class of certified-equivalent versions (the class's version that
    today's code has, if any, else its first in sort order); unknown versions stay as they are."""
    parent: dict[str, str] = {}

    def root(v):
        while parent.get(v, v) != v:
            v = parent[v]
        return v

    for pair in equivalences(store):
        a, b = root(pair["from"]), root(pair["to"])
        if a != b:
            parent[max(a, b)] = min(a, b)
    classes: dict[str, list[str]] = {}
    for v in set(parent) | set(parent.values()):
        classes.setdefault(root(v), []).append(v)
    now = code_version()
    name = {r: (now if now in members else sorted(members)[0]) for r, members in classes.items()}
    codes = pd.Series(codes)
    return codes.map(lambda v: name.get(root(v), v) if isinstance(v, str) else v)


def same_results(a: dict, b: dict, rtol: float = 1e-5) -> list[str]:
    """What differs between two records of one config: status, best epoch, the converged and collapsed flags (the
    evidence gate reads them), and every split's metrics. Identical code, seed and thread count on one machine give
    identical numbers; rtol absorbs float noise across machines."""
    diffs = [f"{k}: {a.get(k)} vs {b.get(k)}" for k in ("status", "best_epoch", "converged", "collapsed")
             if a.get(k) != b.get(k)]
    for split, m in COMPARED:
        x, y = a[split][m], b[split][m]
        if (x is None) != (y is None) or (x is not None and not np.isclose(x, y, rtol=rtol, atol=1e-8)):
            diffs.append(f"{split} {m}: {x} vs {y}")
    return diffs


def _cheapest_spread(runs: pd.DataFrame, n: int) -> list[str]:
    """n run keys, spread over code paths: the cheapest run of each (dataset, family), groups in order of their
    cheapest run, then the second cheapest of each, and so on."""
    ranked = runs.sort_values("wall_s").assign(rank=lambda d: d.groupby(["dataset", "family"]).cumcount())
    return list(ranked.sort_values(["rank", "wall_s"], kind="stable")["key"].head(n))


def verify(runs_per_version: int = 2, store=None) -> pd.DataFrame:
    """Retrain `runs_per_version` cheap stored runs of every training-code version other than today's (and not
    already equivalent to it), one per dataset and family before a second of any (_cheapest_spread), and compare; certify a version equivalent when all of its runs match.
    One row per retrained run: code, key, family, dataset, same, differences."""
    from ecglib import experiments as ex

    now = code_version()
    runs = ex.load_runs(store=store)
    runs = runs[runs["code"].notna() & (canonical(runs["code"], store).to_numpy() != now)]
    rows = []
    for version, g in runs.groupby("code"):
        checked = []
        for key in _cheapest_spread(g, runs_per_version):
            old = ex.read_record(ex.store_dir(store) / f"{key}.json")
            config = ex.RunConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in old["config"].items()})
            diffs, threads = _retrain(config, old)
            rows.append({"code": version, "key": key, "family": config.family, "dataset": config.dataset,
                         "threads": threads, "same": not diffs, "differences": "; ".join(diffs)})
            checked.append((key, not diffs))
        if checked and all(ok for _, ok in checked):
            _certify(version, now, [k for k, _ in checked], store)
    return pd.DataFrame(rows, columns=["code", "key", "family", "dataset", "threads", "same", "differences"])


def _retrain(config, old: dict) -> tuple[list[str], int]:
    """Retrain `config` with the torch thread count its run recorded (CPU kernels sum in a thread-dependent order,
    so a run repeats exactly only at its own count). A run too old to say is tried at 1 thread (what the process
    executor gives each of two workers on these machines), then at this process's count."""
    import torch

    from ecglib import experiments as ex

    recorded = old["provenance"].get("threads")
    own = torch.get_num_threads()
    tries = [recorded] if recorded else list(dict.fromkeys([1, own]))
    diffs = []
    try:
        for threads in tries:
            torch.set_num_threads(threads)
            diffs = same_results(old, ex.execute(config))
            if not diffs:
                break
    finally:
        torch.set_num_threads(own)
    return diffs, threads


def _certify(old: str, new: str, keys: list[str], store=None) -> None:
    pairs = equivalences(store) + [{"from": old, "to": new, "runs": keys,
                                    "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
    with files.atomic_write(_equivalence_path(store)) as f:
        f.write(json.dumps({"equivalent": pairs}, indent=1) + "\n")
