"""Build the book: papermill executes each chapter with a profile's parameters (plus overrides),
then jupyter-book renders the executed notebooks.

    build("smoke")                                        # every chapter, CI-sized, then render
    build(chapters=["depth"], overrides={"seeds": "5"})   # one chapter again, 5 seeds

Chapters are MyST Markdown notebooks in chapters/; the ones with a `parameters` cell are executed
into _executed/<name>.ipynb, which _toc.yml lists. Everything is validated before anything runs,
so a typo costs a second, not a half-built book.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import yaml

from ecglib import files
from ecglib.experiments import CHAPTER, PLAN, RUNS_LOG, STORE_ONLY, check_executor, describe_store
from ecglib.files import ROOT
RESERVED = ("profile", "executor", "fresh")   # every notebook chapter declares these; build() sets them
# Parameters that switch a part of a chapter off when null, whatever their default's type.
NULLABLE = ("whole_s", "remedy")
LOG_TAIL = 40


class ChapterError(RuntimeError):
    """A chapter's notebook failed; the message holds the failing cell's error."""


def profiles(root=ROOT) -> list[str]:
    return sorted(p.stem for p in (Path(root) / "params").glob("*.yml"))


def load_profile(name: str, root=ROOT) -> dict[str, dict]:
    """chapter -> {parameter: value}; an empty section means the chapter's defaults."""
    valid = profiles(root)
    if name not in valid:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(valid) or '(none in params/)'}")
    path = Path(root) / "params" / f"{name}.yml"
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, (dict, type(None))) for v in data.values()):
        raise ValueError(f"{path} must map chapter names to {{parameter: value}} sections")
    return {chapter: section or {} for chapter, section in data.items()}


def _toc_files(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["file"]] if "file" in node else []) + [f for v in node.values() for f in _toc_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in _toc_files(v)]
    return []


_UNSET = object()   # a default that is not a literal (e.g. list(range(1, 17))): its type is unknown


def _parameters(path: Path) -> dict | None:
    """{name: default} of the notebook's `parameters` cell (in order), or None for a plain page."""
    import jupytext

    for cell in jupytext.read(path).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            try:
                body = ast.parse(cell.source).body
            except SyntaxError as e:
                raise ValueError(f"{path}: the parameters cell is not valid Python: {e}") from None
            defaults = {}
            for node in body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                try:
                    value = ast.literal_eval(node.value) if getattr(node, "value", None) is not None else _UNSET
                except ValueError:
                    value = _UNSET
                defaults.update({t.id: value for t in targets if isinstance(t, ast.Name)})
            return defaults
    return None


def notebook_chapters(root=ROOT) -> dict[str, dict]:
    """Notebook chapters (name -> {parameter: default}), in _toc.yml order."""
    root = Path(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text()) if (root / "_toc.yml").exists() else {}
    order = [Path(f).stem for f in _toc_files(toc)]
    found = {}
    for path in sorted((root / "chapters").glob("*.md"), key=lambda p: (order.index(p.stem) if p.stem in order
                                                                            else len(order), p.stem)):
        names = _parameters(path)
        if names is None:
            continue
        missing = [r for r in RESERVED if r not in names]
        if missing:
            raise ValueError(f"{path}: the parameters cell must declare {', '.join(RESERVED)}; missing {missing}")
        found[path.stem] = names
    return found


def _absolute_settings() -> None:
    """Kernels run with cwd = the project root and inherit os.environ: relative paths must not move."""
    os.environ["ECGLIB_DATA"] = str(files.data_root())
    os.environ["ECGLIB_RESULTS"] = str(files.results_root())
    for k in ("ECGLIB_MIRROR", "ECGLIB_CACHE"):
        if os.environ.get(k):
            os.environ[k] = str(Path(os.environ[k]).expanduser().resolve())


def _yaml_value(name: str, value):
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ValueError(f"-p {name} {value!r}: not a YAML value ({str(e).splitlines()[0]})") from None


# Ranges of numeric parameters by name (a list is checked item by item): (pattern, integer?, test, rule).
# The type otherwise follows the default in the chapter's parameters cell.
_RANGES = [
    (r".*(depths?|epochs|steps|repeats|batch|batch_size|width|n_train|length|lengths|pools?|per_class)",
     True, lambda v: v >= 1, ">= 1"),
    (r".*fractions?", False, lambda v: 0 < v <= 1, "in (0, 1]"),
    (r"(.*_)?(fs|s)|lr", False, lambda v: v > 0, "> 0"),
]
_PLURAL = {"an integer": "integers", "a number": "numbers", "a string": "strings", "true or false": "booleans",
           "a mapping": "mappings", "a list": "lists"}


