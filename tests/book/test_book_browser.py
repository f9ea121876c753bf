"""The browser check of the built book, on planted pages: it must fail on what a reader would
see broken and pass a sound page. Needs Debian's Chromium (`make test` installs it)."""

import base64
import shutil

import nbformat
import pytest

from analysis_lib.book.browser import check_pages, drawn_figures, machine_paths, pages_of

pytest.importorskip("playwright")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("chromium") is None,
                                 reason="no Chromium (make test installs Debian's)")]

# a 1x1 PNG
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
                         "DwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def _page(body: str) -> str:
    return f"<!doctype html><html><head><title>t</title></head><body><main>{body}</main></body>" \
        "</html>"


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    html = tmp_path_factory.mktemp("html")
    (html / "pixel.png").write_bytes(PIXEL)
    pages = {
        "sound.html": _page("<p>fine</p><img src='pixel.png'><img src='pixel.png'>"),
        "missing_image.html": _page("<img src='pixel.png'><img src='gone.png'>"),
        "console_error.html": _page("<script>console.error('boom')</script>"),
        "traceback.html": _page("<pre>Traceback (most recent call last):\n  File x</pre>"),
        "machine_path.html": _page(f"<p>read from {machine_paths()[0]}/data/x.h5</p>"),
        "too_few.html": _page("<img src='pixel.png'>"),
    }
    for name, text in pages.items():
        (html / name).write_text(text)
    expected = {"sound.html": 2, "too_few.html": 3}
    results = check_pages(html, pages_of(html), expected, screenshots=html / "shots")
    return {r.page: r for r in results}, html


def test_sound_page_passes_and_is_screenshotted(checked):
    results, html = checked
    assert results["sound.html"].passed, results["sound.html"].problems
    assert results["sound.html"].images == 2
    assert (html / "shots" / "sound.png").stat().st_size > 0


def test_planted_missing_image_fails(checked):
    problems = " | ".join(checked[0]["missing_image.html"].problems)
    assert "broken image" in problems and "gone.png" in problems
    assert "HTTP 404" in problems


@pytest.mark.parametrize("page, words", [
    ("console_error.html", "console error: boom"),
    ("traceback.html", "traceback in the text"),
    ("machine_path.html", "a path of the building machine"),
    ("too_few.html", "1 figures shown, the notebook draws 3"),
])
def test_each_defect_fails_its_page(checked, page, words):
    result = checked[0][page]
    assert not result.passed
    assert any(words in p for p in result.problems), result.problems


def test_drawn_figures_counts_images_the_page_shows(tmp_path):
    image = nbformat.v4.new_output("display_data", data={"image/png": "", "text/plain": ""})
    shown = nbformat.v4.new_code_cell("plot()", outputs=[image, image])
    removed = nbformat.v4.new_code_cell("plot()", outputs=[image],
                                        metadata={"tags": ["remove-output"]})
    text = nbformat.v4.new_code_cell("print()", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="x")])
    path = tmp_path / "n.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[shown, removed, text]), path)
    assert drawn_figures(path) == 2
