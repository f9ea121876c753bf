"""Sample statistics of the dataset and relabeling chapters: class counts, voxel counts and
occupancy, a display event."""

import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis_lib.core.errors import DataError
from analysis_lib.core.labels import CLASS_NAMES, NUM_CLASSES, VoxelClass
from analysis_lib.data.dataset import Event, open_dataset
from analysis_lib.data.relabel import relabel


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


def relabel_counts(events: Sequence[Event]) -> pd.DataFrame:
    """Voxels of each class under the regular and the relabeled labels, and their ratio (NaN
    for a class the regular labels lack): what relabeling moves. The events keep their labels."""
    before = class_counts(events)
    after = np.zeros(NUM_CLASSES, np.int64)
    for event in events:
        after += np.bincount(relabel(event.label, event.prim_ion), minlength=NUM_CLASSES)
    ratio = np.divide(after, before, out=np.full(NUM_CLASSES, np.nan), where=before > 0)
    return pd.DataFrame({"regular (voxels)": before, "relabeled (voxels)": after,
                         "relabeled / regular": ratio}, index=list(CLASS_NAMES))


def occupancy_by_size(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Per file (one image size each): events, nonzero voxels per event (mean and standard
    deviation) and the mean fraction of the image's voxels that are nonzero, in percent."""
    rows = []
    for path in paths:
        with open_dataset(path) as events:
            n = voxel_counts(events)
            size = events.meta.size_px
        rows.append({"image size (px)": size[0], "events": len(n),
                     "nonzero voxels / event": n.mean(), "std": n.std(),
                     "occupancy (%)": 100 * n.mean() / np.prod(size)})
    return pd.DataFrame(rows).set_index("image size (px)")


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
