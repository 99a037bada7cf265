"""book.build: validation and papermill on a throwaway two-chapter book (quick), the rendered
throwaway book (`book`), and the real book with the smoke profile (`book`, needs the real data)."""
import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from ecglib import book

HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""


def chapter(title: str, params: str, body: str) -> str:
    return (f"{HEADER}\n# {title}\n\n```{{code-cell}} ipython3\n:tags: [parameters]\n\n"
            f'profile = "default"\nexecutor = "local"\nfresh = False\n{params}\n```\n\n'
            f"```{{code-cell}} ipython3\n{body}\n```\n")


@pytest.fixture
def tiny_book(tmp_path) -> Path:
    """A book like the real one: intro page, two notebook chapters, a profile."""
    root = tmp_path / "book"
    (root / "chapters").mkdir(parents=True)
    (root / "params").mkdir()
    (root / "_config.yml").write_text(yaml.safe_dump({
        "title": "tiny", "author": "tests", "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"}, "exclude_patterns": ["_build"]}))
    (root / "_toc.yml").write_text(yaml.safe_dump({
        "format": "jb-book", "root": "chapters/intro",
        "chapters": [{"file": "_executed/plot"}, {"file": "_executed/echo"}]}))
    (root / "chapters" / "intro.md").write_text("# Intro\n\nA page without code.\n")
    (root / "chapters" / "plot.md").write_text(chapter(
        "Plot", "n = 3", "import matplotlib.pyplot as plt\nfor k in range(2):\n    plt.figure()\n"
        "    plt.plot(range(n))\n    plt.show()"))
    (root / "chapters" / "echo.md").write_text(chapter(
        "Echo", "depths = [1, 2]\nlabel = 'x'",
        "import os, json\nprint(json.dumps({'profile': profile, 'executor': executor, 'fresh': fresh,\n"
        "    'depths': depths, 'label': label, 'cwd': os.getcwd(), 'results': os.environ['ECGLIB_RESULTS']}))"))
    (root / "params" / "smoke.yml").write_text("plot: {n: 2}\necho:\n  label: smoke\n")
    (root / "params" / "default.yml").write_text("plot: {}\necho: {}\n")
    return root


def echoed(root: Path) -> dict:
    nb = nbformat.read(root / "_executed" / "echo.ipynb", as_version=4)
    return json.loads(nb.cells[-1].outputs[0]["text"])


