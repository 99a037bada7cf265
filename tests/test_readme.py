"""Every shell command in README.md's ```bash blocks runs in a fresh clone and exits 0.

The rule. The clone is `git clone` of this checkout plus its uncommitted changes to tracked files.
The blocks run in README order as one bash script, as a reader types them into one terminal (`set
-ex`: `. .venv/bin/activate` carries to every later line, and a failure names its line), every
command as written except:

1. `.venv` is a virtual environment layered on the one running the tests (a .pth file adds its
   site-packages) with make's install stamp in place, so `make` finds it installed: a real install
   takes minutes and is what `make test` in CI has just done.
2. ECGLIB_DATA is the suite's data root, so `fetch` verifies what the suite fetches anyway instead of
   extracting 1 GB again; the placeholder `/path/to/archives` becomes ECGLIB_MIRROR.
3. `make test` runs with PYTEST_ADDOPTS=--collect-only: this test is part of that suite.
4. Commands that execute chapters (`make book`, `python -m ecglib build`) get `--dry-run` (make:
   BUILD_FLAGS=--dry-run): profile, chapter and parameter names and values are validated and the
   plan printed, but nothing trains; the README states what each costs for real. The smoke-book
   tests execute and render the book for real.
5. `python -m ecglib bench` gets `--steps 1 --repeats 1` (one timed step, measured once, instead of
   the best of five measurements of six steps: minutes of LSTM training on a CPU).

Afterwards no tracked file of the clone may have changed.
"""
from __future__ import annotations

import os
import re
import shlex
import site
import subprocess
import sys
from pathlib import Path

import pytest

from ecglib import data

ROOT = Path(__file__).resolve().parent.parent

SUBSTITUTIONS = [  # (pattern, replacement) applied to each command line, in order; see the docstring
    (r"\bmake book\b", "make book BUILD_FLAGS=--dry-run"),
    (r"(python -m ecglib build\b[^#]*?)(\s*(#.*)?)$", r"\1 --dry-run\2"),
    (r"(python -m ecglib bench\b[^#]*?)(\s*(#.*)?)$", r"\1 --steps 1 --repeats 1\2"),
]


def readme_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks, in order (comment-only and blank lines dropped)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)
    return [line for b in blocks for line in b.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def as_run(line: str, mirror: str) -> str:
    line = line.replace("/path/to/archives", shlex.quote(mirror))
    for pattern, replacement in SUBSTITUTIONS:
        line = re.sub(pattern, replacement, line)
    return line


def test_substitutions_keep_the_command_and_its_comment():
    assert as_run("python -m ecglib build --chapter depth -p depths '[1,2]'   # more", "/m") == \
        "python -m ecglib build --chapter depth -p depths '[1,2]' --dry-run   # more"
    assert as_run("ECGLIB_MIRROR=/path/to/archives make book", "/my data") == \
        "ECGLIB_MIRROR='/my data' make book BUILD_FLAGS=--dry-run"
    assert as_run("python -m ecglib bench --json", "/m") == "python -m ecglib bench --json --steps 1 --repeats 1"
    assert as_run("python -m ecglib runs   # listing", "/m") == "python -m ecglib runs   # listing"


def fresh_clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=ROOT, capture_output=True, check=True).stdout
    if diff:   # committed in the clone, so that what the commands change shows against it
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=dest, input=diff, check=True)
        subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qam",
                        "uncommitted changes under test"], cwd=dest, check=True)
    # The venv the Makefile would create, layered on this one (rule 1); created after the clone's
    # pyproject.toml, its stamp tells make that the install is done.
    venv = dest / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = next(venv.glob("lib/python*/site-packages"))
    (packages / "_suite_env.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages()))
    (venv / ".installed").touch()
    return dest


@pytest.mark.book
@pytest.mark.realdata
def test_every_readme_command_runs_in_a_fresh_clone(tmp_path):
    mirror = os.environ.get("ECGLIB_MIRROR")
    fetched = all((data.data_root() / name / data.MARKER).exists() for name in data.DATABASES)
    if not (mirror or fetched):
        pytest.skip("needs the real databases: set ECGLIB_MIRROR or run `python -m ecglib fetch`")
    commands = readme_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 10 and any("make book" in c for c in commands), "README.md lost its commands?"

    clone = fresh_clone(tmp_path / "clone")
    env = {**os.environ, "ECGLIB_DATA": str(data.data_root().resolve()),
           "PYTEST_ADDOPTS": "--collect-only -q -p no:cacheprovider"}
    env.pop("ECGLIB_RESULTS", None)     # the clone's own store, as a reader's would be
    script = "PS4='+ [$SECONDS s] '\nset -ex\n" + "\n".join(as_run(line, mirror or "") for line in commands) + "\n"
    proc = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=900)
    log = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"a README command failed (exit {proc.returncode}):\n{log}"
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=clone,
                             capture_output=True, text=True, check=True).stdout
    assert not changed, f"running the README's commands changed tracked files:\n{changed}"
