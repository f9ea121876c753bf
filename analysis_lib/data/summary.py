"""Sample statistics used by the dataset chapter: class counts, voxel counts, a display event."""

from collections.abc import Iterable, Sequence

import numpy as np

from analysis_lib.data.dataset import Event
from analysis_lib.errors import DataError
from analysis_lib.labels import NUM_CLASSES, VoxelClass


def class_counts(events: Iterable[Event]) -> np.ndarray:
    """Number of nonzero voxels of each class, summed over events: (NUM_CLASSES,) int64."""
    counts = np.zeros(NUM_CLASSES, np.int64)
    for event in events:
        if event.label is None:
            raise DataError(f"event {event.index} has no labels: class counts need a label product")
        counts += np.bincount(event.label, minlength=NUM_CLASSES)
    return counts


def voxel_counts(events: Iterable[Event]) -> np.ndarray:
    """Number of nonzero voxels of each event: (n_events,) int64."""
    return np.array([len(event.energy) for event in events], dtype=np.int64)


def pick_display_event(events: Sequence[Event], min_classes: int = 4) -> int:
    """Index of the first event with a Michel electron and at least ``min_classes`` classes
    (the first event with the most classes when none qualifies)."""
    best, best_n = 0, -1
    for i, event in enumerate(events):
        present = np.unique(event.label)
        if len(present) >= min_classes and VoxelClass.MICHEL in present:
            return i
        if len(present) > best_n:
            best, best_n = i, len(present)
    return best
