"""Figures 12–13: where the network goes wrong (against the distance to the image boundary,
and its worst images), and the study's claim 9 judged on it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis_lib.core import paper
from analysis_lib.core.labels import CLASS_NAMES, VoxelClass
from analysis_lib.evaluation import metrics
from analysis_lib.evaluation.evidence import Estimate, Part
from analysis_lib.evaluation.inference import Prediction, load_model, predict
from analysis_lib.study import results
from analysis_lib.study.profiles import Chapter

NAME = "mistakes"
#: Figure 12's bin width (voxels) and the fewest images Figure 13 shows.
DISTANCE_BIN = 4
MIN_GALLERY = 3


@dataclass(frozen=True)
class NearFar:
    """A class's voxels, and those misclassified, closer than ``near`` voxels to the boundary
    and at ``far`` or more."""

    near_total: int
    near_wrong: int
    far_total: int
    far_wrong: int

    def rise(self) -> Estimate:
        """Misclassified fraction near minus far, with its binomial standard error."""
        near = self.near_wrong / max(self.near_total, 1)
        far = self.far_wrong / max(self.far_total, 1)
        se = math.sqrt(near * (1 - near) / max(self.near_total, 1)
                       + far * (1 - far) / max(self.far_total, 1))
        return Estimate(near - far, se)


@dataclass(frozen=True)
class WorstImage:
    """One of Figure 13's images: its position among the predictions, its event number."""

    position: int
    event: int
    voxels: int
    accuracy: float
    mistakes: str


@dataclass(frozen=True)
class Mistakes:
    """Figure 12 (voxels and misclassified voxels per class and distance bin, ``edges``), its
    two-number summary per class (``boundary``), and Figure 13's worst images."""

    test_set: str
    size: int
    near: float
    far: float
    edges: tuple[int, ...]
    total: tuple[tuple[int, ...], ...]
    wrong: tuple[tuple[int, ...], ...]
    boundary: Mapping[str, NearFar]
    worst: tuple[WorstImage, ...]

    def fraction(self) -> np.ndarray:
        """Misclassified fraction per class and bin (NaN for an empty bin)."""
        total, wrong = np.asarray(self.total, float), np.asarray(self.wrong, float)
        return np.divide(wrong, total, out=np.full(total.shape, np.nan), where=total > 0)

    def fraction_frame(self) -> pd.DataFrame:
        return metrics.misclassified_fraction_table(self.fraction(), np.asarray(self.edges))

    def boundary_frame(self) -> pd.DataFrame:
        return metrics.near_and_far_table([vars(b) for b in self.boundary.values()],
                                          self.near, self.far)

    def worst_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"event": w.event, "voxels": w.voxels, "accuracy": w.accuracy,
                              "most common mistakes": w.mistakes} for w in self.worst]
                            ).set_index("event")


def from_predictions(events: Sequence[Prediction], size: int, test_set: str) -> Mistakes:
    """The chapter's results from the network's predictions on ``size`` px test events."""
    labels = np.concatenate([e.event.label for e in events])
    wrong = np.concatenate([e.pred != e.event.label for e in events])
    distance = metrics.boundary_distance(np.concatenate([e.event.coords for e in events]), size)
    edges = np.arange(0, size // 2 + DISTANCE_BIN, DISTANCE_BIN)
    total, mistaken = metrics.misclassified_by_distance(distance, labels, wrong, edges)
    near, far = float(metrics.NEAR_PX), float(metrics.FAR_PX)
    rows = metrics.near_and_far_mistakes(distance, labels, wrong, near, far)
    accuracy = np.array([metrics.nonzero_accuracy(e.pred, e.event.label) for e in events])
    scored = np.flatnonzero(np.isfinite(accuracy))
    n_show = max(MIN_GALLERY, math.ceil(paper.WORST_IMAGES_FRACTION * len(scored)))
    worst = tuple(WorstImage(int(i), int(events[i].event.index), len(events[i].pred),
                             float(accuracy[i]),
                             metrics.mistake_pairs(events[i].pred, events[i].event.label))
                  for i in scored[np.argsort(accuracy[scored])[:n_show]])
    return Mistakes(test_set, size, near, far, tuple(map(int, edges)),
                    tuple(map(tuple, total.tolist())), tuple(map(tuple, mistaken.tolist())),
                    {name: NearFar(**row) for name, row in zip(CLASS_NAMES, rows, strict=True)},
                    worst)


def compute(ch: Chapter) -> tuple[Mistakes, list[Prediction]]:
    """Predict the test set with the chapter's network, compute and record the results; the
    predictions too, for the chapter's event displays."""
    model, _ = load_model(ch.runs[ch.run_name].run(progress=False))
    events = list(predict(model, ch.data.path_of(ch.test_set)))
    result = from_predictions(events, int(ch.data.entry(ch.test_set).size), ch.test_set)
    results.record(NAME, result)
    return result, events


def near_boundary(r: Mistakes) -> list[Part]:
    """Claim 9: more mistakes near the boundary for HIP, MIP and shower; not clearly for
    Michel and delta."""
    rises = {name: b.rise() for name, b in r.boundary.items()}
    big = [CLASS_NAMES[c] for c in (VoxelClass.HIP, VoxelClass.MIP, VoxelClass.SHOWER)]
    small = [CLASS_NAMES[c] for c in (VoxelClass.DELTA, VoxelClass.MICHEL)]
    clear = all(rises[c].value > rises[c].se for c in big)
    both_small_clear = all(rises[c].value > 2 * rises[c].se for c in small)
    text = "; ".join(f"{c} {rises[c]}" for c in big + small)
    return [Part(clear, f"near − far misclassified fraction: {text}"),
            Part(not both_small_clear, "Michel and delta: "
                 + ("both rise clearly" if both_small_clear else "not both a clear rise"))]
