"""Shared fixtures: tiny databases laid out like the offline mirror, an isolated data root, real data.

`tiny_data` is what most tests want: ECGLIB_DATA in a fresh tmp folder and ECGLIB_MIRROR pointing at
tiny copies of both databases, so `ecglib.data.mitdb_splits()` and `cinc2017_splits()` run in well
under a second on data with known content.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import scipy.io
import wfdb

from ecglib import data

MITDB_FS, MITDB_SECONDS = 360, 8
# One beat every 0.8 s, the first and last so near the edges that their windows must be padded;
# every record holds every AAMI class, so any validation draw has S and V beats.
BEAT_SAMPLES = [18, 288, 576, 864, 1152, 1440, 1728, 2016, 2304, 2592, 2870]
BEAT_SYMBOLS = ["N", "A", "V", "L", "F", "a", "E", "Q", "R", "J", "N"]
CINC_FS = 300
CINC_LABELS = ["N"] * 24 + ["A"] * 8 + ["O"] * 10 + ["~"] * 6


def mitdb_signal(record: str, lead: str, n: int = MITDB_SECONDS * MITDB_FS) -> np.ndarray:
    """The known signal (mV) of a tiny record's lead: a sine for MLII, a slower offset cosine for V5."""
    t = np.arange(n) / MITDB_FS
    if lead == "MLII":
        return np.sin(2 * np.pi * 1.3 * t) + int(record) / 1000
    return 2 + 0.5 * np.cos(2 * np.pi * 0.3 * t)


def write_mitdb_record(folder: Path, record: str) -> None:
    """A two-lead 360 Hz record with beats, rhythm changes (aux_note with a trailing NUL) and
    non-beat annotations. Record 114 stores MLII second, as in the real database."""
    leads = ["V5", "MLII"] if record == "114" else ["MLII", "V5"]
    signal = np.stack([mitdb_signal(record, lead) for lead in leads], axis=1)
    wfdb.wrsamp(record, fs=MITDB_FS, units=["mV", "mV"], sig_name=leads, p_signal=signal,
                fmt=["16", "16"], adc_gain=[1000, 1000], baseline=[0, 0], write_dir=str(folder))
    notes = [(0, "+", "(N\x00"), (1000, "+", "(AFIB\x00"), (1500, "~", ""), (2100, "|", "")]
    notes += [(s, sym, "") for s, sym in zip(BEAT_SAMPLES, BEAT_SYMBOLS)]
    notes.sort(key=lambda n: n[0])
    wfdb.wrann(record, "atr", np.array([n[0] for n in notes]), symbol=[n[1] for n in notes],
               aux_note=[n[2] for n in notes], write_dir=str(folder))


def write_cinc_record(folder: Path, record: str, n: int, rng: np.random.Generator) -> None:
    """A single-lead record as PhysioNet ships it: WFDB format 16 inside a MATLAB v4 .mat."""
    val = np.round(rng.normal(0, 300, n)).astype(np.int16)
    scipy.io.savemat(folder / f"{record}.mat", {"val": val[None, :]}, format="4")
    checksum = (int(val.astype(np.int64).sum()) + 32768) % 65536 - 32768
    (folder / f"{record}.hea").write_text(
        f"{record} 1 {CINC_FS} {n}\n{record}.mat 16+24 1000/mV 16 0 {val[0]} {checksum} 0 ECG\n")


