"""A trained network applied to a sample: per-event predictions and the study's metrics.

Nothing here changes how a network trains, so it is not part of a run's key; it is part of an
evaluation's (:data:`analysis_lib.study.experiments.EVALUATION_CODE`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis_lib.core.errors import ConfigError
from analysis_lib.core.files import atomic_output
from analysis_lib.data import Event, open_dataset
from analysis_lib.data.relabel import relabel
from analysis_lib.evaluation.metrics import Evaluation, SampleMetrics
from analysis_lib.models import UResNet
from analysis_lib.training import checkpoints
from analysis_lib.training.batching import Batch, collate
from analysis_lib.training.config import TrainConfig
from analysis_lib.training.loop import default_device


@dataclass(frozen=True, eq=False)
class Prediction:
    """The network's output on one event: class scores (N, 5) and the predicted class (N,)
    of each voxel, in the event's voxel order; ``event.label`` is the truth where the file
    has it (relabeled when the prediction was asked for relabeled labels)."""

    event: Event
    probs: np.ndarray
    pred: np.ndarray


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[UResNet, TrainConfig]:
    """The network of a checkpoint, in eval mode, and its training configuration."""
    state = checkpoints.load(checkpoint, device)
    cfg = TrainConfig(**state["config"])
    model = cfg.model()
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def predict(model: UResNet, data: str | os.PathLike, batch_size: int = 4, relabeled: bool = False,
            device: str | torch.device = "cpu", projection: int = 0) -> Iterator[Prediction]:
    """A :class:`Prediction` per event of ``data`` (projection ``projection`` of a 2D file);
    with ``relabeled`` the events carry relabeled labels (the file's events are not changed)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    with open_dataset(data, dim=model.dim, projection=projection) as events:
        size = int(events.meta.size_px[0])
        for first in range(0, len(events), batch_size):
            chunk = [events[i] for i in range(first, min(first + batch_size, len(events)))]
            if relabeled:
                chunk = [dataclasses.replace(e, label=relabel(e.label, e.prim_ion))
                         if e.label is not None else e for e in chunk]
            batch: Batch = collate(chunk, size).to(device)
            with torch.no_grad():
                probs = torch.softmax(model(batch.coords, batch.feats, size).float(), 1)
            index = batch.coords[:, 0].cpu().numpy()
            probs = probs.cpu().numpy()
            for i, event in enumerate(chunk):
                mine = probs[index == i]
                yield Prediction(event, mine, mine.argmax(1))


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, batch_size: int = 4,
             relabeled: bool = False, device: str | torch.device | None = None,
             projection: int | None = None, predictions: str | os.PathLike | None = None
             ) -> Evaluation:
    """The study's metrics of a trained network on the labelled events of a sample (see
    :class:`SampleMetrics`; ``n_unlabeled`` counts the others), on ``device`` (default: the
    GPU where there is one, as training). A 2D network reads the projection it was trained on
    unless ``projection`` says otherwise. With ``predictions``, every voxel's event,
    coordinates, predicted class and scores are saved there (``.npz``), labelled or not."""
    device = default_device() if device is None else device
    model, cfg = load_model(checkpoint, device)
    metrics, unlabeled, kept = SampleMetrics(), 0, []
    view = cfg.projection if projection is None else projection
    for p in predict(model, data, batch_size, relabeled, device, view):
        if p.event.label is None:
            unlabeled += 1
        else:
            metrics.update(p.pred, p.event.label)
        if predictions is not None:
            kept.append(p)
    if predictions is not None:
        save_predictions(Path(predictions), kept)
    return dataclasses.replace(metrics.summary(), n_unlabeled=unlabeled)


def save_predictions(path: Path, predictions: list[Prediction]) -> None:
    """One ``.npz`` holding, per voxel: event index, coordinates, predicted class, scores."""
    arrays = {"event": np.concatenate([np.full(len(p.pred), p.event.index)
                                       for p in predictions]),
              "coords": np.concatenate([p.event.coords for p in predictions]),
              "pred": np.concatenate([p.pred for p in predictions]),
              "probs": np.concatenate([p.probs for p in predictions])}
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
