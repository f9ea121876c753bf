"""Rebuild the book: make the profile's data, train its runs (several side by side where the
profile asks), execute every notebook with the profile's parameters (jupytext → papermill),
then build the Jupyter Book.

The notebooks' sources are MyST text notebooks in ``book/notebooks``; the executed copies go to
``book/executed`` (git-ignored), which is what the book renders.
"""

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml
from nbclient.exceptions import DeadKernelError

from analysis_lib.core import env
from analysis_lib.core.console import Console
from analysis_lib.core.errors import AnalysisError, DataError
from analysis_lib.core.files import git_commit, held_lock
from analysis_lib.core.paths import BOOK, ROOT
from analysis_lib.data.manifest import SimulatedSet, load_manifest, make_missing, verify
from analysis_lib.sim.config import GENERATOR_VERSION
from analysis_lib.sim.simulate import simulate
from analysis_lib.sparse import native
from analysis_lib.study import pool
from analysis_lib.study.build_times import BuildTimes, cpu_model, usable_cores
from analysis_lib.study.chapter_params import scorings as scorings_of
from analysis_lib.study.experiments import profile_runs
from analysis_lib.study.pool import train_all
from analysis_lib.study.profiles import Profile, load_profile


def notebook_order(book: Path = BOOK) -> list[str]:
    """Notebook names in the order of the table of contents."""
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    entries = [toc.get("root", "")]
    for part in toc.get("parts", []) + [{"chapters": toc.get("chapters", [])}]:
        entries += [c["file"] for c in part.get("chapters", [])]
    return [Path(e).name for e in entries if e.startswith("executed/")]


#: Notebooks that read the others' recorded results, so run after them whatever their place.
RUN_LAST = ("findings", "overview")

#: Notebooks that time the machine (Table II, Figures 3-5 and 10-11): each runs by itself,
#: before the others, and trains the runs whose wall time it reports (``training.alone``). The
#: others measure no time, and run side by side, as many as the profile trains side by side.
RUN_ALONE = ("sparse_vs_dense", "architecture")


def execution_order(book: Path = BOOK) -> list[str]:
    """The table of contents' order, with :data:`RUN_ALONE` moved to the front and
    :data:`RUN_LAST` to the end, in its own order."""
    order = notebook_order(book)
    first = [n for n in order if n in RUN_ALONE]
    last = [n for n in RUN_LAST if n in order]
    return first + [n for n in order if n not in first + last] + last


class BuildError(AnalysisError, RuntimeError):
    """A notebook or the book build failed."""


def _source_cell(notebook, source: str) -> str:
    """'code cell N (first line)' of the text notebook's cell whose source is ``source``,
    counted as a reader of the source file counts them (papermill's injected cell is not)."""
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    number = code.index(source) + 1 if source in code else "?"
    first = source.strip().splitlines()[0] if source.strip() else ""
    return f"code cell {number} ({first[:60]!r})"


def _hide_injected_cell(path: Path) -> None:
    """Tag papermill's injected-parameters cell ``remove-cell`` and drop the input and output
    paths papermill records: the rendered chapter and its downloadable notebook show results,
    not the building machine's folders (the provenance line names the profile)."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    for key in ("input_path", "output_path"):
        notebook.metadata.get("papermill", {}).pop(key, None)
    nbformat.write(notebook, path)


def execute_notebooks(profile: Profile, book: Path = BOOK, only: list[str] | None = None
                      ) -> dict[str, float]:
    """Run each notebook with papermill, which sets its ``profile``; the notebook asks
    :func:`analysis_lib.study.profiles.chapter` for the rest. The notebooks of :data:`RUN_ALONE` run
    first, one at a time, then the others ``profile.training.workers`` at a time (on 2 cores
    the ci profile's seven took about 65 s, against 108 s one after another), then
    :data:`RUN_LAST`. A failing cell stops the build with the notebook and cell named.
    Returns each notebook's wall time in seconds."""
    executed = book / "executed"
    executed.mkdir(exist_ok=True)
    running: dict[str, float] = {}
    took: dict[str, float] = {}

    def run(name: str) -> None:
        running[name] = time.perf_counter()
        try:
            _execute(book / "notebooks" / f"{name}.md", executed / f"{name}.ipynb", profile)
            took[name] = time.perf_counter() - running[name]
        finally:
            del running[name]

    order = [n for n in execution_order(book) if only is None or n in only]
    order += [n for n in only or () if n not in order]
    alone = [n for n in order if n in RUN_ALONE]
    last = [n for n in order if n in RUN_LAST]
    side_by_side = [n for n in order if n not in alone + last]
    path = os.environ.get("PATH", "")
    # the kernels' python must be this environment's; PATH is restored after
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + path
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(running, stop), daemon=True).start()
    try:
        for name in alone:
            run(name)
        with ThreadPoolExecutor(max(1, profile.training.workers)) as pool:
            for _ in pool.map(run, side_by_side):
                pass
        for name in last:
            run(name)
    finally:
        stop.set()
        os.environ["PATH"] = path
    return took


