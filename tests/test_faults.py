"""Faults and bad input (issue 16): each is named with its fix, or recovered from, and nothing is lost.

Disk failures are simulated by raising the OSError a full or read-only disk raises, since chmod
means nothing to root; where the tests do not run as root, a chmod'ed folder is tried as well.
"""
import errno
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ecglib import book, cli, data, experiments as ex, files, ledger

TINY = {"dataset": "synthetic", "n_train": 32, "length": 160, "width": 4, "epochs": 1, "batch_size": 32}


@pytest.fixture
def trained(monkeypatch):
    """Keys of the runs trained in this process (execute still runs)."""
    keys = []
    real = ex.execute

    def counting(config):
        keys.append(config.key)
        return real(config)

    monkeypatch.setattr(ex, "execute", counting)
    return keys


def disk_error(code):
    """A replacement that fails as a full (ENOSPC) or read-only (EROFS) disk does."""
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(args[0]) if args else None)
    return fail


# ---------------------------------------------------------------- 1. the store and data of the project

def test_folders_default_to_the_project_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("ECGLIB_RESULTS", raising=False)
    monkeypatch.delenv("ECGLIB_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert files.results_root() == files.ROOT / "results" and files.data_root() == files.ROOT / "data"
    assert ex.store_dir() == files.ROOT / "results" and ledger.ledger_dir() == files.ROOT / "results" / "ledger"
    monkeypatch.setenv("ECGLIB_RESULTS", "mine")            # a setting wins, relative to the cwd
    assert ex.store_dir() == tmp_path / "mine"
    monkeypatch.setattr(files, "ROOT", tmp_path / "site-packages")   # installed, not a checkout: the cwd
    monkeypatch.delenv("ECGLIB_RESULTS")
    assert files.project_root() is None and files.results_root() == tmp_path / "results"


def test_runs_from_another_folder_uses_and_names_the_project_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ECGLIB_RESULTS"}
    env["PYTHONPATH"] = str(book.ROOT)          # this checkout's ecglib, run from elsewhere
    r = subprocess.run([sys.executable, "-m", "ecglib", "runs", "--json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n = len(json.loads(r.stdout))
    assert f"results store: {book.ROOT / 'results'} ({n} run" in r.stderr   # the project's, not tmp_path's
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- 2. a corrupt record in the store

def test_a_corrupt_record_is_quarantined_and_only_it_retrained(store, trained):
    configs = ex.sweep(TINY, seed=[0, 1])
    ex.run_sweep(configs, progress=False)
    bad = store / f"{configs[1].key}.json"
    broken = bad.read_text()[:100]              # truncated, as by a full disk or a bad copy
    bad.write_text(broken)
    with pytest.warns(UserWarning, match=rf"{bad} is corrupt: not valid JSON.*moved to {store}/\.quarantine/"):
        assert list(ex.load_runs(configs)["seed"]) == [0]
    (quarantined,) = (store / ".quarantine").glob(f"{bad.name}.*")
    assert quarantined.read_text() == broken and not bad.exists()      # set aside, not lost
    assert (store / ".quarantine" / ".gitignore").read_text() == "*\n"    # no noise in git status
    trained.clear()
    df = ex.run_sweep(configs, progress=False)
    assert trained == [configs[1].key] and list(df["seed"]) == [0, 1]


def test_a_record_missing_fields_is_quarantined(store):
    (store).mkdir()
    (store / "0123456789abcdef.json").write_text(json.dumps({"format": ex.STORE_FORMAT, "key": "x"}))
    with pytest.warns(UserWarning, match=r"0123456789abcdef\.json is corrupt: a run without"):
        assert len(ex.load_runs()) == 0
    assert not (store / "0123456789abcdef.json").exists()


# ---------------------------------------------------------------- 3., 4., 5., 6. data and cache

def test_a_corrupt_cache_entry_is_rebuilt_with_a_warning(tiny_data):
    first = data.mitdb_splits()
    (entry,) = (tiny_data.root / "cache").glob("mitdb-beats-*.npz")
    entry.write_bytes(entry.read_bytes()[:1000])
    data._MEMO.clear()
    with pytest.warns(UserWarning, match=rf"{entry} is corrupt \(BadZipFile.*deleting it and rebuilding"):
        second = data.mitdb_splits()
    np.testing.assert_array_equal(first["train"].X, second["train"].X)
    with np.load(entry) as z:                   # rebuilt whole
        np.testing.assert_array_equal(z["X"].shape[0], sum(len(s) for s in first.values()))


def test_verify_finds_bit_rot_that_keeps_size_and_mtime(tiny_data, capsys):
    assert cli.main(["fetch", "mitdb", "--verify"]) == 0
    assert "every file re-hashed" in capsys.readouterr().out
    folder = tiny_data.root / "mitdb"
    data.mitdb_splits()
    assert list((tiny_data.root / "cache").glob("mitdb-*.npz"))
    record = folder / "203.dat"
    st = record.stat()
    raw = bytearray(record.read_bytes())
    raw[100] ^= 0xFF
    record.write_bytes(bytes(raw))
    os.utime(record, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.fetch("mitdb", progress=False) == folder      # size and mtime alone cannot see it
    assert cli.main(["fetch", "mitdb", "--verify"]) == 2
    assert re.search(r"error: .*203\.dat is corrupted.*python -m ecglib fetch mitdb", capsys.readouterr().err)
    # the verification is forgotten and so are the arrays built from the database
    assert not (folder / data.MARKER).exists() and not list((tiny_data.root / "cache").glob("mitdb-*.npz"))
    with pytest.raises(data.DataError, match=r"203\.dat is corrupted"):
        data.fetch("mitdb", progress=False)
    shutil.rmtree(folder)                       # the fix the message gives
    data._MEMO.clear()
    assert len(data.mitdb_splits()["test"]) > 0


@pytest.mark.parametrize("line, message", [
    ("just-one-field", r"SHA256SUMS\.txt, line 3: expected '<sha256>  <file>', got 'just-one-field'"),
    ("not-hex  100.dat", r"SHA256SUMS\.txt, line 3: 'not-hex' is not a SHA-256 \(64 hex digits\)"),
])
def test_a_malformed_checksum_file_is_named_with_its_line(tiny_data, line, message):
    sums = tiny_data.root / "mitdb" / "SHA256SUMS.txt"
    data.fetch("mitdb", progress=False)
    lines = sums.read_text().splitlines()
    sums.write_text("\n".join(lines[:2] + [line] + lines[3:]) + "\n")
    with pytest.raises(data.DataError, match=message + r".*python -m ecglib fetch mitdb"):
        data.fetch("mitdb", progress=False, verify=True)


def test_a_malformed_mirror_checksum_file_is_named(data_dir, tiny_mirror, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(tiny_mirror, mirror)
    (mirror / "SHA256SUMS").write_text("ab12  mitdb.tar.xz\n")
    monkeypatch.setenv("ECGLIB_MIRROR", str(mirror))
    with pytest.raises(data.DataError, match=r"mirror/SHA256SUMS, line 1: 'ab12' is not a SHA-256.*ECGLIB_MIRROR"):
        data.fetch("mitdb", progress=False)


def test_a_truncated_archive_is_named(data_dir, tiny_mirror, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(tiny_mirror, mirror)
    archive = mirror / "mitdb.tar.xz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    # checksums that match the truncated file: only reading the archive can tell
    (mirror / "SHA256SUMS").write_text(f"{data._sha256(archive)}  mitdb.tar.xz\n")
    monkeypatch.setenv("ECGLIB_MIRROR", str(mirror))
    with pytest.raises(data.DataError, match=r"mitdb\.tar\.xz is truncated or not a tar archive.*complete copy"):
        data.fetch("mitdb", progress=False)
    assert not (data_dir / "mitdb").exists()


def test_a_killed_fetch_leaves_nothing_for_the_next(tiny_data):
    stale = tiny_data.root / ".mitdb-k9x2ab"    # what kill -9 mid-extraction leaves
    (stale / "mitdb").mkdir(parents=True)
    (stale / "mitdb" / "100.dat").write_bytes(b"half")
    data.fetch("mitdb", progress=False)
    assert not stale.exists() and (tiny_data.root / "mitdb" / data.MARKER).exists()


def test_two_fetches_at_once_both_succeed(tiny_data, monkeypatch):
    extractions = []
    real = data.safe_extract
    monkeypatch.setattr(data, "safe_extract", lambda *a, **k: (extractions.append(a[0]), real(*a, **k)))
    results, errors = [], []

    def fetch():
        try:
            results.append(data.fetch("cinc2017", progress=False))
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [tiny_data.root / "cinc2017"] * 2
    assert len(extractions) == 1                # the second waited for the first and used its copy


# ---------------------------------------------------------------- 10. read-only folders and full disks

@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "free space there, or set ECGLIB_DATA to a folder with room"),
                                       (errno.EROFS, "make it writable, or set ECGLIB_DATA to a writable folder")])
def test_fetch_onto_a_full_or_read_only_disk_says_what_to_do(tiny_data, monkeypatch, code, fix):
    def extract(archive, dest, progress=True):
        raise OSError(code, os.strerror(code), str(dest / "mitdb" / "100.dat"))

    monkeypatch.setattr(data, "safe_extract", extract)
    with pytest.raises(data.DataError, match=rf"cannot write .*/mitdb/100\.dat: {os.strerror(code)}; {fix}"):
        data.fetch("mitdb", progress=False)
    assert not [p for p in tiny_data.root.iterdir() if p.is_dir()]      # no half-extracted folder


@pytest.mark.skipif(os.geteuid() == 0, reason="chmod does not stop root")
def test_fetch_into_a_read_only_folder_says_what_to_do(tiny_data):
    tiny_data.root.mkdir()
    tiny_data.root.chmod(0o555)
    try:
        with pytest.raises(data.DataError, match=rf"cannot write .*{tiny_data.root}.*set ECGLIB_DATA"):
            data.fetch("mitdb", progress=False)
    finally:
        tiny_data.root.chmod(0o755)


def test_a_cache_that_cannot_be_written_is_skipped_with_a_warning(tiny_data, monkeypatch):
    data.fetch("mitdb", progress=False)
    monkeypatch.setattr(files, "atomic_write", disk_error(errno.EROFS))
    with pytest.warns(UserWarning, match=r"cannot write .*cache.*Read-only file system.*ECGLIB_CACHE.*without"):
        splits = data.mitdb_splits()
    assert len(splits["train"]) > 0 and not list((tiny_data.root / "cache").glob("*.npz"))


def test_a_separate_cache_folder(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ECGLIB_CACHE", str(tmp_path / "my-cache"))
    data.mitdb_splits()
    assert list((tmp_path / "my-cache").glob("mitdb-beats-*.npz")) and not (tiny_data.root / "cache").exists()


def test_an_unwritable_store_fails_before_training(store, trained, monkeypatch, capsys):
    monkeypatch.setattr(files, "atomic_write", disk_error(errno.EROFS))
    with pytest.raises(ex.StoreError, match=rf"cannot write {store}.*set ECGLIB_RESULTS to a writable folder"):
        ex.run_sweep(ex.sweep(TINY, seed=[0]), progress=False)
    assert trained == []


def test_a_full_disk_while_storing_a_run_is_named(store, monkeypatch):
    real = files.atomic_write

    def full_for_runs(path, *args, **kwargs):    # the disk fills up while the run trains
        if str(path).endswith(".json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(files, "atomic_write", full_for_runs)
    (config,) = ex.sweep(TINY, seed=[0])
    with pytest.raises(ex.StoreError, match=rf"cannot write .*{config.key}\.json: No space left.*free space"):
        ex.run_sweep([config], progress=False)


# ---------------------------------------------------------------- 11. two sweeps at once

def _sweep_and_count(store: str, counter: str, barrier) -> None:
    real = ex.execute

    def counting(config):
        with open(counter, "a") as f:
            f.write(config.key + "\n")
        return real(config)

    ex.execute = counting
    barrier.wait()                              # both sweeps look at the store at the same moment
    ex.run_sweep(ex.sweep(TINY, seed=[0, 1, 2]), store=store, progress=False)


def test_two_sweeps_at_once_train_each_run_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    counter = tmp_path / "trained.txt"
    procs = [ctx.Process(target=_sweep_and_count, args=(str(tmp_path / "store"), str(counter), barrier))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    keys = counter.read_text().split()
    assert sorted(keys) == sorted(c.key for c in ex.sweep(TINY, seed=[0, 1, 2]))    # each once
    assert len(ex.load_runs(store=tmp_path / "store")) == 3


@pytest.mark.parametrize("holder_stores_it", [True, False])
def test_a_sweep_waits_for_a_run_another_is_training(store, trained, holder_stores_it):
    configs = ex.sweep(TINY, seed=[0, 1])
    record = ex.execute(configs[0]) if holder_stores_it else None    # what the other sweep will store
    trained.clear()
    held = files.FileLock(files.hidden_dir(store, ".locks") / f"{configs[0].key}.lock")
    assert held.acquire(block=False)            # another sweep is training seed 0
    out = {}
    sweep = threading.Thread(target=lambda: out.update(df=ex.run_sweep(configs, progress=False)))
    sweep.start()
    while not (store / f"{configs[1].key}.json").exists():   # it trains what is free first
        assert sweep.is_alive()
        time.sleep(0.05)
    assert trained == [configs[1].key] and sweep.is_alive()  # ... then waits for the lock
    if holder_stores_it:
        ex.write_record(record)
    held.release()                              # the other sweep finished (or died)
    sweep.join()
    expected = [configs[1].key] if holder_stores_it else [configs[1].key, configs[0].key]
    assert trained == expected and list(out["df"]["seed"]) == [0, 1]


# ---------------------------------------------------------------- 12. file modes follow the umask

@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tiny_data, store, mask):
    old = os.umask(mask)
    try:
        written = [
            ex.write_record({"format": ex.STORE_FORMAT, "key": "k"}, store),
            data.fetch("mitdb", progress=False) / data.MARKER,
            ledger.save("faults", [ledger.Verdict("C1", "faults", "supported", "s", "e", 1.0, 0.5, 1.5)]),
        ]
        data.mitdb_splits()
        written += list((tiny_data.root / "cache").glob("*.npz"))
        path = store / "runtimes.json"
        book._write_json(path, {})
        written.append(path)
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o666 & ~mask)}


# ---------------------------------------------------------------- 13. the Ray executor

@pytest.mark.ray
def test_ray_executor_trains_and_resumes(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    configs = ex.sweep(TINY, seed=[0, 1])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)   # a local instance
    try:
        first = ex.run_sweep(configs, executor="ray", store=tmp_path, progress=False)
        assert list(first["seed"]) == [0, 1] and (first["status"] == "ok").all()
        with monkeypatch.context() as m:
            m.setattr(ex, "_run_ray", lambda *a: pytest.fail("a stored run was sent to Ray again"))
            again = ex.run_sweep(configs, executor="ray", store=tmp_path, progress=False)
    finally:
        ray.shutdown()
    assert again.equals(first)


def test_without_ray_the_ray_executor_fails_before_running(store, trained, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ValueError, match=r"the ray executor needs Ray, which is not installed: pip install"):
        ex.run_sweep(ex.sweep(TINY, seed=[0]), executor="ray", progress=False)
    with pytest.raises(ValueError, match=r"needs Ray"):
        book.build(executor="ray", render=False)
    assert trained == []


# ---------------------------------------------------------------- 14. the published ledger is stable

def test_the_ledger_does_not_change_with_the_last_bits_of_a_float(store):
    def saved(low):
        ledger.save("faults", [ledger.Verdict("C12", "faults", "depends", "s", "e", 3.501856136754021, low,
                                              float("nan"))])
        return (store / "ledger" / "faults.json").read_bytes()

    a, b = saved(2.5248530409870122), saved(2.5248530409870127)   # the two values two builds gave
    assert a == b
    (row,) = ledger.load().to_dict("records")
    assert row["value"] == 3.50186 and row["low"] == 2.52485 and np.isnan(row["high"])
