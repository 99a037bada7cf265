"""Verdicts on the claims C1-C13: computed in the chapters from stored runs, saved beside the store,
and gathered by the conclusions chapter into the claims ledger.

A chapter builds `Verdict`s from numbers it computed (never typed), shows them as boxes, and saves
them; `load()` returns every saved verdict. Each verdict lists the run keys behind it, so every
number in the ledger traces to stored runs.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from ecglib import files

from .verdicts import VERDICTS, Judgement

CLAIMS = [f"C{i}" for i in range(1, 14)]
# The claims of the seed thread (shared/seeds/README.md), shortened, and the chapters that test them.
CLAIM_TEXT = {
    "C1": "Deep LSTMs are harder to train than deep CNNs because gradients vanish across layers.",
    "C2": "LSTMs overfit sequential data quickly, so they are kept shallow.",
    "C3": "CNNs extract local features level by level; RNNs extract temporal features across time steps.",
    "C4": "ECG is classified well from temporal features, so RNNs need less depth than CNNs.",
    "C5": "LSTMs are prone to overfitting, partly because of vanishing gradients.",
    "C6": "Convolution layers overfit like any trainable layer when parameters are many relative to the data.",
    "C7": "A CNN needs several layers before its receptive field spans a temporal pattern; one LSTM layer suffices.",
    "C8": "Vanishing gradients matter more across time steps within a layer than across stacked layers.",
    "C9": "Regularised sequence models need not overfit; the layer count is driven by architecture.",
    "C10": "An RNN layer has more parameters than a convolution layer.",
    "C11": "RNN gates combine inputs multiplicatively; a CNN needs many layers to imitate that.",
    "C12": "A conv + pooling front end feeding an RNN gets the CNN's speed and the RNN's temporal modelling.",
    "C13": "The number of layers needed depends heavily on the problem.",
}
CLAIM_CHAPTERS = {
    "C1": ["depth"], "C2": ["overfitting"], "C3": ["features"], "C4": ["features", "depth"],
    "C5": ["overfitting"], "C6": ["overfitting"], "C7": ["features"], "C8": ["depth"], "C9": ["overfitting"],
    "C10": ["features"], "C11": ["features"], "C12": ["hybrids"], "C13": ["features"],
}
PUBLISHED_DIGITS = 6   # significant digits of value, low, high in the saved ledger
_BOX = {"supported": "tip", "refuted": "danger", "depends": "warning", "inconclusive": "note"}


@dataclass
class Verdict:
    claim: str             # "C1" ... "C13"
    chapter: str           # chapter file stem, e.g. "depth"
    verdict: str           # one of VERDICTS
    summary: str           # one or two sentences, numbers formatted from computed values
    effect: str            # what `value` measures, e.g. "test macro-F1, LSTM depth 8 minus depth 2"
    value: float
    low: float
    high: float
    figure: str = ""       # label of the figure or table that shows the evidence
    runs: list[str] = field(default_factory=list)  # store keys of the runs behind the numbers
    margin: float = math.nan  # the practical margin the rule compared with (verdicts.MARGINS), in value's unit
    reason: str = ""       # why the rule gave this verdict, printed under it

    @classmethod
    def of(cls, judgement: Judgement, claim: str, chapter: str, summary: str, effect: str, figure: str = "",
           runs=()) -> "Verdict":
        """A ledger entry from a verdicts.Judgement: its verdict, reason, estimate and margin."""
        j = judgement
        return cls(claim=claim, chapter=chapter, verdict=j.verdict, summary=summary, effect=effect, value=j.mean,
                   low=j.low, high=j.high, figure=figure, runs=list(runs), margin=j.margin, reason=j.reason)

    def __post_init__(self):
        if self.claim not in CLAIMS:
            raise ValueError(f"unknown claim {self.claim!r}; valid: {', '.join(CLAIMS)}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; valid: {', '.join(VERDICTS)}")


def fmt_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """'0.812 [0.790, 0.834]', or just the mean when there is no interval (one seed), or 'no value' when there is
    no mean (no usable run), so a reader never meets a bare nan."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "no value (no usable run)"
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return f"{mean:.{digits}f} (no CI: too few values)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def ledger_dir() -> Path:
    """<store>/ledger; under a plan (experiments.PLAN) the plan's own folder, so verdicts on placeholder runs never
    reach the store."""
    from ecglib.experiments import PLAN

    plan = os.environ.get(PLAN)
    return Path(plan).parent / "ledger" if plan else files.results_root() / "ledger"


