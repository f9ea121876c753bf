"""Rebuild the book: make the profile's data, execute every notebook with the profile's
parameters (jupytext → papermill), then build the Jupyter Book.

The notebooks' sources are MyST text notebooks in ``book/notebooks``; the executed copies go to
``book/executed`` (git-ignored), which is what the book renders.
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jupytext
import papermill
import yaml

from analysis_lib.data.manifest import SimulatedSet, load_manifest, make_missing
from analysis_lib.errors import ConfigError, DataError
from analysis_lib.sim.config import GENERATOR_VERSION
from analysis_lib.sim.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
PROFILES = ("ci", "paper")


@dataclass(frozen=True)
class Profile:
    """A profile's parameters: shared ones and one mapping per notebook."""

    name: str
    shared: dict
    notebooks: dict[str, dict]


def load_profile(name: str, book: Path = BOOK) -> Profile:
    """Read ``book/params/<name>.yaml``; an unknown profile or notebook is a ConfigError."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    path = book / "params" / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or set(raw) - {"shared", "notebooks"}:
        raise ConfigError(f"{path}: expected top-level keys 'shared' and 'notebooks'")
    notebooks = raw.get("notebooks") or {}
    sources = {p.stem for p in (book / "notebooks").glob("*.md")}
    unknown = sorted(set(notebooks) - sources)
    if unknown:
        raise ConfigError(f"{path}: parameters for unknown notebook(s) {unknown}; "
                          f"notebooks are {sorted(sources)}")
    return Profile(name, dict(raw.get("shared") or {}), {k: dict(v or {}) for k, v in
                                                          notebooks.items()})


def notebook_order(book: Path = BOOK) -> list[str]:
    """Notebook names in the order of the table of contents."""
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    entries = [toc.get("root", "")]
    for part in toc.get("parts", []) + [{"chapters": toc.get("chapters", [])}]:
        entries += [c["file"] for c in part.get("chapters", [])]
    return [Path(e).name for e in entries if e.startswith("executed/")]


def execute_notebooks(profile: Profile, book: Path = BOOK, only: list[str] | None = None) -> None:
    """Run each notebook with papermill; a failing cell stops with the notebook and cell named."""
    executed = book / "executed"
    executed.mkdir(exist_ok=True)
    env_path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ["PATH"] = env_path  # the kernel must be this environment's python
    for name in only or notebook_order(book):
        source = book / "notebooks" / f"{name}.md"
        params = {"profile": profile.name, "repo_root": str(ROOT), **profile.shared,
                  **profile.notebooks.get(name, {})}
        notebook = jupytext.read(source)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        start = time.perf_counter()
        print(f"[reproduce] {name}: executing ({profile.name} profile)", flush=True)
        try:
            papermill.execute_notebook(notebook, str(executed / f"{name}.ipynb"),
                                       parameters=params, cwd=str(ROOT), kernel_name="python3",
                                       progress_bar=False)
        except papermill.PapermillExecutionError as err:
            raise SystemExit(f"[reproduce] notebook {source.relative_to(ROOT)} failed in cell "
                             f"{err.exec_count}: {err.ename}: {err.evalue}") from None
        print(f"[reproduce] {name}: done in {time.perf_counter() - start:.0f} s", flush=True)


def build_book(book: Path = BOOK) -> None:
    """jupyter-book build with warnings as errors; the HTML lands in ``_build/html``."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(book), "--path-output", str(ROOT), "-W",
           "--keep-going"]
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"[reproduce] jupyter-book build failed (exit {result.returncode})")


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


def reproduce(profile_name: str, only: list[str] | None = None, skip_build: bool = False) -> None:
    """Make the data, execute the notebooks and build the book for one profile."""
    profile = load_profile(profile_name)
    start = time.perf_counter()
    make_data(profile_name, ROOT / profile.shared.get("manifest", "data_manifest.yaml"))
    execute_notebooks(profile, only=only)
    if not skip_build:
        build_book()
    print(f"[reproduce] {profile_name} profile finished in {time.perf_counter() - start:.0f} s")
