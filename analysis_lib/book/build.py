"""A Sphinx extension (declared in ``_config.yml``) that makes ``jupyter-book build book`` build
the whole book by itself (and renders each page's scripts once, see
:func:`_one_of_each_script`): before Sphinx reads the pages, every chapter whose executed notebook
is missing, older than its source or the profile's parameters, or executed for another profile
is executed by ``python -m analysis_lib reproduce --no-build`` (networks already trained are
reused). Without it the build would render the introduction alone and exit 0.

The profile is ``$ANALYSIS_LIB_PROFILE`` (default ``ci``). ``reproduce`` sets
``$ANALYSIS_LIB_BOOK_EXECUTED`` when it builds the book itself, having just executed everything.
"""

import subprocess
import sys
from pathlib import Path

import nbformat

from analysis_lib.core import env
from analysis_lib.core.errors import AnalysisError
from analysis_lib.core.paths import BOOK, ROOT


class ChapterExecutionError(AnalysisError, RuntimeError):
    """The chapters could not be executed: one line saying what to run instead."""


def _executed_profile(path: Path) -> str | None:
    """The profile papermill executed ``path`` with, or None if it cannot be read."""
    try:
        notebook = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return None
    return notebook.metadata.get("papermill", {}).get("parameters", {}).get("profile")


def stale_chapters(profile: str, book: Path = BOOK) -> list[str]:
    """The table of contents' notebooks whose executed copy is missing, older than its source
    or than ``book/params/<profile>.yaml``, or executed for another profile."""
    from analysis_lib.study.reproduce import notebook_order

    params = book / "params" / f"{profile}.yaml"
    stale = []
    for name in notebook_order(book):
        executed, source = book / "executed" / f"{name}.ipynb", book / "notebooks" / f"{name}.md"
        newest_input = max(source.stat().st_mtime, params.stat().st_mtime)
        if (not executed.is_file() or executed.stat().st_mtime < newest_input
                or _executed_profile(executed) != profile):
            stale.append(name)
    return stale


def execute_stale(profile: str, book: Path = BOOK) -> list[str]:
    """Execute the stale chapters (all of them through the whole pipeline when none is fresh,
    so the profile's runs train side by side first); the findings and overview pages, which
    read the others' results, run again whenever any chapter did. Returns what was stale."""
    from analysis_lib.study.reproduce import RUN_LAST, notebook_order

    stale = stale_chapters(profile, book)
    if not stale:
        return []
    command = [sys.executable, "-m", "analysis_lib", "reproduce", "--profile", profile,
               "--no-build", "--wait"]
    every = notebook_order(book)
    if len(stale) < len(every):
        command += ["--only", *stale, *(n for n in RUN_LAST if n in every and n not in stale)]
    print(f"[book] {len(stale)} of {len(every)} chapters to execute ({profile} profile): "
          f"python {' '.join(command[1:])}", flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise ChapterExecutionError(f"executing the {profile} profile's chapters failed "
                                    f"(above); fix it, or run `make book`, then build again")
    return stale


def _on_config_inited(app, config) -> None:
    if env.setting(env.BOOK_EXECUTED):
        return
    profile = env.setting(env.PROFILE, "ci")
    try:
        execute_stale(profile, Path(app.srcdir))
    except ChapterExecutionError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _one_of_each_script(app, pagename, templatename, context, doctree) -> None:
    """Drop a page's repeated inline scripts. Sphinx 7 registers a script added with no file
    name twice (as None and as ""), so sphinx-thebe's configuration, a ``const``, is declared
    twice and the browser logs an error on every page (fixed in Sphinx 8.2)."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for script in scripts:
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app) -> dict:
    """Sphinx entry point."""
    app.connect("config-inited", _on_config_inited)
    app.connect("html-page-context", _one_of_each_script)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
