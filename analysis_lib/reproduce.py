"""Rebuild the book: make the profile's data, train its runs (several side by side where the
profile asks), execute every notebook with the profile's parameters (jupytext → papermill),
then build the Jupyter Book.

The notebooks' sources are MyST text notebooks in ``book/notebooks``; the executed copies go to
``book/executed`` (git-ignored), which is what the book renders.
"""

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml
from nbclient.exceptions import DeadKernelError

from analysis_lib.data.manifest import SimulatedSet, load_manifest, make_missing
from analysis_lib.errors import AnalysisError, ConfigError, DataError
from analysis_lib.experiments import profile_runs, train_all
from analysis_lib.sim.config import GENERATOR_VERSION
from analysis_lib.sim.simulate import simulate
from analysis_lib.study import BOOK, ROOT, Profile, load_profile


def notebook_order(book: Path = BOOK) -> list[str]:
    """Notebook names in the order of the table of contents."""
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    entries = [toc.get("root", "")]
    for part in toc.get("parts", []) + [{"chapters": toc.get("chapters", [])}]:
        entries += [c["file"] for c in part.get("chapters", [])]
    return [Path(e).name for e in entries if e.startswith("executed/")]


#: Notebooks that read the others' recorded results, so run after them whatever their place.
RUN_LAST = ("findings",)


def execution_order(book: Path = BOOK) -> list[str]:
    """The table of contents' order, with :data:`RUN_LAST` moved to the end."""
    order = notebook_order(book)
    return [n for n in order if n not in RUN_LAST] + [n for n in order if n in RUN_LAST]


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
    """Tag papermill's injected-parameters cell ``remove-cell``: the rendered chapter shows its
    results, not the building machine's paths and the profile's raw settings (its provenance
    line names the profile)."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(notebook, path)


def execute_notebooks(profile: Profile, book: Path = BOOK, only: list[str] | None = None) -> None:
    """Run each notebook with papermill, which sets its ``profile``; the notebook asks
    :func:`analysis_lib.study.chapter` for the rest. A failing cell stops with the notebook
    and cell named."""
    executed = book / "executed"
    executed.mkdir(exist_ok=True)
    env_path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ["PATH"] = env_path  # the kernel must be this environment's python
    for name in only or execution_order(book):
        source = book / "notebooks" / f"{name}.md"
        notebook = jupytext.read(source)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        start = time.perf_counter()
        print(f"[reproduce] {name}: executing ({profile.name} profile)", flush=True)
        where = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
        try:
            papermill.execute_notebook(notebook, str(executed / f"{name}.ipynb"),
                                       parameters={"profile": profile.name}, cwd=str(ROOT),
                                       kernel_name="python3",
                                       progress_bar=False)
        except papermill.PapermillExecutionError as err:
            raise BuildError(f"notebook {where} failed in {_source_cell(notebook, err.source)}: "
                             f"{err.ename}: {err.evalue}") from None
        except DeadKernelError:
            raise BuildError(f"notebook {where}: its kernel died (killed, usually for lack of "
                             f"memory); run it alone with `reproduce --only {name}`") from None
        _hide_injected_cell(executed / f"{name}.ipynb")
        print(f"[reproduce] {name}: done in {time.perf_counter() - start:.0f} s", flush=True)


def train_runs(profile: Profile) -> None:
    """Train the profile's runs before its chapters, ``shared.training.workers`` at a time
    (see :func:`~analysis_lib.experiments.train_all`); the chapters then find them cached.

    Runs listed in ``shared.training.alone`` are left to their chapter, which trains them
    alone on the machine: those whose logged wall time the book reports. Without
    ``workers`` above 1 every chapter trains its runs when it first needs them.
    """
    settings = profile.shared.get("training") or {}
    workers, alone = settings.get("workers", 1), settings.get("alone", [])
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"shared.training.workers must be a positive int, got {workers!r}")
    if workers == 1:
        return
    specs = profile.shared.get("runs") or {}
    unknown = sorted(set(alone) - set(specs))
    if unknown:
        raise ConfigError(f"shared.training.alone names unknown run(s) {unknown}")
    runs = profile_runs(specs, load_manifest(profile.manifest_path).path_of)
    start = time.perf_counter()
    train_all({name: run for name, run in runs.items() if name not in alone}, workers)
    print(f"[reproduce] training: done in {time.perf_counter() - start:.0f} s", flush=True)


def build_book(book: Path = BOOK) -> None:
    """jupyter-book build with warnings as errors; the HTML lands in ``_build/html``."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(book), "--path-output", str(ROOT), "-W",
           "--keep-going"]
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        raise BuildError(f"jupyter-book build failed (exit {result.returncode})")


