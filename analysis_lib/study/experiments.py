"""Named training runs cached by content: a run's folder is named by the hash of its
configuration, the sha256 of its data file and the source of the code that trains it, so the
notebooks reuse a trained model and any change of config, data or code trains a new one."""

import dataclasses
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from analysis_lib.core import env
from analysis_lib.core.errors import ConfigError, TrainingError
from analysis_lib.core.files import file_sha256, write_text
from analysis_lib.core.paths import ROOT
from analysis_lib.evaluation.inference import evaluate
from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.training import checkpoints
from analysis_lib.training.config import RunSpec, TrainConfig
from analysis_lib.training.loop import bf16_autocast, read_log, train

#: The source that decides what a training run computes (paths in the package): the network,
#: the engine, the training loop and its configuration, checkpoints and batching, the data
#: readers and relabeling, the class ids. Nothing cosmetic: colours, tables, plots and
#: findings live elsewhere.
TRAINING_CODE = ("models", "sparse", "training", "data", "core/labels.py")
#: What an evaluation computes besides the network: inference and the metrics.
EVALUATION_CODE = (*TRAINING_CODE, "evaluation/inference.py", "evaluation/metrics.py")


def _device() -> torch.device:
    """The device a run trains on, as its key reads it: a GPU if there is one (without making
    it the current device, as training does)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def artifacts_folder() -> Path:
    """Where trained runs are cached: ``$ANALYSIS_LIB_ARTIFACTS`` if set, else ``artifacts/``
    of the source checkout the package runs from, else of the working folder (an installed
    package must not write into site-packages)."""
    if folder := env.setting(env.ARTIFACTS):
        return Path(folder)
    checkout = ROOT if (ROOT / "pyproject.toml").is_file() else Path.cwd()
    return checkout / "artifacts"


def _sources(folder: Path) -> list[Path]:
    """The Python and C sources under ``folder``, in a fixed order."""
    return sorted(f for f in folder.rglob("*") if f.suffix in (".py", ".c"))


#: The package's folder, whose sources the keys hash.
PACKAGE = Path(__file__).resolve().parents[1]


@functools.cache
def code_version(entries: tuple[str, ...] = TRAINING_CODE, package: Path = PACKAGE) -> str:
    """sha256 (16 hex digits) of the source files that training depends on (or of
    ``entries``, paths relative to ``package``); read once per process, as the source does
    not change under a session."""
    digest = hashlib.sha256()
    for entry in entries:
        path = package / entry
        for file in _sources(path) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Experiment:
    """A training run and where its artifacts live; a fine-tuning run names its ``parent``,
    whose final checkpoint is its ``train_config.init`` and which it trains first. ``name`` is
    the profile's name for it (for messages; not part of the key). ``data_sha256`` is the data
    file's sha256 as the manifest records it (checked by ``data make``/``data verify``), so
    that a key does not re-hash gigabytes in every process; None hashes the file."""

    config: TrainConfig
    root: Path = dataclasses.field(default_factory=artifacts_folder)
    parent: "Experiment | None" = None
    name: str | None = None
    data_sha256: str | None = None

    @cached_property
    def key(self) -> str:
        """The run's hash: config (paths replaced by their files' sha256, ``amp`` by whether
        this machine trains it in bf16), code version; computed once per object (the files
        are not expected to change under a session)."""
        init = (self.parent.key if self.parent is not None
                else None if self.config.init is None else file_sha256(self.config.init))
        data = self.data_sha256 or file_sha256(self.config.data)
        fields = {**dataclasses.asdict(self.config), "data": data, "init": init,
                  "amp": bf16_autocast(self.config.amp, _device(), self.config.backend)}
        blob = json.dumps({"config": fields, "code": code_version()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def lineage(self) -> str:
        """Its training, this run first: "1000 iterations (michel_tuned) after 1000
        (relabeled) after 3600 (main)"."""
        steps = []
        run: Experiment | None = self
        while run is not None:
            steps.append(f"{run.config.iterations}" + (f" ({run.name})" if run.name else ""))
            run = run.parent
        return " after ".join([steps[0].replace(" ", " iterations ", 1)
                               if " " in steps[0] else f"{steps[0]} iterations", *steps[1:]])

    @property
    def train_config(self) -> TrainConfig:
        """The configuration that trains: a fine-tuning run's ``init`` is its parent's final
        checkpoint (resolved only here, since naming it hashes the parent's data)."""
        if self.parent is None:
            return self.config
        return dataclasses.replace(self.config, init=str(self.parent.checkpoint))

    @property
    def folder(self) -> Path:
        """``artifacts/<key>``."""
        return self.root / self.key

    @property
    def checkpoint(self) -> Path:
        """The final checkpoint (exists once the run is complete)."""
        return self.folder / f"checkpoint_{self.config.iterations}.pt"

    def is_trained(self) -> bool:
        """Whether the final checkpoint is there and intact (:func:`checkpoints.intact`); a
        damaged one is set aside, named in a warning, so that the run trains again."""
        if not self.checkpoint.exists():
            return False
        if checkpoints.intact(self.checkpoint):
            return True
        aside = checkpoints.set_aside(self.checkpoint)
        called = f"{self.name!r} " if self.name else ""
        warnings.warn(f"run {called}({self.key}): its final checkpoint is damaged (not the "
                      f"bytes it was written with); set aside as {aside.name}, the run trains "
                      f"again", RuntimeWarning, stacklevel=2)
        return False

    def run(self, progress: bool = True) -> Path:
        """Train unless the final checkpoint is there and intact; an interrupted run resumes."""
        if self.parent is not None:
            self.parent.run(progress)
        if not self.is_trained():
            resume = checkpoints.latest_checkpoint(self.folder) is not None
            train(self.train_config, self.folder, resume=resume, progress=progress)
        return self.checkpoint

    def trained_checkpoint(self) -> Path:
        """The final checkpoint; reading a result never trains, so a run not yet trained (or
        whose checkpoint is damaged) is an error that says how to train it."""
        if not self.is_trained():
            called = f"{self.name!r} " if self.name else ""
            raise TrainingError(
                f"run {called}({self.key}: {Path(self.config.data).name}, "
                f"{self.config.iterations} iterations) is not trained yet: train it first "
                f"(Experiment.run, Chapter.trained, or `python -m analysis_lib reproduce`)")
        return self.checkpoint

    def log(self) -> dict:
        """The finished run's per-iteration log (:func:`~analysis_lib.training.loop.read_log`)."""
        self.trained_checkpoint()
        return read_log(self.folder)

    def probes(self) -> dict[int, dict[str, np.ndarray]]:
        """The probe event's snapshots by iteration: coords, energy, label, probs."""
        self.trained_checkpoint()
        found = {}
        for path in self.folder.glob("probe_*.npz"):
            with np.load(path) as snapshot:
                found[int(path.stem.removeprefix("probe_"))] = dict(snapshot)
        return dict(sorted(found.items()))

    def evaluation_cache(self, data: str | os.PathLike, relabeled: bool = False) -> Path:
        """Where :meth:`evaluation` of the trained run keeps its result: named by the final
        checkpoint's sha256 (so it never outlives the network it describes), the data file's,
        the labels and the source of :data:`EVALUATION_CODE`."""
        tag = (f"{file_sha256(self.trained_checkpoint())[:8]}_{file_sha256(data)[:12]}"
               f"{'_relabeled' if relabeled else ''}_{code_version(EVALUATION_CODE)[:8]}")
        return self.folder / f"eval_{tag}.json"

    def evaluation(self, data: str | os.PathLike, relabeled: bool = False) -> Evaluation:
        """Metrics of the trained model on ``data`` (a :class:`TrainingError` if it is not
        trained), cached beside the checkpoint and keyed by the data and the whole package's
        source (a changed metric or reader re-evaluates)."""
        cache = self.evaluation_cache(data, relabeled)
        if cache.exists():
            return Evaluation.from_record(json.loads(cache.read_text()))
        result = evaluate(self.trained_checkpoint(), data, relabeled=relabeled)
        write_text(cache, json.dumps(dataclasses.asdict(result)))
        return result