def write_sums(folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    (folder / "SHA256SUMS.txt").write_text(
        "".join(f"{hashlib.sha256((folder / f).read_bytes()).hexdigest()}  {f}\n" for f in files))


@pytest.fixture(scope="session")
def tiny_mitdb(tmp_path_factory) -> Path:
    """A folder `mitdb/` like the mirror's: the 44 DS1 + DS2 records (8 s each), RECORDS, SHA256SUMS.txt."""
    folder = tmp_path_factory.mktemp("tiny") / "mitdb"
    folder.mkdir()
    for record in data.DS1 + data.DS2:
        write_mitdb_record(folder, record)
    (folder / "RECORDS").write_text("".join(r + "\n" for r in sorted(data.DS1 + data.DS2)))
    write_sums(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_cinc(tmp_path_factory) -> Path:
    """A folder `cinc2017/` like the mirror's: 48 records of 3-8 s, RECORDS, both REFERENCE files
    (the original labels call every noisy record normal), SHA256SUMS.txt."""
    folder = tmp_path_factory.mktemp("tiny") / "cinc2017"
    folder.mkdir()
    rng = np.random.default_rng(0)
    records = [f"A{i:05d}" for i in range(1, len(CINC_LABELS) + 1)]
    for record in records:
        write_cinc_record(folder, record, int(rng.integers(3 * CINC_FS, 8 * CINC_FS)), rng)
    (folder / "RECORDS").write_text("".join(r + "\n" for r in records))
    (folder / "REFERENCE.csv").write_text("".join(f"{r},{c}\n" for r, c in zip(records, CINC_LABELS)))
    (folder / "REFERENCE-original.csv").write_text(
        "".join(f"{r},{'N' if c == '~' else c}\n" for r, c in zip(records, CINC_LABELS)))
    write_sums(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_mirror(tmp_path_factory, tiny_mitdb, tiny_cinc) -> Path:
    """A mirror folder like /work/shared/data: mitdb.tar.xz, cinc2017.tar.xz, SHA256SUMS."""
    mirror = tmp_path_factory.mktemp("mirror")
    for folder in (tiny_mitdb, tiny_cinc):
        with tarfile.open(mirror / f"{folder.name}.tar.xz", "w:xz") as tar:
            tar.add(folder, arcname=folder.name)
    (mirror / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((mirror / a).read_bytes()).hexdigest()}  {a}\n" for a in ("mitdb.tar.xz", "cinc2017.tar.xz")))
    return mirror


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty, isolated ECGLIB_DATA; no mirror and no PhysioNet URL leak in from the environment."""
    root = tmp_path / "data"
    monkeypatch.setenv("ECGLIB_DATA", str(root))
    monkeypatch.delenv("ECGLIB_MIRROR", raising=False)
    monkeypatch.delenv("ECGLIB_PHYSIONET_URL", raising=False)
    monkeypatch.delenv("ECGLIB_CACHE", raising=False)
    return root


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """An empty, isolated results store (ECGLIB_RESULTS)."""
    path = tmp_path / "results"
    monkeypatch.setenv("ECGLIB_RESULTS", str(path))
    return path


@pytest.fixture
def tiny_data(data_dir, tiny_mirror, monkeypatch) -> SimpleNamespace:
    """An isolated ECGLIB_DATA fed from the tiny mirror: the data functions work as on real data."""
    monkeypatch.setenv("ECGLIB_MIRROR", str(tiny_mirror))
    return SimpleNamespace(root=data_dir, mirror=tiny_mirror)


@pytest.fixture
def realdata() -> None:
    """Skip unless the real databases can be had: ECGLIB_MIRROR set, or both already fetched."""
    fetched = all((data.data_root() / name / data.MARKER).exists() for name in data.DATABASES)
    if not (os.environ.get("ECGLIB_MIRROR") or fetched):
        pytest.skip("needs the real databases: set ECGLIB_MIRROR or run `python -m ecglib fetch`")


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Path:
    """The real book, built once with the smoke profile from an empty results store (minutes:
    needs the real data). Its runs and ledger go to a temporary store, so the committed results
    are neither used nor touched."""
    from ecglib import book

    fetched = all((data.data_root() / name / data.MARKER).exists() for name in data.DATABASES)
    if not (os.environ.get("ECGLIB_MIRROR") or fetched):
        pytest.skip("needs the real databases: set ECGLIB_MIRROR or run `python -m ecglib fetch`")
    mp = pytest.MonkeyPatch()
    mp.setenv("ECGLIB_RESULTS", str(tmp_path_factory.mktemp("smoke-results")))
    try:
        book.build(profile="smoke")
    finally:
        mp.undo()
    return book.ROOT


@pytest.fixture(scope="session")
def built_book(smoke_book) -> Path:
    """The rendered HTML of the smoke book."""
    return smoke_book / "_build" / "html"


@pytest.fixture
def one_thread():
    """Tiny models on a busy 2-core machine: one thread avoids OpenMP contention, and it is deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