def test_build_validates_everything_before_running(tiny_book):
    cases = [
        (dict(profile="nope"), r"unknown profile 'nope'; valid profiles: default, smoke"),
        (dict(chapters=["nope"]), r"unknown chapter\(s\) 'nope'; valid chapters: plot, echo"),
        (dict(overrides={"nope": "1"}), r"unknown parameter\(s\) 'nope'.*valid parameters: depths, label, n"),
        (dict(chapters=["plot"], overrides={"label": "y"}), r"'label' for chapter\(s\) plot; valid parameters: n$"),
        (dict(overrides={"profile": "full"}), "use --profile"),
        (dict(overrides={"depths": "[1, 2"}), r"-p depths '\[1, 2': not a YAML value"),
        (dict(executor="slurm"), "valid executors: local, process, ray"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            book.build(root=tiny_book, **kwargs)
    (tiny_book / "params" / "smoke.yml").write_text("plot: {m: 2}\n")
    with pytest.raises(ValueError, match=r"params/smoke.yml, section plot: unknown parameter\(s\) \['m'\]"):
        book.build("smoke", root=tiny_book)
    assert not (tiny_book / "_executed").exists()        # nothing ran


def test_build_executes_chapters_with_profile_and_overrides(tiny_book, capsys):
    out = book.build("smoke", chapters=["echo"], overrides={"depths": "[1, 2, 4]"}, executor="process",
                     render=False, root=tiny_book)
    assert out == tiny_book / "_executed" and [p.name for p in out.glob("*.ipynb")] == ["echo.ipynb"]
    got = echoed(tiny_book)
    assert got["profile"] == "smoke" and got["executor"] == "process" and got["fresh"] is False
    assert got["depths"] == [1, 2, 4] and got["label"] == "smoke"      # YAML override; profile value
    assert got["cwd"] == str(tiny_book) and os.path.isabs(got["results"])
    runtimes = json.loads((out / "runtimes.json").read_text())
    assert set(runtimes) == {"echo"} and runtimes["echo"]["profile"] == "smoke"
    assert runtimes["echo"]["seconds"] > 0 and runtimes["echo"]["finished_at"]
    assert "[1/1] echo" in capsys.readouterr().out

    book.build("default", chapters=["echo"], overrides={"label": "again"}, fresh=True, render=False, root=tiny_book)
    got = echoed(tiny_book)
    assert got["label"] == "again" and got["profile"] == "default" and got["fresh"] is True
    assert got["executor"] == "local" and got["depths"] == [1, 2]


def test_a_chapter_lists_its_runs_and_store_only_reaches_its_kernel(tiny_book, monkeypatch):
    # the kernel appends to the list it is given, as experiments.load_records does, and reports store-only
    (tiny_book / "chapters" / "echo.md").write_text(chapter(
        "Echo", "", "import os\nopen(os.environ['ECGLIB_RUNS_LOG'], 'a').write('k1\\nk2\\n')\n"
        "print(os.environ.get('ECGLIB_STORE_ONLY', 'off'))"))
    monkeypatch.delenv("ECGLIB_STORE_ONLY", raising=False)
    monkeypatch.delenv("ECGLIB_RUNS_LOG", raising=False)
    with pytest.raises(ValueError, match="--fresh retrains every run and --store-only trains none"):
        book.build("default", chapters=["echo"], fresh=True, store_only=True, render=False, root=tiny_book)
    out = book.build("default", chapters=["echo"], store_only=True, render=False, root=tiny_book)
    assert (out / "echo.runs.txt").read_text() == "k1\nk2\n" and not list(out.glob("*.partial*"))
    nb = nbformat.read(out / "echo.ipynb", as_version=4)
    assert nb.cells[-1].outputs[0]["text"].strip() == "1"
    runtimes = json.loads((out / "runtimes.json").read_text())
    assert runtimes["echo"]["store_only"] is True and runtimes["echo"]["parameters"]["fresh"] is False
    assert "ECGLIB_STORE_ONLY" not in os.environ and "ECGLIB_RUNS_LOG" not in os.environ   # only the kernel's
    book.build("default", chapters=["echo"], render=False, root=tiny_book)
    assert (out / "echo.runs.txt").read_text() == "k1\nk2\n"             # a new list, not appended to the old
    assert nbformat.read(out / "echo.ipynb", as_version=4).cells[-1].outputs[0]["text"].strip() == "off"
    assert json.loads((out / "runtimes.json").read_text())["echo"]["store_only"] is False


def test_dry_run_prints_the_plan_and_executes_nothing(tiny_book, capsys):
    out = book.build("smoke", chapters=["echo"], overrides={"depths": "[4]"}, dry_run=True, root=tiny_book)
    assert out == tiny_book / "_executed" and not out.exists()
    lines = capsys.readouterr().out.splitlines()
    # a never-executed chapter would run too, so the book renders whole
    assert lines[0] == "plot: n=2, profile='smoke', executor='local', fresh=False"
    assert lines[1].startswith("echo: label='smoke', depths=[4], ")
    assert lines[2] == "dry run: would execute 2 chapter(s) and render the book"


def test_a_failing_chapter_names_its_cell_and_error(tiny_book):
    (tiny_book / "chapters" / "echo.md").write_text(chapter("Echo", "", "x = 1\ny = x / 0"))
    with pytest.raises(book.ChapterError, match=r"chapter 'echo' failed at In\[3\]: ZeroDivisionError") as e:
        book.build("default", chapters=["echo"], render=False, root=tiny_book)
    assert "y = x / 0" in str(e.value)
    # kept for inspection under a name no build takes for a finished chapter: the next one runs it again
    assert str(tiny_book / "_executed" / "echo.partial.ipynb") in str(e.value)
    assert not (tiny_book / "_executed" / "echo.ipynb").exists()
    run, _ = book._plan(tiny_book, "default", ["plot"], None, None, False, True)
    assert run == ["plot", "echo"]


def test_overrides_reach_only_the_selected_chapters(tiny_book):
    (tiny_book / "chapters" / "echo.md").write_text(chapter("Echo", "n = 3\ndepths = [1, 2]\nlabel = 'x'", "n"))
    run, params = book._plan(tiny_book, "smoke", ["echo"], {"n": "5"}, None, False, True)
    assert run == ["plot", "echo"]              # plot was never executed, so it runs to complete the book ...
    assert params["echo"]["n"] == 5 and params["plot"]["n"] == 2   # ... with its profile, not the override


def test_overrides_are_checked_against_the_parameter_defaults(tiny_book):
    cases = [
        ({"n": "2.5"}, r"^-p n '2.5': n of chapter plot must be an integer \(its default is 3\), got 2.5$"),
        ({"n": "true"}, r"n of chapter plot must be an integer"),
        ({"depths": "3"}, r"-p depths '3': depths of chapter echo must be a non-empty list of integers >= 1 "
                          r"\(its default is \[1, 2\]\), got 3"),
        ({"depths": "[1, 0]"}, r"must be a non-empty list of integers >= 1"),
        ({"depths": "[]"}, r"must be a non-empty list of integers >= 1"),
        ({"label": "[1]"}, r"label of chapter echo must be a string"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            book.build("smoke", overrides=overrides, render=False, root=tiny_book)
    (tiny_book / "params" / "smoke.yml").write_text("plot: {n: many}\n")
    with pytest.raises(ValueError, match=r"params/smoke.yml, section plot: n of chapter plot must be an integer"):
        book.build("smoke", render=False, root=tiny_book)
    assert not (tiny_book / "_executed").exists()        # nothing ran
    run, params = book._plan(tiny_book, "default", None, {"n": "7", "depths": "[4, 8]"}, None, False, False)
    assert params["plot"]["n"] == 7 and params["echo"]["depths"] == [4, 8]


def test_real_chapter_parameters_are_checked():
    for profile in book.profiles():             # every shipped profile passes its own checks
        book._plan(book.ROOT, profile, None, None, None, False, True)
    run, params = book._plan(book.ROOT, "smoke", ["depth"], {"seeds": "5"}, None, False, False)
    assert run == ["depth"] and params["depth"]["seeds"] == 5
    _, params = book._plan(book.ROOT, "smoke", ["hybrids"], {"train_fraction": "1e-1"}, None, False, False)
    assert params["hybrids"]["train_fraction"] == 0.1   # YAML 1.1 reads 1e-1 as a string; the default says number
    with pytest.raises(ValueError, match=r"seeds of chapter features must be a non-empty list of integers >= 0"):
        book._plan(book.ROOT, "smoke", ["features"], {"seeds": "5"}, None, False, False)
    _, params = book._plan(book.ROOT, "smoke", ["hybrids"], {"whole_s": "null", "remedy": "null"}, None, False, False)
    assert params["hybrids"]["whole_s"] is None and params["hybrids"]["remedy"] is None   # parts switched off
    with pytest.raises(ValueError, match=r"control_s of chapter hybrids must be a number"):
        book._plan(book.ROOT, "smoke", ["hybrids"], {"control_s": "null"}, None, False, False)


def html_images(html: Path) -> list[str]:
    """src of every <img> in a page, each checked to be inline data or a file that exists."""
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]+)"', html.read_text())
    for src in srcs:
        assert src.startswith("data:") or (html.parent / src).exists(), f"{html}: missing image {src}"
    return srcs


def notebook_images(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if any(k.startswith("image/") for k in o.get("data", {})))


def check_rendered(root: Path) -> None:
    html = root / "_build" / "html"
    assert (html / "index.html").exists()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    for page in [toc["root"]] + book._toc_files(toc.get("parts", toc.get("chapters", []))):
        assert (html / f"{page}.html").exists(), f"no page for {page}"
    for name in book.notebook_chapters(root):
        n = notebook_images(root / "_executed" / f"{name}.ipynb")
        assert len(html_images(html / "_executed" / f"{name}.html")) >= n, f"{name}: figures missing from the page"


@pytest.mark.book
def test_tiny_book_renders_with_its_figures(tiny_book):
    # only "echo" is asked for, but "plot" was never executed: the rendered book must be whole
    index = book.build("smoke", chapters=["echo"], root=tiny_book)
    assert index == tiny_book / "_build" / "html" / "index.html"
    check_rendered(tiny_book)
    assert notebook_images(tiny_book / "_executed" / "plot.ipynb") == 2
    before = (tiny_book / "_executed" / "plot.ipynb").stat().st_mtime_ns
    book.build("smoke", chapters=["echo"], root=tiny_book)
    assert (tiny_book / "_executed" / "plot.ipynb").stat().st_mtime_ns == before   # executed before: left alone


@pytest.mark.book
@pytest.mark.realdata
def test_smoke_book_has_every_page(smoke_book):
    check_rendered(smoke_book)


@pytest.mark.book
@pytest.mark.realdata
def test_smoke_book_records_chapter_runtimes(smoke_book):
    runtimes = json.loads((smoke_book / "_executed" / "runtimes.json").read_text())
    assert set(book.notebook_chapters(smoke_book)) <= set(runtimes)
    assert all(r["profile"] == "smoke" and r["parameters"]["profile"] == "smoke" for r in runtimes.values())
    # every chapter lists the stored runs it read; the reproducibility page charges them to chapters
    reads = {name: (smoke_book / "_executed" / f"{name}.runs.txt").read_text().split()
             for name in book.notebook_chapters(smoke_book)}
    assert reads["depth"] and not reads["data"]
    page = (smoke_book / "_build" / "html" / "_executed" / "reproducibility.html").read_text()
    assert "compute-per-chapter.csv" in page and "stored runs</strong>" in page


@pytest.mark.book
@pytest.mark.realdata
def test_smoke_book_publishes_the_ledger_as_data(smoke_book):
    import pandas as pd

    html = smoke_book / "_build" / "html"
    # commit hashes are text even when all their characters are digits (3080241030... was read as an int)
    table = pd.read_csv(html / "ledger.csv", dtype={"code_version": str, "training_code": str})
    doc = json.loads((html / "ledger.json").read_text())
    assert len(table) > 0 and len(doc["verdicts"]) == len(table)
    assert {"claim", "verdict", "effect", "value", "low", "high", "runs", "n_runs", "code_version",
            "profile"} <= set(table.columns)
    assert set(table["claim"]) <= {f"C{i}" for i in range(1, 14)} and set(table["profile"]) == {"smoke"}
    assert table["code_version"].notna().all() and "missing from the store" not in " ".join(table["code_version"])
    assert [v["claim"] for v in doc["verdicts"]] == list(table["claim"])


def test_parameters_stay_out_of_the_readers_way():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("seeds = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("seeds = 5", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(seeds)", metadata={"tags": ["remove-input"]})])
    book.hide_parameters(nb)
    book.hide_parameters(nb)   # idempotent
    assert [c.metadata["tags"] for c in nb.cells] == [["parameters", "remove-cell"],
                                                      ["injected-parameters", "remove-cell"], ["remove-input"]]