def _expected(name: str, default, item: bool = False):
    """(what a value must be, in words; a test), from the parameter's default; None if anything goes."""
    if default is None or default is _UNSET:
        return None
    if isinstance(default, (list, tuple)):
        inner = _expected(name, default[0], item=True) if default and len({type(d) for d in default}) == 1 else None
        if inner is None:
            return "a list", lambda v: isinstance(v, list)
        words, test = inner
        head = next(k for k in _PLURAL if words.startswith(k))
        return (f"a non-empty list of {_PLURAL[head]}{words[len(head):]}",
                lambda v: isinstance(v, list) and len(v) > 0 and all(test(x) for x in v))
    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, (int, float)):
        if name == "seeds":   # a number of seeds, or (in a list) the seeds themselves
            rule = (True, lambda v: v >= 0, ">= 0") if item else (True, lambda v: v >= 1, ">= 1")
        else:
            rule = next((r[1:] for r in _RANGES if re.fullmatch(r[0], name)), None)
        integer = rule[0] if rule else isinstance(default, int)

        def test(v):
            ok = isinstance(v, int) and not isinstance(v, bool) or (not integer and isinstance(v, float))
            return ok and (rule is None or rule[1](v))
        return ("an integer" if integer else "a number") + (f" {rule[2]}" if rule else ""), test
    if isinstance(default, str):
        return "a string", lambda v: isinstance(v, str)
    if isinstance(default, dict):
        return "a mapping", lambda v: isinstance(v, dict)
    return None


def _check_value(where: str, chapter: str, name: str, value, default):
    """The value to pass, or a ValueError naming the parameter and what it must be."""
    if value is None and name in NULLABLE:
        return None
    if isinstance(default, float) and isinstance(value, str):
        try:
            value = float(value)   # PyYAML reads 1e-3 as a string
        except ValueError:
            pass
    expected = _expected(name, default)
    if expected is not None and not expected[1](value):
        shown = repr(default) if len(repr(default)) <= 60 else repr(default)[:56] + " ..."
        raise ValueError(f"{where}: {name} of chapter {chapter} must be {expected[0]} (its default is "
                         f"{shown}), got {value!r}")
    return value


def _plan(root: Path, profile: str, chapters, overrides, executor, fresh, render,
          store_only: bool = False) -> tuple[list[str], dict[str, dict]]:
    """Validate everything; return the chapters to execute and each one's parameters."""
    if fresh and store_only:
        raise ValueError("--fresh retrains every run and --store-only trains none: pass one of them")
    available = notebook_chapters(root)
    sections = load_profile(profile, root)
    if executor is not None:
        check_executor(executor)
    selected = list(available) if not chapters else list(dict.fromkeys(chapters))
    unknown = [c for c in selected if c not in available]
    if unknown:
        raise ValueError(f"unknown chapter(s) {', '.join(map(repr, unknown))}; valid chapters: "
                         f"{', '.join(available) or '(no notebook chapters in chapters/)'}")
    raw = {k: v for k, v in (overrides or {}).items()}
    values = {k: _yaml_value(k, v) for k, v in raw.items()}
    reserved = [k for k in values if k in RESERVED]
    if reserved:
        raise ValueError(f"parameter(s) {reserved} are set by build itself: use --profile, --executor, --fresh")
    valid = sorted({p for c in selected for p in available[c]} - set(RESERVED))
    bad = [k for k in values if k not in valid]
    if bad:
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, bad))} for chapter(s) {', '.join(selected)}; "
                         f"valid parameters: {', '.join(valid) or '(none)'}")
    # Chapters not asked for still run if they were never executed and the book is rendered: it must render whole.
    never_run = [c for c in available if render and c not in selected
                 and not (root / "_executed" / f"{c}.ipynb").exists()]
    run = [c for c in available if c in selected or c in never_run]
    params = {}
    for c in run:
        section = sections.get(c, {})
        stray = [k for k in section if k not in available[c] or k in RESERVED]
        if stray:
            raise ValueError(f"params/{profile}.yml, section {c}: unknown parameter(s) {stray}; valid parameters of "
                             f"{c}: {', '.join(p for p in available[c] if p not in RESERVED)}")
        chosen = {k: (f"params/{profile}.yml, section {c}", v) for k, v in section.items()}
        if c in selected:   # overrides are for the chapters asked for, not the ones run to complete the book
            chosen |= {k: (f"-p {k} {raw[k]!r}", v) for k, v in values.items() if k in available[c]}
        params[c] = {k: _check_value(where, c, k, v, available[c][k]) for k, (where, v) in chosen.items()}
        params[c] |= {"profile": profile, "executor": executor or "local", "fresh": bool(fresh)}
    return run, params


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _write_json(path: Path, data) -> None:
    with files.atomic_write(path) as f:
        json.dump(data, f, indent=1)