def _heartbeat(running: dict[str, float], stop: threading.Event) -> None:
    """Every :data:`~analysis_lib.study.pool.PROGRESS_EVERY_S`, the notebooks executing and
    for how long, until ``stop``: a notebook that trains or times for minutes is not a hang."""
    while not stop.wait(pool.PROGRESS_EVERY_S):
        now = time.perf_counter()
        names = [f"{name} ({now - start:.0f} s)" for name, start in list(running.items())]
        if names:
            print(f"[reproduce] executing: {', '.join(names)}", flush=True)


def _execute(source: Path, target: Path, profile: Profile) -> None:
    """Execute one text notebook into ``target`` with papermill (see :func:`execute_notebooks`)."""
    name = source.stem
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    start = time.perf_counter()
    print(f"[reproduce] {name}: executing ({profile.name} profile)", flush=True)
    where = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    try:
        papermill.execute_notebook(notebook, str(target), parameters={"profile": profile.name},
                                   cwd=str(ROOT), kernel_name="python3", progress_bar=False)
    except papermill.PapermillExecutionError as err:
        raise BuildError(f"notebook {where} failed in {_source_cell(notebook, err.source)}: "
                         f"{err.ename}: {err.evalue}") from None
    except DeadKernelError:
        raise BuildError(f"notebook {where}: its kernel died (killed, usually for lack of "
                         f"memory); run it alone with `reproduce --only {name}`") from None
    _hide_injected_cell(target)
    print(f"[reproduce] {name}: done in {time.perf_counter() - start:.0f} s", flush=True)


#: How often a terminal's in-place training status is redrawn (a log gets a line every
#: :data:`~analysis_lib.study.pool.PROGRESS_EVERY_S`).
TERMINAL_PROGRESS_EVERY_S = 5.0


def train_runs(profile: Profile, missing: Sequence[str] = ()) -> None:
    """Train the profile's runs before its chapters as its
    :class:`~analysis_lib.study.profiles.Training` says (see
    :func:`~analysis_lib.study.pool.train_all`), and evaluate them on the held-out sets
    the chapters' ``scorings`` list; the chapters then find both cached. The ``missing`` data
    sets are made by the same workers, each before the first run that reads it (the
    chain of the main network need not wait for the sets that only later runs and the
    chapters read). With one worker every chapter trains and evaluates its runs when it first
    needs them, and the missing sets are made here first."""
    workers, alone = profile.training.workers, profile.training.alone
    if workers == 1:
        if missing:
            make_data(profile.name, profile.manifest_path)
        return
    manifest = load_manifest(profile.manifest_path)
    runs = profile_runs(profile.runs, manifest.path_of, data_sha256=manifest.sha256_of)
    start = time.perf_counter()
    scorings: dict[str, list[tuple[Path, bool]]] = {}
    for params in profile.notebooks.values():
        for scoring in scorings_of(params):
            if scoring.run not in alone:
                scorings.setdefault(scoring.run, []).append(
                    (manifest.path_of(scoring.test_set), scoring.relabeled))
    console = Console()
    try:
        train_all({name: run for name, run in runs.items() if name not in alone}, workers,
                  report=console.line, scorings=scorings,
                  progress=console.progress if console.live else None,
                  progress_every=TERMINAL_PROGRESS_EVERY_S if console.live else None,
                  data={manifest.path_of(name): partial(make_in_worker, profile.manifest_path,
                                                        name) for name in missing})
    finally:
        console.close()
    print(f"[reproduce] training: done in {time.perf_counter() - start:.0f} s", flush=True)


