"""PILArNet-M reader on files laid out like the public ones (variable-length rows per event)."""

import pickle

import h5py
import numpy as np
import pytest

from analysis_lib.core.errors import DataError
from analysis_lib.data.pilarnet_m import open_pilarnet_m, study_classes

# size, cluster id, group id, interaction id, semantic, pid
CLUSTERS_V2 = np.array(
    [
        [2, 0, 0, -1, 4, -1],  # low-energy deposit -> shower (2)
        [3, 1, 1, 0, 1, 4],  # track, proton       -> HIP (0)
        [2, 2, 2, 0, 1, 2],  # track, muon         -> MIP (1)
        [1, 3, 3, 0, 0, 1],  # shower              -> shower (2)
        [1, 4, 4, 0, 2, 1],  # Michel              -> Michel (4)
        [1, 5, 5, 0, 3, 1],  # delta               -> delta (3)
    ]
)
EXPECTED_V2 = [2, 2, 0, 0, 0, 1, 1, 2, 4, 3]
EXPECTED_V1 = [2, 2, 1, 1, 1, 1, 1, 2, 4, 3]


def points(n, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 8), dtype=np.float32)
    out[:, :3] = rng.integers(0, 768, (n, 3))
    out[:, 3] = rng.random(n)  # voxel value (the energy the reader uses)
    out[:, 4] = rng.random(n)  # energy deposit
    out[:, 5:] = rng.random((n, 3))
    return out


def build_file(path, clusters, point_rows, extra=True):
    """Two events: the given one and an empty one, as 1D variable-length rows."""
    with h5py.File(path, "w") as f:
        point = f.create_dataset("point", (2,), dtype=h5py.vlen_dtype(np.float32))
        cluster = f.create_dataset("cluster", (2,), dtype=h5py.vlen_dtype(np.int64))
        point[0], point[1] = point_rows.ravel(), np.zeros(0, np.float32)
        cluster[0], cluster[1] = clusters.ravel(), np.zeros(0, np.int64)
        if extra:
            extra_ds = f.create_dataset("cluster_extra", (2,), dtype=h5py.vlen_dtype(np.float32))
            extra_ds[0] = np.zeros(5 * len(clusters), np.float32)
            extra_ds[1] = np.zeros(0, np.float32)


def test_v2_file(tmp_path):
    path = tmp_path / "generic_v2_2_v1.h5"
    rows = points(10)
    build_file(path, CLUSTERS_V2, rows)
    events = open_pilarnet_m(path)
    assert len(events) == 2 and events.revision == "v2"
    event = events[0]
    np.testing.assert_array_equal(event.coords, rows[:, :3].astype(np.int64))
    assert event.coords.dtype == np.int64
    np.testing.assert_array_equal(event.energy, rows[:, 3])
    np.testing.assert_array_equal(event.label, EXPECTED_V2)
    assert [c.tolist() for c in event.clusters[:3]] == [[0, 1], [2, 3, 4], [5, 6]]
    assert event.meta.size_px == (768, 768, 768)
    empty = events[-1]
    assert empty.coords.shape == (0, 3) and empty.label.shape == (0,)
    clone = pickle.loads(pickle.dumps(events))
    np.testing.assert_array_equal(clone[0].label, EXPECTED_V2)
    events.close()


def test_v1_file_maps_tracks_to_mip(tmp_path):
    path = tmp_path / "v1.h5"
    build_file(path, CLUSTERS_V2[:, :5], points(10), extra=False)
    events = open_pilarnet_m(path)
    assert events.revision == "v1"
    np.testing.assert_array_equal(events[0].label, EXPECTED_V1)


def test_study_classes():
    semantic = np.array([0, 1, 1, 2, 3, 4])
    pid = np.array([1, 4, 3, 1, 1, -1])
    assert study_classes(semantic, pid).tolist() == [2, 0, 1, 4, 3, 2]
    assert study_classes(semantic, None).tolist() == [2, 1, 1, 4, 3, 2]
    with pytest.raises(DataError, match="semantic id 5"):
        study_classes(np.array([5]), None)


def test_coordinates_outside_cube(tmp_path):
    path = tmp_path / "bad.h5"
    rows = points(10)
    rows[3, 1] = 768
    build_file(path, CLUSTERS_V2, rows)
    with pytest.raises(DataError, match="event 0: point coordinates span .*768, outside"):
        open_pilarnet_m(path)[0]


def test_cluster_sizes_must_match_points(tmp_path):
    path = tmp_path / "bad.h5"
    build_file(path, CLUSTERS_V2, points(9))
    with pytest.raises(DataError, match="cluster sizes sum to 10 but there are 9 points"):
        open_pilarnet_m(path)[0]


def test_wrong_revision_is_reported(tmp_path):
    path = tmp_path / "bad.h5"
    build_file(path, CLUSTERS_V2[:4], points(8))
    with pytest.raises(DataError, match="not a multiple of 5"):
        open_pilarnet_m(path, revision="v1")[0]


def test_not_a_pilarnet_m_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["point"] = np.zeros(3)
    with pytest.raises(DataError, match="not a PILArNet-M file"):
        open_pilarnet_m(path)
    with pytest.raises(DataError, match="no such file"):
        open_pilarnet_m(tmp_path / "missing.h5")