def execute_chapter(name: str, parameters: dict, root=ROOT, store_only: bool = False, plan=None) -> float:
    """papermill one chapter into _executed/<name>.ipynb; the failing cell's error becomes a ChapterError.

    papermill writes as it goes, so it writes <name>.partial.ipynb, renamed only when every cell ran:
    a failed or killed chapter never leaves a notebook that a later build would take as done. The kernel lists
    the stored runs it reads in _executed/<name>.runs.txt (experiments.RUNS_LOG), renamed with the notebook;
    `store_only` makes its sweeps refuse to train (experiments.STORE_ONLY).

    `plan` (a JSONL file; experiments.PLAN) executes the chapter into the plan file's folder instead, training
    nothing: its sweeps list the runs the store lacks in `plan` and go on with placeholders. A chapter on
    placeholders may fail in a figure or a table, so a failing cell does not stop the cells after it (every sweep
    is still reached); the notebook keeps the errors."""
    import jupytext
    import nbformat
    import papermill as pm

    root = Path(root)
    folder = Path(plan).parent if plan else root / "_executed"
    done = folder / f"{name}.ipynb"
    out = done.with_suffix(".partial.ipynb")
    out.parent.mkdir(exist_ok=True)
    nb = jupytext.read(root / "chapters" / f"{name}.md")
    hide_parameters(nb)
    runs_log = out.with_suffix(".runs.txt")
    runs_log.write_text("")
    # The kernel inherits os.environ; patched only while this chapter runs, so nothing leaks into the caller.
    env = {RUNS_LOG: str(runs_log), CHAPTER: name, **({STORE_ONLY: "1"} if store_only else {}),
           **({PLAN: str(plan)} if plan else {})}
    t0 = time.time()
    try:
        with mock.patch.dict(os.environ, env):
            executed = pm.execute_notebook(nb, out, parameters=parameters,
                                           cwd=root, progress_bar=False, allow_errors=bool(plan),
                                           # ipykernel's start-up warning about TCP would otherwise land in the
                                           # first cell's output
                                           extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except pm.PapermillExecutionError as e:
        if not plan:
            trace = _strip_ansi("\n".join(e.traceback)).strip().splitlines()[-LOG_TAIL:]
            raise ChapterError(f"chapter {name!r} failed at In[{e.exec_count}]: {e.ename}: {e.evalue}\n"
                               + "\n".join(trace) + f"\n(the partly executed notebook is {out})") from None
        executed = nbformat.read(out, as_version=4)   # every cell ran (allow_errors); papermill saved each
    hide_parameters(executed)
    nbformat.write(executed, out)
    os.replace(runs_log, done.with_suffix(".runs.txt"))
    os.replace(out, done)
    return time.time() - t0


def hide_parameters(nb) -> None:
    """Keep parameters out of the reader's way: the chapter's defaults (`parameters`) and papermill's
    `injected-parameters` (the values this build used) are removed from the page but stay in the notebook for
    papermill; the reproducibility page lists every chapter's values."""
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]


def render_book(root=ROOT) -> Path:
    """jupyter-book build, warnings as errors; the log's tail on failure."""
    root = Path(root)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else shutil.which("jupyter-book") or "jupyter-book",
           "build", str(root), "-W", "--keep-going"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-LOG_TAIL:])
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); last lines of its log:\n{tail}")
    return root / "_build" / "html" / "index.html"


def export_ledger(html: Path, runtimes_path: Path) -> list[Path]:
    """The claims ledger as CSV and JSON beside the rendered book, each verdict with its chapter's profile."""
    from ecglib import ledger

    runtimes = json.loads(runtimes_path.read_text()) if runtimes_path.exists() else {}
    return ledger.export(html, profiles={name: r["profile"] for name, r in runtimes.items()})


def build(profile: str = "default", chapters=None, overrides=None, executor=None, fresh: bool = False,
          render: bool = True, root=None, dry_run: bool = False, store_only: bool = False) -> Path:
    """Execute the chapters (all, or `chapters`) with `profile` + `overrides`, then render the book.

    `overrides` maps parameter names to values; strings are read as YAML ("5" -> 5, "[1,2]" -> a list).
    `dry_run` validates everything and prints what would execute, with which parameters, and stops.
    `store_only` renders from the results store and trains nothing: a chapter that needs a missing run fails,
    naming it (experiments.StoreOnlyError).
    Returns the book's index.html (or the _executed folder when render=False or dry_run)."""
    root = Path(root or ROOT).resolve()
    run, params = _plan(root, profile, chapters, overrides, executor, fresh, render, store_only)
    if dry_run:
        for name in run:
            print(f"{name}: " + ", ".join(f"{k}={v!r}" for k, v in params[name].items()), flush=True)
        print(f"dry run: would execute {len(run)} chapter(s)" + (" and render the book" if render else ""))
        return root / "_executed"
    _absolute_settings()
    print(describe_store(), flush=True)
    runtimes_path = root / "_executed" / "runtimes.json"
    for i, name in enumerate(run, 1):
        print(f"[{i}/{len(run)}] {name}: executing with the {profile} profile ...", flush=True)
        seconds = execute_chapter(name, params[name], root, store_only)
        runtimes = json.loads(runtimes_path.read_text()) if runtimes_path.exists() else {}
        runtimes[name] = {"seconds": round(seconds, 1), "profile": profile, "store_only": store_only,
                          "parameters": params[name],
                          "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_json(runtimes_path, runtimes)
        print(f"[{i}/{len(run)}] {name}: done in {seconds:.0f} s", flush=True)
    if not render:
        return root / "_executed"
    print("rendering with jupyter-book ...", flush=True)
    index = render_book(root)
    export_ledger(index.parent, runtimes_path)
    print(f"book: {index}", flush=True)
    return index

