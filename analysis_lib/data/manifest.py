"""``data_manifest.yaml``: every data set the study uses, where it lives and its sha256.

The manifest lists simulated sets (built by the project's simulator, passed in by the
caller) and public files (downloaded by the user). A file on disk whose hash differs from
the recorded one is never overwritten: the user decides whether to delete it or to record
the new hash.

Expected shape (keys are exact; unknown or missing keys are a ConfigError)::

    data_dir: data            # relative to the manifest file
    simulated:
      - {name, filename, generator_version, seed, n_events, size, dim, profiles, sha256}
    public:
      - {name, doi, url, size_bytes, sha256}

A public file is expected at ``data_dir/<name>.h5`` (the larcv3 HDF5 conversion of the
public ROOT file of that name).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from analysis_lib.core.errors import ConfigError, DataError
from analysis_lib.core.files import file_sha256, write_text

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SimulatedSet:
    """One simulated data set: how to rebuild it and the hash of the built file."""

    name: str
    generator_version: str
    seed: int
    n_events: int
    size: int
    dim: int
    profiles: tuple[str, ...]
    sha256: str | None
    filename: str


@dataclass(frozen=True)
class PublicFile:
    """One public file of the original study (PILArNet, OSF DOI)."""

    name: str
    doi: str
    url: str | None
    size_bytes: int | None
    sha256: str | None


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest; ``data_dir`` is absolute (resolved against the manifest file)."""

    data_dir: Path
    simulated: tuple[SimulatedSet, ...]
    public: tuple[PublicFile, ...]
    source: Path | None = None

    def sets_for(self, profile: str) -> tuple[SimulatedSet, ...]:
        """Simulated sets used by ``profile`` (e.g. ``"ci"``), in manifest order."""
        return tuple(s for s in self.simulated if profile in s.profiles)

    def names(self) -> tuple[str, ...]:
        """Names of every entry, simulated first."""
        return tuple(e.name for e in (*self.simulated, *self.public))

    def entry(self, name: str) -> SimulatedSet | PublicFile:
        """The entry called ``name``; ConfigError listing the valid names otherwise."""
        for entry in (*self.simulated, *self.public):
            if entry.name == name:
                return entry
        raise ConfigError(
            f"{self.source or 'manifest'}: no data set named {name!r}; "
            f"known names: {', '.join(self.names())}"
        )

    def sha256_of(self, name: str) -> str | None:
        """The sha256 recorded for entry ``name`` (None where none is recorded)."""
        return self.entry(name).sha256

    def path_of(self, name: str) -> Path:
        """Where the file of entry ``name`` lives."""
        entry = self.entry(name)
        filename = entry.filename if isinstance(entry, SimulatedSet) else f"{entry.name}.h5"
        return self.data_dir / filename


_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "filename": (str,),
    "generator_version": (str,),
    "seed": (int,),
    "n_events": (int,),
    "size": (int,),
    "dim": (int,),
    "profiles": (list,),
    "sha256": (str, type(None)),
    "doi": (str,),
    "url": (str, type(None)),
    "size_bytes": (int, type(None)),
}


def _check_keys(mapping: object, expected: Sequence[str], where: str) -> dict:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(expected)}")
    unknown = [k for k in mapping if k not in expected]
    missing = [k for k in expected if k not in mapping]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(expected)}"
        )
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}; add it (null where unknown)")
    return mapping


def _entry(cls: type, raw: object, where: str) -> SimulatedSet | PublicFile:
    fields = [f.name for f in dataclasses.fields(cls)]
    raw = _check_keys(raw, fields, where)
    for key, value in raw.items():
        if not isinstance(value, _TYPES[key]) or isinstance(value, bool):
            hint = " (quote it)" if key == "generator_version" else ""
            raise ConfigError(f"{where}: key {key!r} has invalid value {value!r}{hint}")
    sha = raw["sha256"]
    if sha is not None and not _SHA256.match(sha):
        raise ConfigError(f"{where}: sha256 {sha!r} is not 64 lowercase hex digits (or null)")
    if cls is SimulatedSet:
        if not all(isinstance(p, str) for p in raw["profiles"]):
            raise ConfigError(f"{where}: profiles must be a list of profile names")
        raw = {**raw, "profiles": tuple(raw["profiles"])}
    return cls(**raw)


def _entries(cls: type, raw: object, key: str, path: Path) -> tuple:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: {key!r} must be a list of entries")
    entries = tuple(_entry(cls, item, f"{path}: {key}[{i}]") for i, item in enumerate(raw))
    return entries


