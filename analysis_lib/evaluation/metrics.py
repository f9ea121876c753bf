"""The study's metrics, per event: nonzero accuracy, classwise nonzero accuracy, confusion
matrix and softmax statistics, with an accumulator for whole samples."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis_lib.core.errors import DataError
from analysis_lib.core.labels import CLASS_NAMES, NUM_CLASSES
from analysis_lib.training.monitor import shower_score_spread


def nonzero_accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    """Fraction of an event's nonzero voxels whose predicted class is the label (nan if none)."""
    return float(np.mean(pred == label)) if len(label) else float("nan")


def classwise_accuracy(pred: np.ndarray, label: np.ndarray,
                       num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Per class, the fraction of the event's voxels of that class predicted correctly;
    nan for classes absent from the event. (num_classes,) float64."""
    total = np.bincount(label, minlength=num_classes).astype(float)
    right = np.bincount(label[pred == label], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, right / total, np.nan)


def confusion_matrix(pred: np.ndarray, label: np.ndarray,
                     num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    return np.bincount(label * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes)


def predicted_class_softmax(probs: np.ndarray, pred: np.ndarray, cls: int) -> np.ndarray:
    """Softmax score of class ``cls`` at the voxels predicted as ``cls``."""
    return probs[pred == cls, cls]


def probe_summary(snapshots: dict[str, dict[int, dict[str, np.ndarray]]]) -> pd.DataFrame:
    """Per network and snapshot iteration, the probe event's accuracy and shower-score spread
    (``snapshots``: network -> iteration -> arrays with ``probs`` and ``label``)."""
    rows = []
    for network, shots in snapshots.items():
        for iteration, shot in shots.items():
            pred = shot["probs"].argmax(1)
            rows.append({"backend": network, "iteration": iteration,
                         "probe accuracy": float((pred == shot["label"]).mean()),
                         "std of shower score (predicted shower)":
                             shower_score_spread(shot["probs"], pred)})
    return pd.DataFrame(rows).set_index(["backend", "iteration"])


def mistake_pairs(pred: np.ndarray, label: np.ndarray, top: int = 3) -> str:
    """An event's most common confusions, ``"MIP → EM shower (12), ..."``, most frequent first."""
    bad = pred != label
    pairs = pd.Series([f"{CLASS_NAMES[t]} → {CLASS_NAMES[p]}"
                       for t, p in zip(label[bad], pred[bad], strict=True)]).value_counts()
    return ", ".join(f"{k} ({v})" for k, v in pairs.head(top).items())


@dataclass
class SampleMetrics:
    """Accumulates per-event metrics over a sample; :meth:`summary` gives the study's numbers."""

    num_classes: int = NUM_CLASSES
    accuracies: list[float] = field(default_factory=list)
    classwise: list[np.ndarray] = field(default_factory=list)
    confusion: np.ndarray | None = None

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one event's predictions (N,) and labels (N,)."""
        if len(label) == 0:
            return
        self.accuracies.append(nonzero_accuracy(pred, label))
        self.classwise.append(classwise_accuracy(pred, label, self.num_classes))
        cm = confusion_matrix(pred, label, self.num_classes)
        self.confusion = cm if self.confusion is None else self.confusion + cm

    def summary(self) -> "Evaluation":
        """Mean, std, standard error and per-event values of the nonzero accuracy; classwise
        accuracy averaged over the events where each class is present, with its standard
        error; the confusion matrix and the event count."""
        acc = np.array(self.accuracies)
        per_class = np.array(self.classwise) if self.classwise else np.full(
            (0, self.num_classes), np.nan)
        present = np.isfinite(per_class).sum(axis=0)
        classwise = tuple(float(np.nanmean(per_class[:, c])) if present[c] else None
                          for c in range(self.num_classes))
        classwise_sem = tuple(float(np.nanstd(per_class[:, c]) / np.sqrt(present[c]))
                              if present[c] else None for c in range(self.num_classes))
        confusion = (self.confusion if self.confusion is not None
                     else np.zeros((self.num_classes,) * 2, np.int64))
        some = len(acc) > 0
        return Evaluation(
            n_events=len(acc),
            nonzero_accuracy=float(acc.mean()) if some else None,
            nonzero_accuracy_std=float(acc.std()) if some else None,
            nonzero_accuracy_sem=float(acc.std() / np.sqrt(len(acc))) if some else None,
            nonzero_accuracy_per_event=tuple(acc.tolist()),
            classwise_accuracy=classwise,
            classwise_accuracy_sem=classwise_sem,
            classwise_events=tuple(present.tolist()),
            confusion_matrix=tuple(map(tuple, confusion.tolist())),
        )


@dataclass(frozen=True)
class Evaluation:
    """A network's metrics on a sample (:meth:`SampleMetrics.summary`): the nonzero accuracy
    over events (mean, std, standard error and each event's value), the classwise accuracy
    over the events holding each class (None for a class no event holds) with its standard
    error and event count, the confusion matrix (row = true class), the number of events
    without labels, and the name of the test set where a chapter gives it."""

    n_events: int
    nonzero_accuracy: float | None
    nonzero_accuracy_std: float | None
    nonzero_accuracy_sem: float | None
    nonzero_accuracy_per_event: tuple[float, ...]
    classwise_accuracy: tuple[float | None, ...]
    classwise_accuracy_sem: tuple[float | None, ...]
    classwise_events: tuple[int, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]
    n_unlabeled: int = 0
    test_set: str | None = None

    def on(self, test_set: str) -> "Evaluation":
        """The same numbers, naming the test set they were measured on."""
        return dataclasses.replace(self, test_set=test_set)

    def to_frame(self) -> pd.DataFrame:
        """Classwise and overall accuracy with standard errors and event counts, a row each
        (classes by name where there are the study's five, else ``class k``)."""
        n = len(self.classwise_accuracy)
        names = CLASS_NAMES if n == len(CLASS_NAMES) else tuple(f"class {k}" for k in range(n))
        return pd.DataFrame(
            {"accuracy": [*self.classwise_accuracy, self.nonzero_accuracy],
             "standard error": [*self.classwise_accuracy_sem, self.nonzero_accuracy_sem],
             "events": [*self.classwise_events, self.n_events]},
            index=[*names, "nonzero"]).astype({"accuracy": float, "standard error": float})

    @classmethod
    def from_record(cls, record: Mapping) -> "Evaluation":
        """Read one back from JSON (a cached evaluation or a chapter's recorded results)."""
        fields = dataclasses.fields(cls)
        unknown = set(record) - {f.name for f in fields}
        missing = [f.name for f in fields if f.default is dataclasses.MISSING
                   and f.name not in record]
        if unknown or missing:
            raise DataError(f"not an evaluation record: unknown fields {sorted(unknown)}, "
                            f"missing fields {missing}")
        values = {k: tuple(map(tuple, v)) if k == "confusion_matrix" else
                  tuple(v) if isinstance(v, list) else v for k, v in record.items()}
        return cls(**values)


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over the last ``window`` finite values at each point from ``window - 1`` on
    (NaN entries, e.g. iterations that predicted no shower, are skipped; NaN if all are);
    empty when there are fewer than ``window`` values."""
    values = np.asarray(values, dtype=float)
    if len(values) < window:
        return np.zeros(0)
    valid = np.isfinite(values)
    kernel = np.ones(window)
    total = np.convolve(np.where(valid, values, 0.0), kernel, "valid")
    count = np.convolve(valid.astype(float), kernel, "valid")
    return np.divide(total, count, out=np.full(len(total), np.nan), where=count > 0)


def boundary_distance(coords: np.ndarray, size: int) -> np.ndarray:
    """Distance (voxels) of each voxel (N, D) to the nearest face of a ``size``-voxel image."""
    coords = np.asarray(coords)
    return np.minimum(coords, size - 1 - coords).min(axis=1)


def misclassified_by_distance(distance: np.ndarray, labels: np.ndarray, wrong: np.ndarray,
                              edges: np.ndarray, num_classes: int = NUM_CLASSES
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Per class and distance bin, voxels and misclassified voxels: two (num_classes, bins)."""
    total = np.stack([np.histogram(distance[labels == c], edges)[0] for c in range(num_classes)])
    mistaken = np.stack([np.histogram(distance[(labels == c) & wrong], edges)[0]
                         for c in range(num_classes)])
    return total, mistaken


#: Figure 12 as two numbers per class: voxels closer than NEAR_PX to the boundary against
#: those at FAR_PX or more (the study's rise is below ~5 px).
NEAR_PX, FAR_PX = 4, 8


def near_and_far_mistakes(distance: np.ndarray, labels: np.ndarray, wrong: np.ndarray,
                          near: float = NEAR_PX, far: float = FAR_PX,
                          num_classes: int = NUM_CLASSES) -> list[dict]:
    """Per class: voxels and misclassified voxels closer than ``near`` to the boundary and at
    ``far`` or more (Figure 12 as two numbers per class)."""
    rows = []
    for c in range(num_classes):
        mine = labels == c
        is_near, is_far = mine & (distance < near), mine & (distance >= far)
        rows.append({"near_total": int(is_near.sum()), "near_wrong": int((is_near & wrong).sum()),
                     "far_total": int(is_far.sum()), "far_wrong": int((is_far & wrong).sum())})
    return rows


def near_and_far_table(rows: list[dict], near: float = NEAR_PX, far: float = FAR_PX
                       ) -> pd.DataFrame:
    """:func:`near_and_far_mistakes` as the chapter's table, one row per class: misclassified
    fractions (0 where a side holds no voxel) and voxel counts on each side."""
    frame = pd.DataFrame(rows, index=list(CLASS_NAMES))
    return pd.DataFrame({
        f"misclassified, d < {near}": frame["near_wrong"] / frame["near_total"].clip(lower=1),
        f"misclassified, d ≥ {far}": frame["far_wrong"] / frame["far_total"].clip(lower=1),
        f"voxels, d < {near}": frame["near_total"], f"voxels, d ≥ {far}": frame["far_total"]})


def misclassified_fraction_table(fraction: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    """Figure 12's fractions (classes, bins) as a table: a row per distance bin ``a-b``."""
    return pd.DataFrame(fraction.T, columns=list(CLASS_NAMES),
                        index=[f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
                        ).rename_axis("distance (voxels)")