def profile_runs(specs: Mapping[str, RunSpec], data_path: Callable[[str], Path],
                 root: Path | None = None,
                 data_sha256: Callable[[str], str | None] | None = None
                 ) -> dict[str, Experiment]:
    """The named runs of a profile (``shared.runs``): ``data_path`` gives each data set's file
    and ``data_sha256``, if given, its recorded sha256 (the manifest's); a run's ``init`` names
    the run it fine-tunes. Chapters that name the same run share its training."""
    runs: dict[str, Experiment] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Experiment:
        if name in runs:
            return runs[name]
        if name not in specs:
            raise ConfigError(f"run {name!r} is not among the profile's runs {sorted(specs)}")
        if name in chain:
            raise ConfigError(f"runs {' -> '.join(chain + (name,))} fine-tune each other")
        spec = specs[name]
        parent = resolve(spec.init, chain + (name,)) if spec.init else None
        try:
            config = TrainConfig(data=str(data_path(spec.data)), **spec.settings)
        except ConfigError as err:
            raise ConfigError(f"run {name!r}: {err}") from None
        recorded = data_sha256(spec.data) if data_sha256 else None
        runs[name] = Experiment(config, root or artifacts_folder(), parent, name, recorded)
        return runs[name]

    for name in specs:
        resolve(name, ())
    return runs


#: One held-out evaluation: a data file and whether its labels are relabeled.
EvaluationCase = tuple[str | os.PathLike, bool]
