"""The study's metrics, per event: nonzero accuracy, classwise nonzero accuracy, confusion
matrix and softmax statistics, with an accumulator for whole samples."""

from dataclasses import dataclass, field

import numpy as np

from analysis_lib.labels import NUM_CLASSES


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

    def summary(self) -> dict:
        """Mean and std over events of the nonzero accuracy, classwise accuracy averaged over the
        events where each class is present, the confusion matrix and the event count."""
        acc = np.array(self.accuracies)
        per_class = np.array(self.classwise) if self.classwise else np.full(
            (0, self.num_classes), np.nan)
        present = np.isfinite(per_class).sum(axis=0)
        classwise = [float(np.nanmean(per_class[:, c])) if present[c] else None
                     for c in range(self.num_classes)]
        confusion = (self.confusion if self.confusion is not None
                     else np.zeros((self.num_classes,) * 2, np.int64))
        return {
            "n_events": len(acc),
            "nonzero_accuracy": float(acc.mean()) if len(acc) else None,
            "nonzero_accuracy_std": float(acc.std()) if len(acc) else None,
            "classwise_accuracy": classwise,
            "classwise_events": present.tolist(),
            "confusion_matrix": confusion.tolist(),
        }
