"""The built book, loaded page by page in headless Chromium (Debian's `chromium`), as a reader would.

Fails on an image that does not load or is drawn too small to read (at a phone width a figure keeps a readable
width and scrolls sideways: _static/figures.css), an internal link whose page or anchor is missing, an output
cell that shows an error, a JavaScript error, math left as raw TeX, or any request that leaves the
machine (the book must read offline: MathJax and every script, style and font are served from it).
Every page is screenshot at a laptop width (1280 px) and a phone width (390 px) into
_build/screenshots/<page>-<width>.png, for a person to look at.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
]
# Without these, Chromium keeps trying to reach Google's services from a closed network.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

# jupyter-book 1.0.4's sphinx-thebe writes its config script twice into every page; the second copy
# throws this on load. It is the theme's, harmless to the content, and would otherwise fail every page.
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

WIDTHS = {"laptop": (1280, 800), "phone": (390, 844)}

# Waits for MathJax (when the page loads it) to typeset, then reads the page. Raw TeX is looked for in
# the text a reader sees: code and typeset math are skipped.
CHECK_PAGE = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
    n.parentElement.closest('pre, code, script, style, mjx-container, .highlight') ? NodeFilter.FILTER_REJECT
                                                                                     : NodeFilter.FILTER_ACCEPT});
  const rawTex = [];
  for (let n; (n = walker.nextNode());) {
    const m = n.textContent.match(/\\[()[\]]|\$\$|\\(begin|frac|sum|cdot)\b/);
    if (m) rawTex.push(n.textContent.trim().slice(0, 80));
  }
  return {
    badImages: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 120)),
    // a figure drawn narrower than 560 px (or its own width, if smaller) has unreadable labels
    shrunk: [...document.querySelectorAll('.cell_output img')]
              .filter(i => i.naturalWidth > 0 && i.getBoundingClientRect().width < Math.min(i.naturalWidth, 560) - 1)
              .map(i => i.src.split('/').pop().slice(0, 60) + ' at ' + Math.round(i.getBoundingClientRect().width) + ' px'),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    errors: [...document.querySelectorAll('.cell_output .traceback, .cell_output .output.error')]
              .map(e => e.textContent.slice(0, 200)),
    rawTex,
  };
}"""


@pytest.fixture(scope="module")
def server(built_book: Path):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _pages(root: Path) -> list[str]:
    skip = {"_static", "_sources", "_images", "_sphinx_design_static"}
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.html") if not skip & set(p.parts))


def _evaluate(page) -> dict:
    """Run the page check once the page has settled; index.html redirects to the first chapter,
    which destroys the context of a check started too early, so settle and try again."""
    for attempt in range(3):
        page.wait_for_load_state("load")
        try:
            return page.evaluate(CHECK_PAGE)
        except playwright.Error:
            if attempt == 2:
                raise
            page.wait_for_timeout(500)


def _offsite(url: str, server: str) -> bool:
    return urlparse(url).scheme not in ("data", "blob", "about") and urlparse(url).netloc != urlparse(server).netloc


def test_every_page_loads_cleanly(built_book: Path, server: str):
    pages = _pages(built_book)
    assert "index.html" in pages
    shots = built_book.parent / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir()
    problems, seen, links = [], {}, []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=dict(zip(("width", "height"), WIDTHS["laptop"])))
        js_errors, offsite = [], []
        page.on("pageerror", lambda e: js_errors.append(str(e)))
        page.on("request", lambda r: offsite.append(r.url) if _offsite(r.url, server) else None)
        for rel in pages:
            url = urljoin(server, rel)
            js_errors.clear()
            offsite.clear()
            for width, height in WIDTHS.values():
                page.set_viewport_size({"width": width, "height": height})
                response = page.goto(url, wait_until="load")
                if response is None or response.status != 200:
                    problems.append(f"{rel}: HTTP {response and response.status}")
                    break
                info = _evaluate(page)
                page.screenshot(path=shots / f"{rel.removesuffix('.html').replace('/', '-')}-{width}.png",
                                full_page=True)
                problems += [f"{rel} at {width} px: image did not load: {src}" for src in info["badImages"]]
                problems += [f"{rel} at {width} px: figure too small to read: {img}" for img in info["shrunk"]]
            else:
                seen[urldefrag(page.url)[0]] = set(info["ids"])
                problems += [f"{rel}: error output: {err}" for err in info["errors"]]
                problems += [f"{rel}: raw TeX on the page: {tex!r}" for tex in info["rawTex"]]
                links += [(rel, href) for href in info["links"]]
            problems += [f"{rel}: JavaScript error: {err}" for err in set(js_errors) if err not in KNOWN_JS_ERRORS]
            problems += [f"{rel}: request leaves the machine: {u[:120]}" for u in sorted(set(offsite))]
        browser.close()

    for rel, href in links:
        target, fragment = urldefrag(href)
        if urlparse(target).netloc != urlparse(server).netloc:
            continue  # external links are not this book's to check
        path = built_book / urlparse(target).path.lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        if not path.exists():
            problems.append(f"{rel}: broken link {href}")
        elif fragment and target in seen and fragment not in seen[target]:
            problems.append(f"{rel}: link to missing anchor {href}")
    assert not problems, "\n".join(problems[:50])
