"""The study as its book runs it: a profile's settings, and each chapter's inputs under it.

A chapter asks for its inputs by name, ``ch = study.chapter("michel", profile)``: its data
sets (the manifest, resolved from the repository), the profile's networks and the chapter's
parameters as attributes (``ch.michel_run``). The same call serves papermill, which sets only
``profile``, a notebook opened in JupyterLab from its own folder, and a script.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from analysis_lib.core.errors import ConfigError, did_you_mean, refuse_unknown
from analysis_lib.core.fields import DataSetName, Names, RunName, build
from analysis_lib.core.paths import BOOK, ROOT
from analysis_lib.data.manifest import Manifest, load_manifest
from analysis_lib.study.chapter_params import CHAPTERS
from analysis_lib.training.config import RunSpec, TrainConfig

if TYPE_CHECKING:
    from analysis_lib.study.experiments import Experiment

PROFILES = ("ci", "paper")


@dataclass(frozen=True)
class Training:
    """How a profile trains its runs before the chapters: ``workers`` side by side, one thread
    each (1: each chapter trains what it needs when it needs it), except the runs ``alone``,
    which their chapter trains by themselves (runs whose logged wall time the book reports)."""

    workers: int = 1
    alone: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """A profile's parameters (``book/params/<name>.yaml``): the data manifest, the networks by
    name (each checked as a :class:`~analysis_lib.training.config.RunSpec`), how they train, and
    each notebook's parameters (of the dataclass :data:`~analysis_lib.study.chapter_params.CHAPTERS`
    names)."""

    name: str
    manifest: str
    runs: Mapping[str, RunSpec]
    training: Training
    notebooks: Mapping[str, object]

    @property
    def manifest_path(self) -> Path:
        """The data manifest the profile names, from the repository."""
        return ROOT / self.manifest


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
    shared = dict(raw.get("shared") or {})
    refuse_unknown(shared, _SHARED_KEYS, f"{path}: unknown shared setting")
    manifest = shared.get("manifest", "data_manifest.yaml")
    runs = {run: RunSpec.parse(run, spec or {})
            for run, spec in (shared.get("runs") or {}).items()}
    names = Names(tuple(runs), load_manifest(ROOT / manifest).names())
    for run, spec in runs.items():
        build(_RunNames, {"data": spec.data, "init": spec.init}, f"{path}: run {run!r}", names)
        try:  # the settings' values and ranges, as the training will check them
            TrainConfig(data=spec.data, **spec.settings)
        except ConfigError as exc:
            raise ConfigError(f"{path}: run {run!r}: {exc}") from None
    params = {}
    for chapter_name in sorted(set(notebooks) | (sources & set(CHAPTERS))):
        if chapter_name not in CHAPTERS:
            raise ConfigError(f"{path}: notebook {chapter_name!r} has no parameter type in "
                              f"analysis_lib.study.chapter_params.CHAPTERS")
        params[chapter_name] = build(CHAPTERS[chapter_name], notebooks.get(chapter_name) or {},
                                     f"{path}: notebooks.{chapter_name}", names)
    return Profile(name, manifest, runs, _training(shared.get("training") or {}, runs, path),
                   params)


@dataclass(frozen=True)
class _RunNames:
    """The names a run's spec refers to: its data set and the run it starts from."""

    data: DataSetName
    init: RunName | None = None


_SHARED_KEYS = ("manifest", "runs", "training")


def _training(settings: Mapping, runs: Mapping, path: Path) -> Training:
    """``shared.training`` checked: known keys, a positive number of workers, known runs."""
    refuse_unknown(settings, ("workers", "alone"), f"{path}: unknown shared.training setting")
    workers, alone = settings.get("workers", 1), tuple(settings.get("alone") or ())
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"{path}: shared.training.workers must be a positive int, "
                          f"got {workers!r}")
    unknown = sorted(set(alone) - set(runs))
    if unknown:
        raise ConfigError(f"{path}: shared.training.alone names unknown run(s) {unknown}")
    return Training(workers, alone)


@dataclass(frozen=True)
class Chapter:
    """One chapter's inputs under a profile; its parameters (a dataclass of
    :mod:`~analysis_lib.study.chapter_params`) also read as the chapter's attributes."""

    name: str
    profile: Profile
    params: object

    @cached_property
    def data(self) -> Manifest:
        """The profile's data manifest (paths resolved from the repository)."""
        return load_manifest(self.profile.manifest_path)

    @cached_property
    def runs(self) -> dict[str, Experiment]:
        """The profile's networks by name (validated; none is trained by asking)."""
        from analysis_lib.study.experiments import profile_runs

        return profile_runs(self.profile.runs, self.data.path_of,
                            data_sha256=self.data.sha256_of)

    def trained(self, names: Mapping[object, str]) -> dict[object, Experiment]:
        """The networks ``names`` maps to (label -> run name) under the same labels, each
        trained first where its final checkpoint is missing (the one place a chapter trains)."""
        found = {label: self.runs[name] for label, name in names.items()}
        for run in found.values():
            run.run(progress=False)
        return found

    def data_set_of(self, run: str) -> str:
        """The name of the data set network ``run`` trains on."""
        if run not in self.profile.runs:
            raise ConfigError(f"run {run!r} is not among the {self.profile.name} profile's runs"
                              f"{did_you_mean(run, self.profile.runs)}")
        return self.profile.runs[run].data

    def __getattr__(self, key: str) -> object:
        params = self.__dict__.get("params")
        fields = [f.name for f in dataclasses.fields(params)] if params is not None else []
        if key in fields:
            return getattr(params, key)
        raise AttributeError(f"chapter {self.name!r} has no parameter {key!r}"
                             f"{did_you_mean(key, fields)}")


def chapter(name: str, profile: str = "ci") -> Chapter:
    """The inputs of chapter ``name`` (a notebook of ``book/notebooks``) under ``profile``."""
    loaded = load_profile(profile)
    if not (BOOK / "notebooks" / f"{name}.md").is_file():
        raise ConfigError(f"no chapter {name!r} in {BOOK / 'notebooks'}")
    return Chapter(name, loaded, loaded.notebooks.get(name))