def build_simulated_set(entry: SimulatedSet, path: Path) -> Path:
    """The manifest's builder: simulate a set with its recorded seed, size and dimension."""
    if entry.generator_version != GENERATOR_VERSION:
        raise DataError(f"{entry.name}: the manifest asks for generator version "
                        f"{entry.generator_version!r} but this code is version "
                        f"{GENERATOR_VERSION!r}; use a matching release or update the manifest")
    return simulate(path, entry.n_events, entry.size, entry.seed, dim=entry.dim)


def make_data(profile_name: str, manifest_path: Path) -> list[Path]:
    """Build the profile's missing simulated sets and verify every hash the manifest records."""
    manifest = load_manifest(manifest_path)
    built = make_missing(manifest, profile_name, build_simulated_set)
    for path in built:
        print(f"[data] built {path.relative_to(manifest.data_dir.parent)}", flush=True)
    return built


#: Seconds per training step on the study's V100 (its Table II, [3D, 5-16]) as
#: (fixed, per event of the batch), fitted through its batch-4 and batch-64 points where it
#: has both; the base of the dry run's GPU-hour estimates.
STUDY_STEP_S = {
    ("sparse", 3, 192): (0.144, 0.0165),
    ("sparse", 3, 512): (0.0, 5.0 / 4),
    ("sparse", 3, 768): (0.0, 8.8 / 4),
    ("dense", 3, 192): (0.0, 25.0 / 4),
}


def _step_seconds(backend: str, dim: int, size: int, batch: int) -> tuple[float, str]:
    """Estimated GPU seconds of one training step, and how it was estimated."""
    if (backend, dim, size) in STUDY_STEP_S:
        fixed, per_event = STUDY_STEP_S[(backend, dim, size)]
        return fixed + per_event * batch, "study's Table II"
    if backend == "dense":  # dense cost follows the number of grid cells
        fixed, per_event = STUDY_STEP_S[("dense", 3, 192)]
        return per_event * batch * size**dim / 192**3, "dense 3D 192 px, scaled by grid cells"
    # sparse cost follows the voxel count: a 2D projection has about as many as a 3D 192 px
    # image, other 3D sizes interpolate linearly in the image edge
    fixed, per_event = STUDY_STEP_S[("sparse", 3, 192)]
    if dim == 3:
        per_event *= size / 192
    return fixed + per_event * batch, "sparse 3D 192 px, scaled"


def plan_runs(profile: Profile, manifest_path: Path) -> list[dict]:
    """Every training run of a profile with its size and estimated GPU-hours; the runs are
    validated as for training (settings, ranges, data-set and run names), no data is read."""
    manifest = load_manifest(manifest_path)
    specs = profile.shared.get("runs") or {}
    experiments = profile_runs(specs, manifest.path_of)
    plan = []
    for name, experiment in experiments.items():
        cfg, entry = experiment.config, manifest.entry(specs[name]["data"])
        size = getattr(entry, "size", None)
        step, basis = (_step_seconds(cfg.backend, cfg.dim, size, cfg.batch_size) if size
                       else (math.nan, "?"))
        plan.append({"run": name, "data": specs[name]["data"], "dim": cfg.dim, "size": size,
                     "backend": cfg.backend, "depth": cfg.depth, "filters": cfg.filters,
                     "batch": cfg.batch_size, "iterations": cfg.iterations,
                     "init": specs[name].get("init") or "",
                     "GPU-hours": step * cfg.iterations / 3600, "estimate from": basis})
    return plan


def print_plan(profile_name: str) -> list[dict]:
    """Print the runs a profile would train and their estimated GPU-hours."""
    profile = load_profile(profile_name)
    plan = plan_runs(profile, profile.manifest_path)
    columns = list(plan[0]) if plan else []
    widths = {c: max(len(c), *(len(_cell(row[c])) for row in plan)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in plan:
        print("  ".join(_cell(row[c]).ljust(widths[c]) for c in columns))
    total = sum(row["GPU-hours"] for row in plan)
    print(f"{len(plan)} runs, about {total:.0f} GPU-hours on a V100 (the study's GPU); "
          f"estimates scale the study's measured step times, a newer GPU takes less")
    return plan


def _cell(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def reproduce(profile_name: str, only: list[str] | None = None, skip_build: bool = False) -> None:
    """Make the data, execute the notebooks and build the book for one profile."""
    profile = load_profile(profile_name)
    start = time.perf_counter()
    make_data(profile_name, profile.manifest_path)
    if only is None:
        train_runs(profile)
    execute_notebooks(profile, only=only)
    if not skip_build:
        build_book()
    print(f"[reproduce] {profile_name} profile finished in {time.perf_counter() - start:.0f} s")
