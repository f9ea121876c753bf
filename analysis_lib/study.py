"""The study as its book runs it: a profile's settings, and each chapter's inputs under it.

A chapter asks for its inputs by name, ``ch = study.chapter("michel", profile)``: its data
sets (the manifest, resolved from the repository), the profile's networks and the chapter's
parameters as attributes (``ch.michel_run``). The same call serves papermill, which sets only
``profile``, a notebook opened in JupyterLab from its own folder, and a script.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from analysis_lib.data.manifest import Manifest, load_manifest
from analysis_lib.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from analysis_lib.experiments import Experiment

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
PROFILES = ("ci", "paper")


@dataclass(frozen=True)
class Profile:
    """A profile's parameters: shared ones and one mapping per notebook."""

    name: str
    shared: dict
    notebooks: dict[str, dict]

    @property
    def manifest_path(self) -> Path:
        """The data manifest the profile names (``shared.manifest``), from the repository."""
        return ROOT / self.shared.get("manifest", "data_manifest.yaml")


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


@dataclass(frozen=True)
class Chapter:
    """One chapter's inputs under a profile; its parameters read as attributes."""

    name: str
    profile: Profile
    params: Mapping[str, object]

    @cached_property
    def data(self) -> Manifest:
        """The profile's data manifest (paths resolved from the repository)."""
        return load_manifest(self.profile.manifest_path)

    @cached_property
    def runs(self) -> dict[str, Experiment]:
        """The profile's networks by name (validated; none is trained by asking)."""
        from analysis_lib.experiments import profile_runs

        return profile_runs(self.profile.shared.get("runs") or {}, self.data.path_of)

    def trained(self, names: Mapping[object, str]) -> dict[object, Experiment]:
        """The networks ``names`` maps to (label -> run name) under the same labels, each
        trained first where its final checkpoint is missing (the one place a chapter trains)."""
        found = {label: self.runs[name] for label, name in names.items()}
        for run in found.values():
            run.run(progress=False)
        return found

    def data_set_of(self, run: str) -> str:
        """The name of the data set network ``run`` trains on."""
        specs = self.profile.shared.get("runs") or {}
        if run not in specs:
            raise ConfigError(f"run {run!r} is not among the {self.profile.name} profile's runs")
        return specs[run]["data"]

    def __getattr__(self, key: str) -> object:
        params = self.__dict__.get("params", {})
        if key in params:
            return params[key]
        raise AttributeError(f"the {self.profile.name} profile gives chapter {self.name!r} no "
                             f"parameter {key!r}{did_you_mean(key, params)}")


def chapter(name: str, profile: str = "ci") -> Chapter:
    """The inputs of chapter ``name`` (a notebook of ``book/notebooks``) under ``profile``."""
    loaded = load_profile(profile)
    if not (BOOK / "notebooks" / f"{name}.md").is_file():
        raise ConfigError(f"no chapter {name!r} in {BOOK / 'notebooks'}")
    return Chapter(name, loaded, dict(loaded.notebooks.get(name, {})))
