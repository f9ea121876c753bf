"""Named training runs cached by content: a run's folder is named by the hash of its
configuration, the sha256 of its data file and the source of the code that trains it, so the
notebooks reuse a trained model and any change of config, data or code trains a new one."""

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis_lib.train import TrainConfig, evaluate, latest_checkpoint, read_log, train

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
#: The modules whose source decides what a training run computes.
_CODE = ("models", "sparse", "train.py", "batching.py", "data/relabel.py")


def code_version() -> str:
    """sha256 (16 hex digits) of the source files that training depends on."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for entry in _CODE:
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
    """A training run and where its artifacts live."""

    config: TrainConfig
    root: Path = ARTIFACTS

    @property
    def key(self) -> str:
        """The run's hash: config (paths replaced by their files' sha256), code version."""
        fields = dataclasses.asdict(self.config)
        fields["data"] = _file_digest(self.config.data)
        if self.config.init is not None:
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
        """Metrics of the trained model on ``data``, cached beside the checkpoint."""
        tag = f"{_file_digest(data)[:12]}{'_relabeled' if relabeled else ''}"
        cache = self.folder / f"eval_{tag}.json"
        if cache.exists():
            return json.loads(cache.read_text())
        result = evaluate(self.run(), data, relabeled=relabeled)
        cache.write_text(json.dumps(result))
        return result