def show(verdicts: list[Verdict]) -> None:
    for v in verdicts:
        ref = f" (see {{numref}}`{v.figure}`)" if v.figure.startswith("fig-") or v.figure.startswith("tbl-") else ""
        display(Markdown(
            f":::{{admonition}} {v.claim}: {v.verdict}\n:class: {_BOX[v.verdict]}\n"
            f"{v.summary}{ref}\n\n*{v.effect}:* {fmt_ci(v.value, v.low, v.high)} "
            + (f"(mean over seeds, 95% CI; {len(v.runs)} stored runs)" if v.runs else "(exact: no training involved)")
            + (f"\n\n*Rule:* {v.reason}" if v.reason else "")
            + "\n:::"
        ))


def _published(x: float) -> float:
    """A number as the ledger keeps it: 6 significant digits. The last bits of a float depend on
    summation order and threads, and a published file must not change when nothing did."""
    return x if x is None or not math.isfinite(x) else float(f"{x:.{PUBLISHED_DIGITS}g}")


def save(chapter: str, verdicts: list[Verdict]) -> Path:
    """Write the chapter's verdicts atomically, numbers rounded; the conclusions chapter reads them all."""
    d = ledger_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{chapter}.json"
    rows = [{**asdict(v), **{k: _published(getattr(v, k)) for k in ("value", "low", "high")}} for v in verdicts]
    with files.atomic_write(path) as f:
        json.dump(rows, f, indent=1, allow_nan=True)
    return path


def export(dest, profiles: dict | None = None, store=None) -> list[Path]:
    """Write the ledger as data beside the rendered book: dest/ledger.csv and dest/ledger.json.

    One row per verdict with its provenance, so a report can cite a verdict: the store keys of the
    runs behind it, the commit(s) of the code that trained them (the book's own commit for verdicts
    computed without training), their training-code version(s) (versions.code_version; one version means
    they trained alike) and the profile its chapter ran with (`profiles`: chapter -> name).
    Columns a chapter's verdicts do not carry (e.g. margin, reason) are left out, never invented."""
    from ecglib import __version__, experiments, versions

    dest = Path(dest)
    df = load()
    book_commit = experiments.git_commit()
    store_dir = experiments.store_dir(store)

    provenance = {}
    for key in {k for keys in df["runs"] for k in keys}:
        path = store_dir / f"{key}.json"
        provenance[key] = json.loads(path.read_text()).get("provenance", {}) if path.exists() else None

    def commits(keys: list[str]) -> str:
        found = {"missing from the store" if provenance[k] is None else provenance[k].get("commit", "unknown")
                 for k in keys}
        return " ".join(sorted(found)) if keys else book_commit

    def training_code(keys: list[str]) -> str:
        """The training-code versions of the runs (certified-equivalent ones named as one): one means alike."""
        codes = [p.get("code") or versions.code_version_at(p.get("commit", "")) for p in map(provenance.get, keys) if p]
        return " ".join(sorted(set(versions.canonical(pd.Series(codes, dtype=object), store).fillna("unknown"))))

    first = [c for c in ("claim", "chapter", "verdict", "effect", "value", "low", "high", "margin", "reason")
             if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first and c != "runs"]].assign(
        n_runs=df["runs"].map(len), runs=df["runs"],
        code_version=df["runs"].map(commits), training_code=df["runs"].map(training_code),
        profile=df["chapter"].map(profiles or {}))
    # pandas writes NaN as null in JSON and as an empty field in CSV
    df.assign(runs=df["runs"].map(" ".join)).to_csv(dest / "ledger.csv", index=False)
    meta = {"generated_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            "book_commit": book_commit, "ecglib": __version__, "columns": list(df.columns)}
    verdicts = json.loads(df.to_json(orient="records", double_precision=15))
    (dest / "ledger.json").write_text(json.dumps({**meta, "verdicts": verdicts}, indent=1) + "\n")
    return [dest / "ledger.csv", dest / "ledger.json"]


def load() -> pd.DataFrame:
    rows = []
    for p in sorted(ledger_dir().glob("*.json")):
        rows += json.loads(p.read_text())
    df = pd.DataFrame(rows, columns=[f for f in Verdict.__dataclass_fields__])
    return df.sort_values("claim", key=lambda s: s.str[1:].astype(int)).reset_index(drop=True)
