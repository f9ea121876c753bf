"""Every page of the built book opened in headless Chromium, as a reader's browser opens it.

A page fails on: an image that does not decode, a console error or uncaught exception, a request
that fails or answers ≥ 400, a traceback in the text, a path of the building machine in the
text, or fewer figures than its executed notebook draws. Each page's screenshot is written to
``_build/screenshots/``. Chromium is Debian's (``/usr/bin/chromium``, installed by ``make``
where missing), driven by Playwright; the pages are served over HTTP on localhost.
"""

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat

from analysis_lib.core.errors import AnalysisError
from analysis_lib.core.paths import BOOK, ROOT

#: Chromium's flags on a machine with no screen and a closed network (without the
#: background-networking ones it tries Google's hosts at every start).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")

#: Text that means a cell failed where the reader sees it.
TRACEBACK_MARKERS = ("Traceback (most recent call last)",)

#: Pages Sphinx writes that are not chapters (they have no figures and need no check).
SKIPPED = ("genindex.html", "search.html")


class BrowserError(AnalysisError, RuntimeError):
    """No browser to check the book with."""


@dataclass(frozen=True)
class PageCheck:
    """What the browser saw on one page."""

    page: str
    images: int
    expected_images: int
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def chromium_path() -> Path:
    """Debian's Chromium, or a BrowserError saying how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise BrowserError("no Chromium on this machine; install Debian's `chromium` package "
                           "(`make test` does where it can)")
    return Path(found)


def drawn_figures(notebook: Path) -> int:
    """Images the executed notebook shows: image outputs of cells not removed from the page."""
    count = 0
    for cell in nbformat.read(notebook, as_version=4).cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type != "code" or tags & {"remove-cell", "remove-output"}:
            continue
        count += sum(any(k.startswith("image/") for k in out.get("data", {}))
                     for out in cell.get("outputs", []))
    return count


def machine_paths() -> tuple[str, ...]:
    """Folders of the building machine that must not appear in a page's text."""
    paths = {str(ROOT), str(Path.home())}
    return tuple(sorted(p for p in paths if len(p) > 1))


@contextmanager
def _served(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on a free localhost port, for the ``with`` block."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def pages_of(html: Path) -> list[Path]:
    """The book's pages: every HTML file but Sphinx's own index and search pages and the
    copies under ``_static``, ``_sources`` and ``_images``."""
    return sorted(p for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_") and p.name not in SKIPPED)


def check_pages(html: Path, pages: list[Path], expected: dict[str, int] | None = None,
                screenshots: Path | None = None) -> list[PageCheck]:
    """Open each of ``pages`` (under ``html``) and report what failed; ``expected`` maps a
    page's path relative to ``html`` to the figures it must show."""
    from playwright.sync_api import sync_playwright

    expected = expected or {}
    forbidden = machine_paths()
    results = []
    with _served(html) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path()),
                                             args=list(CHROMIUM_FLAGS))
        try:
            for path in pages:
                name = path.relative_to(html).as_posix()
                results.append(_check_page(browser, f"{base}/{name}", name,
                                           expected.get(name, 0), forbidden, screenshots))
        finally:
            browser.close()
    return results


def _check_page(browser, url: str, name: str, expected_images: int,
                forbidden: tuple[str, ...], screenshots: Path | None) -> PageCheck:
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_load_state("networkidle")
        images = page.eval_on_selector_all("img",
                                           "els => els.map(e => [e.currentSrc || e.src, "
                                           "e.complete && e.naturalWidth > 0])")
        broken = [src for src, ok in images if not ok]
        problems += [f"broken image: {src}" for src in broken]
        text = page.inner_text("body")
        problems += [f"traceback in the text ({m!r})" for m in TRACEBACK_MARKERS if m in text]
        problems += [f"a path of the building machine in the text ({p})" for p in forbidden
                     if p in text]
        shown = page.eval_on_selector_all("main img, article img", "els => els.length")
        if shown < expected_images:
            problems.append(f"{shown} figures shown, the notebook draws {expected_images}")
        if screenshots is not None:
            target = screenshots / (name.replace("/", "_").removesuffix(".html") + ".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target), full_page=True)
    finally:
        page.close()
    return PageCheck(name, len(images), expected_images, tuple(dict.fromkeys(problems)))


def check_book(html: Path = ROOT / "_build" / "html", book: Path = BOOK,
               screenshots: Path | None = ROOT / "_build" / "screenshots") -> list[PageCheck]:
    """Check every page of the built book; each chapter must show the figures its executed
    notebook in ``book/executed`` draws."""
    if not (html / "index.html").is_file():
        raise BrowserError(f"no built book in {html}; run `make book` first")
    expected = {f"executed/{nb.stem}.html": drawn_figures(nb)
                for nb in sorted((book / "executed").glob("*.ipynb"))}
    return check_pages(html, pages_of(html), expected, screenshots)