def build_book(book: Path = BOOK) -> None:
    """jupyter-book build with warnings as errors; the HTML lands in ``_build/html``."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(book), "--path-output", str(ROOT), "-W",
           "--keep-going"]
    # the notebooks were just executed: the book's extension (book.build) need not look
    result = subprocess.run(cmd, cwd=ROOT, env={**os.environ, env.BOOK_EXECUTED: "1"})
    if result.returncode != 0:
        raise BuildError(f"jupyter-book build failed (exit {result.returncode})")


def build_simulated_set(entry: SimulatedSet, path: Path, workers: int | None = None) -> Path:
    """The manifest's builder: simulate a set with its recorded seed, size and dimension, on
    ``workers`` processes (default: every core, with a progress bar)."""
    if entry.generator_version != GENERATOR_VERSION:
        raise DataError(f"{entry.name}: the manifest asks for generator version "
                        f"{entry.generator_version!r} but this code is version "
                        f"{GENERATOR_VERSION!r}; use a matching release or update the manifest")
    return simulate(path, entry.n_events, entry.size, entry.seed, dim=entry.dim,
                    workers=workers, progress=workers is None)


def make_in_worker(manifest_path: Path, name: str) -> list[Path]:
    """Make one simulated set, checked against its recorded hash, in a training worker, which
    has one core (picklable by name)."""
    manifest = load_manifest(manifest_path)
    entry = manifest.entry(name)
    alone = dataclasses.replace(manifest, simulated=(entry,))
    return make_missing(alone, entry.profiles[0], partial(build_simulated_set, workers=1))


def make_data(profile_name: str, manifest_path: Path, later: bool = False) -> list[str]:
    """Verify every hash the manifest records for the profile's simulated sets and build the
    missing ones; with ``later`` build none and return their names (for :func:`train_runs`,
    whose workers make them as the trainings need them)."""
    manifest = load_manifest(manifest_path)
    names = [s.name for s in manifest.sets_for(profile_name)]
    if later and names:
        return [name for name, status in verify(manifest, names) if status == "missing"]
    for path in make_missing(manifest, profile_name, build_simulated_set):
        print(f"[data] built {path.relative_to(manifest.data_dir.parent)}", flush=True)
    return []


#: The lock a build of this checkout holds while it runs (see :func:`reproduce`).
BUILD_LOCK = ROOT / ".reproduce.lock"


def reproduce(profile_name: str, only: list[str] | None = None, skip_build: bool = False,
              wait: bool = False) -> None:
    """Make the data, execute the notebooks and build the book for one profile. One build of
    a checkout runs at a time (:data:`BUILD_LOCK`): two would share its networks and files,
    and the chapters that time the machine would time each other. A second build is refused
    in one line, or with ``wait`` queues behind the first."""
    profile = load_profile(profile_name)
    with held_lock(BUILD_LOCK, lambda holder: f"another build of this checkout is running "
                   f"({holder}); wait for it to finish, or pass --wait to queue behind it",
                   wait):
        start = time.perf_counter()
        full = only is None
        missing = make_data(profile_name, profile.manifest_path,
                            later=full and profile.training.workers > 1)
        data_done = time.perf_counter()
        if full:
            train_runs(profile, missing)
        training_done = time.perf_counter()
        notebooks = execute_notebooks(profile, only=only)
        notebooks_done = time.perf_counter()
        if not skip_build:
            build_book()
        end = time.perf_counter()
        if full:  # a full build: the README's timings come from this record
            BuildTimes(profile_name, git_commit(ROOT), cpu_model(), usable_cores(),
                       native.instruction_set() or "none (im2col)", data_done - start,
                       training_done - data_done, notebooks,
                       None if skip_build else end - notebooks_done, end - start).record()
    print(f"[reproduce] {profile_name} profile finished in {end - start:.0f} s")
