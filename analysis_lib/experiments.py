"""Named training runs cached by content: a run's folder is named by the hash of its
configuration, the sha256 of its data file and the source of the code that trains it, so the
notebooks reuse a trained model and any change of config, data or code trains a new one."""

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from analysis_lib.errors import ConfigError
from analysis_lib.train import TrainConfig, evaluate, latest_checkpoint, read_log, train

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
#: The modules whose source decides what a training run computes.
_CODE = ("models", "sparse", "train.py", "batching.py", "data/relabel.py")


@functools.cache
def code_version(entries: tuple[str, ...] = _CODE) -> str:
    """sha256 (16 hex digits) of the source files that training depends on (or of
    ``entries``, paths relative to the package; ``(".",)`` is the whole package); read once
    per process, as the source does not change under a session."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for entry in entries:
        path = package / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _file_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Experiment:
    """A training run and where its artifacts live; a fine-tuning run names its ``parent``,
    whose final checkpoint is its ``config.init`` and which it trains first."""

    config: TrainConfig
    root: Path = ARTIFACTS
    parent: "Experiment | None" = None

    @cached_property
    def key(self) -> str:
        """The run's hash: config (paths replaced by their files' sha256), code version;
        computed once per object (the files are not expected to change under a session)."""
        fields = dataclasses.asdict(self.config)
        fields["data"] = _file_digest(self.config.data)
        if self.parent is not None:
            fields["init"] = self.parent.key
        elif self.config.init is not None:
            fields["init"] = _file_digest(self.config.init)
        blob = json.dumps({"config": fields, "code": code_version()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def folder(self) -> Path:
        """``artifacts/<key>``."""
        return self.root / self.key

    @property
    def checkpoint(self) -> Path:
        """The final checkpoint (exists once the run is complete)."""
        return self.folder / f"checkpoint_{self.config.iterations}.pt"

    def run(self, progress: bool = True) -> Path:
        """Train unless the final checkpoint exists; an interrupted run resumes."""
        if self.parent is not None:
            self.parent.run(progress)
        if not self.checkpoint.exists():
            resume = latest_checkpoint(self.folder) is not None
            train(self.config, self.folder, resume=resume, progress=progress)
        return self.checkpoint

    def log(self) -> dict:
        """The run's per-iteration log (see :func:`analysis_lib.train.read_log`)."""
        return read_log(self.folder)

    def probes(self) -> dict[int, dict[str, np.ndarray]]:
        """The probe event's snapshots by iteration: coords, energy, label, probs."""
        self.run()
        found = {}
        for path in self.folder.glob("probe_*.npz"):
            with np.load(path) as snapshot:
                found[int(path.stem.removeprefix("probe_"))] = dict(snapshot)
        return dict(sorted(found.items()))

    def evaluation(self, data: str | os.PathLike, relabeled: bool = False) -> dict:
        """Metrics of the trained model on ``data``, cached beside the checkpoint and keyed by
        the data and the whole package's source (a changed metric or reader re-evaluates)."""
        tag = (f"{_file_digest(data)[:12]}{'_relabeled' if relabeled else ''}_"
               f"{code_version(('.',))[:8]}")
        cache = self.folder / f"eval_{tag}.json"
        if cache.exists():
            return json.loads(cache.read_text())
        result = evaluate(self.run(), data, relabeled=relabeled)
        cache.write_text(json.dumps(result))
        return result


def profile_runs(specs: dict[str, dict], data_path: Callable[[str], Path],
                 root: Path = ARTIFACTS) -> dict[str, Experiment]:
    """The named runs of a profile (``shared.runs``): each spec holds :class:`TrainConfig`
    fields, with ``data`` a data-set name (``data_path`` gives its file) and ``init``, if any,
    the name of the run to fine-tune. Chapters that name the same run share its training."""
    runs: dict[str, Experiment] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Experiment:
        if name in runs:
            return runs[name]
        if name not in specs:
            raise ConfigError(f"run {name!r} is not among the profile's runs {sorted(specs)}")
        if name in chain:
            raise ConfigError(f"runs {' -> '.join(chain + (name,))} fine-tune each other")
        spec = dict(specs[name])
        parent = resolve(spec.pop("init"), chain + (name,)) if spec.get("init") else None
        try:
            config = TrainConfig(data=str(data_path(spec.pop("data"))), **spec)
        except TypeError as err:
            raise ConfigError(f"run {name!r}: {err}") from None
        if parent is not None:
            config = dataclasses.replace(config, init=str(parent.checkpoint))
        runs[name] = Experiment(config, root, parent)
        return runs[name]

    for name in specs:
        resolve(name, ())
    return runs