def load_manifest(path: str | os.PathLike = "data_manifest.yaml") -> Manifest:
    """Read and validate a data manifest.

    Parameters
    ----------
    path : str or os.PathLike
        The YAML file; its ``data_dir`` is resolved relative to the file's folder.

    Raises
    ------
    ConfigError
        Missing or unparsable file, unknown or missing keys, wrong value types, duplicate
        names.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such manifest file; check the path")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    raw = _check_keys(raw, ("data_dir", "simulated", "public"), str(path))
    if not isinstance(raw["data_dir"], str):
        raise ConfigError(f"{path}: data_dir must be a folder path")
    manifest = Manifest(
        data_dir=(path.parent / raw["data_dir"]).resolve(),
        simulated=_entries(SimulatedSet, raw["simulated"], "simulated", path),
        public=_entries(PublicFile, raw["public"] or [], "public", path),
        source=path,
    )
    names = manifest.names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: data set name {duplicates[0]!r} appears more than once")
    return manifest


def _check_hash(manifest: Manifest, name: str) -> str:
    """'ok', 'missing' or 'no hash recorded'; DataError on a hash mismatch."""
    entry, path = manifest.entry(name), manifest.path_of(name)
    if not path.is_file():
        return "missing"
    if entry.sha256 is None:
        return "no hash recorded"
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise DataError(
            f"{path}: sha256 {actual} does not match {entry.sha256} recorded for {name!r} in "
            f"{manifest.source or 'the manifest'}; the file was left untouched: delete it to "
            f"rebuild or re-download it, or accept it with `python -m analysis_lib data record "
            f"{name}`"
        )
    return "ok"


def verify(manifest: Manifest, names: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Check files against their recorded sha256.

    Parameters
    ----------
    manifest : Manifest
    names : sequence of str, optional
        Entries to check; all of them by default.

    Returns
    -------
    list of (name, status)
        status is ``"ok"``, ``"missing"`` or ``"no hash recorded"``.

    Raises
    ------
    DataError
        If a file exists and its sha256 differs from the recorded one (the file is kept).
    ConfigError
        If a name is not in the manifest.
    """
    names = manifest.names() if names is None else names
    return [(name, _check_hash(manifest, name)) for name in names]


def make_missing(
    manifest: Manifest, profile: str, build: Callable[[SimulatedSet, Path], Path]
) -> list[Path]:
    """Build the simulated files of ``profile`` that are not on disk yet.

    Existing files are never rebuilt: they are checked against their recorded hash
    (DataError on a mismatch). Each missing file is built by ``build(simulated_set, path)``
    and checked against its recorded hash where there is one.

    Parameters
    ----------
    manifest : Manifest
    profile : str
        Profile name, e.g. ``"ci"``.
    build : callable (SimulatedSet, Path) -> Path
        Writes the set to the given path and returns it (the simulator, passed in).

    Returns
    -------
    list of Path
        The files that were built, in manifest order.

    Raises
    ------
    ConfigError
        If no simulated set belongs to ``profile``.
    DataError
        Hash mismatch of an existing or freshly built file, or a builder that wrote nothing.
    """
    sets = manifest.sets_for(profile)
    if not sets:
        profiles = sorted({p for s in manifest.simulated for p in s.profiles})
        raise ConfigError(
            f"{manifest.source or 'manifest'}: no simulated set for profile {profile!r}; "
            f"known profiles: {', '.join(profiles) or 'none'}"
        )
    built = []
    for sim in sets:
        path = manifest.path_of(sim.name)
        if path.is_file():
            _check_hash(manifest, sim.name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        result = Path(build(sim, path))
        if result != path or not path.is_file():
            raise DataError(
                f"{path}: the builder for {sim.name!r} did not write this file "
                f"(it returned {result}); it must write exactly the path it is given"
            )
        _check_hash(manifest, sim.name)
        built.append(path)
    return built


_ITEM = re.compile(r"^\s*-\s+name:\s*(\S+?)\s*(#.*)?$")
_FIELD = re.compile(r"^(\s+)sha256:[^#\n]*?(\s*#.*)?$")
_SECTION = re.compile(r"^(\w+):")


def _rewrite_hashes(text: str, hashes: dict[str, str]) -> str:
    """Replace the ``sha256:`` value of the named simulated entries, keeping all else."""
    lines, section, current = text.splitlines(keepends=True), None, None
    for i, line in enumerate(lines):
        if match := _SECTION.match(line):
            section, current = match.group(1), None
        elif match := _ITEM.match(line):
            current = match.group(1).strip("'\"")
        elif section == "simulated" and current in hashes and (match := _FIELD.match(line)):
            comment = match.group(2) or ""
            end = "\n" if line.endswith("\n") else ""
            lines[i] = f"{match.group(1)}sha256: {hashes[current]}{comment}{end}"
    return "".join(lines)


def record_hashes(
    manifest_path: str | os.PathLike, names: Sequence[str] | None = None
) -> dict[str, str]:
    """Write the sha256 of existing simulated files into the manifest.

    The file is edited line by line: only the ``sha256:`` values of the chosen entries
    change, so comments, order and formatting are kept. Entries must be written in block
    style (``- name: ...`` followed by one key per line), as in the template.

    Parameters
    ----------
    manifest_path : str or os.PathLike
    names : sequence of str, optional
        Simulated entries to record; by default every simulated file that exists.

    Returns
    -------
    dict of str to str
        Recorded name -> sha256.

    Raises
    ------
    ConfigError
        A name that is not a simulated set, or a manifest the hashes cannot be written into.
    DataError
        A named file that does not exist.
    """
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    simulated = {s.name for s in manifest.simulated}
    if names is None:
        names = [n for n in simulated if manifest.path_of(n).is_file()]
    for name in names:
        if name not in simulated:
            raise ConfigError(f"{manifest_path}: {name!r} is not a simulated set")
        if not manifest.path_of(name).is_file():
            raise DataError(f"{manifest.path_of(name)}: no such file; build it first")
    hashes = {name: file_sha256(manifest.path_of(name)) for name in names}
    write_text(manifest_path, _rewrite_hashes(manifest_path.read_text(), hashes))
    reloaded = {s.name: s.sha256 for s in load_manifest(manifest_path).simulated}
    if any(reloaded[name] != sha for name, sha in hashes.items()):
        raise ConfigError(
            f"{manifest_path}: could not write the sha256 values (entries must be in block "
            "style, one key per line); record them by hand: "
            + ", ".join(f"{n}={h}" for n, h in hashes.items())
        )
    return hashes
