"""Sample statistics and 2D projections on hand-built events."""

import numpy as np
import pytest

from analysis_lib.core.errors import DataError
from analysis_lib.data.dataset import Event, open_dataset
from analysis_lib.data.larcv_schema import ImageMeta
from analysis_lib.data.projection import project
from analysis_lib.data.summary import (
    class_counts,
    occupancy_by_size,
    pick_display_event,
    relabel_counts,
    voxel_counts,
)

META = ImageMeta((4, 4, 4), (0.3,) * 3, (0.0,) * 3)


def _event(labels, index=0):
    labels = np.asarray(labels, np.int64)
    coords = np.stack([np.arange(len(labels))] * 3, axis=1) % 4
    return Event(coords, np.ones(len(labels), np.float32), labels, META, index)


def test_class_counts_and_voxel_counts():
    events = [_event([0, 1, 1, 2]), _event([2, 2, 4])]
    assert class_counts(events).tolist() == [1, 2, 3, 0, 1]
    assert voxel_counts(events).tolist() == [4, 3]


def test_class_counts_needs_labels():
    event = _event([0])
    event.label = None
    with pytest.raises(DataError, match="no labels"):
        class_counts([event])


def test_relabel_counts_moves_secondary_michel_and_delta_voxels_to_shower():
    event = _event([1, 3, 3, 4, 4, 4])
    event.prim_ion = np.array([0, 1, 0, 1, 0, 0])
    table = relabel_counts([event])
    assert table["regular (voxels)"].tolist() == [0, 1, 0, 2, 3]
    assert table["relabeled (voxels)"].tolist() == [0, 1, 3, 1, 1]
    assert np.isnan(table.loc["HIP", "relabeled / regular"])
    assert table.loc["Michel e-", "relabeled / regular"] == pytest.approx(1 / 3)
    assert event.label.tolist() == [1, 3, 3, 4, 4, 4]


def test_occupancy_per_file(tiny_sample):
    table = occupancy_by_size([tiny_sample])
    with open_dataset(tiny_sample) as events:
        counts = voxel_counts(events)
    assert table.index.tolist() == [32]
    row = table.loc[32]
    assert row["events"] == 12 and row["nonzero voxels / event"] == pytest.approx(counts.mean())
    assert row["occupancy (%)"] == pytest.approx(100 * counts.mean() / 32**3)


def test_display_event_prefers_a_michel_with_many_classes():
    events = [_event([0, 1, 2, 3]), _event([0, 1, 2, 4]), _event([0, 1, 2, 3, 4])]
    assert pick_display_event(events) == 1
    assert pick_display_event([_event([1]), _event([1, 2])]) == 1


def test_projection_sums_energy_and_keeps_the_lowest_label():
    coords = np.array([[1, 2, 0], [1, 2, 3], [0, 0, 1]])
    columns = {
        "energy": np.array([1.0, 3.0, 0.5]),
        "label": np.array([2, 1, 4]),
        "prim_ion": np.array([0, 1, 1]),
    }
    xy, cols = project(coords, columns, (0, 1))
    assert xy.tolist() == [[0, 0], [1, 2]]
    assert cols["energy"].tolist() == [0.5, 4.0]
    assert cols["label"].tolist() == [4, 1]
    assert cols["prim_ion"].tolist() == [1, 1]  # the most energetic voxel's flag
    zx, _ = project(coords, columns, (2, 0))
    assert zx.tolist() == [[0, 1], [1, 0], [3, 1]]
