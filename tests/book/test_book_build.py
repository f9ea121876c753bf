"""`jupyter-book build book` alone: the extension finds the chapters that need executing and
runs `reproduce` for them, or stops the build with one line."""

import os
import types

import nbformat
import pytest

from analysis_lib.book import build
from analysis_lib.core import env

TOC = """format: jb-book
root: intro
parts:
  - chapters:
      - file: executed/alpha
      - file: executed/findings
"""


@pytest.fixture
def book(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "executed").mkdir()
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "params" / "ci.yaml").write_text("shared: {}\n")
    for name in ("alpha", "findings"):
        (tmp_path / "notebooks" / f"{name}.md").write_text("# x\n")
    return tmp_path


def _execute(book, name, profile="ci", age=0.0):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["papermill"] = {"parameters": {"profile": profile}}
    path = book / "executed" / f"{name}.ipynb"
    nbformat.write(notebook, path)
    later = (book / "params" / "ci.yaml").stat().st_mtime + 10 - age
    os.utime(path, (later, later))


def test_missing_older_or_other_profile_is_stale(book):
    assert build.stale_chapters("ci", book) == ["alpha", "findings"]
    _execute(book, "alpha")
    _execute(book, "findings")
    assert build.stale_chapters("ci", book) == []
    _execute(book, "alpha", age=20)  # older than its source
    assert build.stale_chapters("ci", book) == ["alpha"]
    _execute(book, "alpha", profile="paper")
    assert build.stale_chapters("ci", book) == ["alpha"]


def test_runs_reproduce_for_what_is_stale(book, monkeypatch):
    commands = []
    monkeypatch.setattr(build.subprocess, "run", lambda cmd, cwd: commands.append(cmd)
                        or types.SimpleNamespace(returncode=0))
    assert build.execute_stale("ci", book) == ["alpha", "findings"]
    assert "--only" not in commands[-1] and "--no-build" in commands[-1]
    _execute(book, "findings")
    assert build.execute_stale("ci", book) == ["alpha"]
    assert commands[-1][commands[-1].index("--only") + 1:] == ["alpha", "findings"]
    _execute(book, "alpha")
    assert build.execute_stale("ci", book) == []
    assert len(commands) == 2


def test_a_failed_execution_stops_the_build_in_one_line(book, monkeypatch, capsys):
    monkeypatch.setattr(build.subprocess, "run",
                        lambda cmd, cwd: types.SimpleNamespace(returncode=1))
    monkeypatch.delenv(env.BOOK_EXECUTED, raising=False)
    app = types.SimpleNamespace(srcdir=str(book))
    with pytest.raises(SystemExit) as stop:
        build._on_config_inited(app, None)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make book" in err[0]


def test_reproduce_marks_its_own_build_fresh(book, monkeypatch):
    monkeypatch.setenv(env.BOOK_EXECUTED, "1")
    monkeypatch.setattr(build.subprocess, "run", lambda *a, **k: pytest.fail("executed"))
    build._on_config_inited(types.SimpleNamespace(srcdir=str(book)), None)



def test_each_script_is_rendered_once():
    """Sphinx 7 lists an inline script twice (file name None and ""): one must go."""
    js = types.SimpleNamespace
    config = [js(filename=None, attributes={"body": "const A = 1"}),
              js(filename="", attributes={"body": "const A = 1"}),
              js(filename="theme.js", attributes={}), js(filename="theme.js", attributes={}),
              js(filename="other.js", attributes={"async": "async"})]
    context = {"script_files": list(config)}
    build._one_of_each_script(None, "page", "page.html", context, None)
    assert context["script_files"] == [config[0], config[2], config[4]]
