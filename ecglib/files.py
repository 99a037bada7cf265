"""Where ecglib keeps its files and how it writes them: the project root, the folder settings,
atomic writes that follow the user's umask, advisory locks, and one message for a folder that
cannot be written.

Folders default to the project (the checkout ecglib runs from), not the current directory, so
`python -m ecglib runs` from anywhere sees the published store. An ECGLIB_* variable still wins;
a relative value is taken relative to the current directory, as a shell user would expect.
"""
from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent   # the checkout ecglib runs from (if it is one)


def project_root() -> Path | None:
    """ROOT when it is this project's checkout (pyproject.toml or _toc.yml beside the package);
    None when ecglib is installed as a plain package."""
    return ROOT if (ROOT / "pyproject.toml").is_file() or (ROOT / "_toc.yml").is_file() else None


def setting_path(var: str, default: str) -> Path:
    """The absolute folder named by environment variable `var`, else `default` inside the project
    (inside the current directory when there is no project)."""
    value = os.environ.get(var)
    if value:
        return Path(value).expanduser().resolve()
    return ((project_root() or Path.cwd()) / default).resolve()


def data_root() -> Path:
    return setting_path("ECGLIB_DATA", "data")


def results_root() -> Path:
    return setting_path("ECGLIB_RESULTS", "results")


def umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it,
    and setting it briefly would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path, mode: str = "w"):
    """Write through a temporary sibling, then rename it into place: a reader (or a second writer)
    sees the old file or the new one, never half. The file gets the permissions a plain open()
    would give (0o666 less the umask), not mkstemp's private 0o600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hidden_dir(parent, name: str) -> Path:
    """parent/name, created with a `.gitignore` of `*`, for bookkeeping (locks, quarantine) that
    must not show up in `git status` when the parent is a committed folder."""
    d = Path(parent) / name
    d.mkdir(parents=True, exist_ok=True)
    if not (d / ".gitignore").exists():
        with atomic_write(d / ".gitignore") as f:
            f.write("*\n")
    return d


class FileLock:
    """An exclusive flock on a file: held by at most one process, released on release() or when the
    holder dies (kill -9 included), so a crashed holder never leaves it locked."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = None

    def acquire(self, block: bool = True) -> bool:
        """Take the lock (waiting for it unless block=False); False if another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


# Errors that mean "this folder cannot take our files", as opposed to a bug.
DISK_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def cannot_write(path, error: OSError, setting: str) -> str:
    """One line for an OSError in DISK_ERRORS: which path, why, and what to do."""
    where = error.filename or path
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free space there, or set {setting} to a folder with room"
    else:
        fix = f"make it writable, or set {setting} to a writable folder"
    return f"cannot write {where}: {error.strerror}; {fix}"
