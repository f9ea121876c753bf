"""open_dataset: round trips through the writer, files in the official larcv3 layout, bad input."""

import pickle

import h5py
import numpy as np
import pytest

from analysis_lib.core.errors import DataError
from analysis_lib.data import PARTICLE_DTYPE, ImageMeta, Larcv3File, Larcv3Writer, open_dataset

META3 = ImageMeta((16, 12, 10), (0.3, 0.3, 0.3), (0.0, -5.0, 1.5))
METAS2 = (
    ImageMeta((16, 12), (0.3, 0.3), (0.0, 0.0), projection_id=0),
    ImageMeta((12, 10), (0.3, 0.3), (0.0, 0.0), projection_id=1),
    ImageMeta((10, 16), (0.3, 0.3), (0.0, 0.0), projection_id=2),
)


# --- events built with the writer ---------------------------------------------------------


def random_event(rng, meta, n_voxels, n_particles=3):
    ids = rng.choice(meta.n_voxels, size=n_voxels, replace=False)
    coords = np.stack(np.unravel_index(ids, meta.size_px), axis=1).astype(np.int64)
    return {
        "coords": coords,
        "energy": rng.random(n_voxels).astype(np.float32),
        "label": rng.integers(0, 5, n_voxels),
        "prim_ion": rng.integers(0, 2, n_voxels),
        "particle_index": rng.integers(-1, n_particles, n_voxels),
    }


def particle_rows(rng, n):
    rows = np.zeros(n, dtype=PARTICLE_DTYPE)
    rows["id"] = np.arange(n)
    rows["pdg"] = rng.choice([11, 13, 2212], n)
    rows["energy_init"] = rng.random(n)
    rows["vtx"]["x"] = rng.random(n)
    rows["process"] = [b"primary"] * n
    return rows


def sparse_entries(meta, ev, rng):
    """All per-voxel products of one projection; non-data products in shuffled voxel order."""
    perm = rng.permutation(len(ev["coords"]))
    entry = {"data": (meta, ev["coords"], ev["energy"])}
    for key, name in (("label", "fivetypes"), ("prim_ion", "primion"), ("particle_index", "index")):
        entry[name] = (meta, ev["coords"][perm], ev[key][perm].astype(np.float32))
    return entry


def write_3d(path, seed=0, n_events=4):
    rng = np.random.default_rng(seed)
    events = []
    with Larcv3Writer(path, flush_every=3) as writer:
        for i in range(n_events):
            ev = random_event(rng, META3, 0 if i == 2 else int(rng.integers(5, 40)))
            ev["particles"] = particle_rows(rng, 3)
            entries = sparse_entries(META3, ev, rng)
            clusters = [
                (ev["coords"][ev["particle_index"] == c], ev["energy"][ev["particle_index"] == c])
                for c in range(3)
            ]
            writer.write_event(
                0,
                0,
                i,
                sparse={f"sparse3d_{k}": [v] for k, v in entries.items()},
                clusters={"cluster3d_mcst": [(META3, clusters)]},
                particles={"particle_mcst": ev["particles"]},
            )
            events.append(ev)
    return events


def write_2d(path, seed=1, n_events=3):
    rng = np.random.default_rng(seed)
    events = []
    with Larcv3Writer(path) as writer:
        for i in range(n_events):
            per_projection = [
                random_event(rng, meta, 0 if i == 1 else int(rng.integers(3, 20)))
                for meta in METAS2
            ]
            sparse = {}
            for meta, ev in zip(METAS2, per_projection, strict=True):
                for name, entry in sparse_entries(meta, ev, rng).items():
                    sparse.setdefault(f"sparse2d_{name}", []).append(entry)
            writer.write_event(0, 0, i, sparse=sparse)
            events.append(per_projection)
    return events


def sorted_by_id(meta, ev):
    order = np.argsort(meta.flat_ids(ev["coords"]))
    return {key: value[order] for key, value in ev.items() if key != "particles"}


def test_round_trip_3d(tmp_path):
    path = tmp_path / "sim3d.h5"
    written = write_3d(path)
    with open_dataset(path) as events:
        assert len(events) == 4
        assert events.meta.size_px == META3.size_px
        assert "sparse3d_index" in events.products
        for i, (event, ev) in enumerate(zip(events, written, strict=True)):
            expect = sorted_by_id(META3, ev)
            assert event.index == i
            np.testing.assert_array_equal(event.coords, expect["coords"])
            np.testing.assert_array_equal(event.energy, expect["energy"])
            for key in ("label", "prim_ion", "particle_index"):
                np.testing.assert_array_equal(getattr(event, key), expect[key])
                assert getattr(event, key).dtype == np.int64
            assert event.coords.dtype == np.int64 and event.energy.dtype == np.float32
            np.testing.assert_array_equal(event.particles["pdg"], ev["particles"]["pdg"])
            assert event.particles["process"].tolist() == [b"primary"] * 3
            for c, index in enumerate(event.clusters):
                np.testing.assert_array_equal(event.particle_index[index], c)
                assert len(index) == np.sum(ev["particle_index"] == c)
        assert len(events[2].coords) == 0 and events[2].coords.shape == (0, 3)
        np.testing.assert_array_equal(events[-1].coords, events[3].coords)


@pytest.mark.parametrize("projection", [0, 1, 2])
def test_round_trip_2d_projections(tmp_path, projection):
    path = tmp_path / "sim2d.h5"
    written = write_2d(path)
    events = open_dataset(path, dim=2, projection=projection)
    assert events.meta.size_px == METAS2[projection].size_px
    for event, per_projection in zip(events, written, strict=True):
        expect = sorted_by_id(METAS2[projection], per_projection[projection])
        np.testing.assert_array_equal(event.coords, expect["coords"])
        np.testing.assert_array_equal(event.energy, expect["energy"])
        np.testing.assert_array_equal(event.label, expect["label"])
        assert event.meta.projection_id == projection
        assert event.particles is None and event.clusters is None


def test_dataset_pickles_and_reopens(tmp_path):
    path = tmp_path / "sim3d.h5"
    write_3d(path)
    events = open_dataset(path)
    first = events[0]
    clone = pickle.loads(pickle.dumps(events))
    np.testing.assert_array_equal(clone[0].coords, first.coords)
    events.close()
    clone.close()
    np.testing.assert_array_equal(events[1].energy, clone[1].energy)


def test_reading_one_event_reads_only_its_rows(tmp_path, monkeypatch):
    path = tmp_path / "sim3d.h5"
    written = write_3d(path)
    reads = []
    original = Larcv3File._rows

    def recording(self, product, table, first, n, event):
        reads.append((table, n))
        return original(self, product, table, first, n, event)

    monkeypatch.setattr(Larcv3File, "_rows", recording)
    event = open_dataset(path)[3]
    assert len(event.coords) == len(written[3]["coords"])
    assert max(n for table, n in reads if table == "voxels") == len(event.coords)
    assert all(n <= 3 for table, n in reads if table != "voxels")


def test_slices_and_negative_indices(tmp_path):
    path = tmp_path / "sim3d.h5"
    write_3d(path)
    events = open_dataset(path)
    assert [e.index for e in events[1:3]] == [1, 2]
    assert events[-4].index == 0


def test_index_out_of_range_is_index_error(tmp_path):
    path = tmp_path / "sim3d.h5"
    write_3d(path)
    with pytest.raises(IndexError):
        open_dataset(path)[4]


# --- a file written with raw h5py in larcv3's own dtypes -----------------------------------

# Older larcv3 index rows: ``first`` uint32 (formats.md uses uint64; both must read).
EXTENTS_U4 = np.dtype(
    {"names": ["first", "N"], "formats": ["<u4", "<u4"], "offsets": [0, 4], "itemsize": 8}
)
ID_EXTENTS_U4 = np.dtype(
    {"names": ["first", "N", "ID"], "formats": ["<u4"] * 3, "offsets": [0, 4, 8], "itemsize": 12}
)
EXTENTS_U8 = np.dtype(
    {"names": ["first", "N"], "formats": ["<u8", "<u4"], "offsets": [0, 8], "itemsize": 16}
)
ID_EXTENTS_U8 = np.dtype(
    {
        "names": ["first", "ID", "N"],
        "formats": ["<u8", "<u4", "<u4"],
        "offsets": [0, 12, 8],
        "itemsize": 16,
    }
)
VOXEL = np.dtype(
    {"names": ["id", "value"], "formats": ["<u8", "<f4"], "offsets": [0, 8], "itemsize": 16}
)
VERTEX = np.dtype({"names": list("xyzt"), "formats": ["<f8"] * 4})
PARTICLE_LAYOUT = [  # (name, type, offset) as larcv3's Particle struct lays them out
    ("id", "<u2", 0), ("mcst_index", "<u2", 2), ("mct_index", "<u2", 4), ("shape", "<i4", 8),
    ("current_type", "<i2", 12), ("interaction_type", "<i2", 14), ("trackid", "<u4", 16),
    ("pdg", "<i4", 20), ("px", "<f8", 24), ("py", "<f8", 32), ("pz", "<f8", 40),
    ("vtx", VERTEX, 48), ("end_pt", VERTEX, 80), ("first_step", VERTEX, 112),
    ("last_step", VERTEX, 144), ("dist_travel", "<f8", 176), ("energy_init", "<f8", 184),
    ("energy_deposit", "<f8", 192), ("process", "S64", 200), ("parent_trackid", "<u4", 264),
    ("parent_pdg", "<i4", 268), ("parent_vtx", VERTEX, 272), ("ancestor_trackid", "<u4", 304),
    ("ancestor_pdg", "<i4", 308), ("ancestor_vtx", VERTEX, 312),
]  # fmt: skip
PARTICLE = np.dtype(
    {
        "names": [name for name, _, _ in PARTICLE_LAYOUT],
        "formats": [fmt for _, fmt, _ in PARTICLE_LAYOUT],
        "offsets": [offset for _, _, offset in PARTICLE_LAYOUT],
        "itemsize": 344,
    }
)


def official_meta_dtype(dim):
    """larcv3 ImageMeta<dim>: bool, size_t, double[dim], size_t[dim], double[dim], unit."""
    return np.dtype(
        {
            "names": ["valid", "projection_id", "image_sizes", "number_of_voxels", "origin"],
            "formats": ["u1", "<u8", ("<f8", (dim,)), ("<u8", (dim,)), ("<f8", (dim,))],
            "offsets": [0, 8, 16, 16 + 8 * dim, 16 + 16 * dim],
            "itemsize": 24 + 24 * dim,
        }
    )


def dataset(group, name, rows):
    group.create_dataset(name, data=rows, maxshape=(None,), chunks=True, compression="gzip")


def raw_sparse(f, product, events, dim, extents=EXTENTS_U4, id_extents=ID_EXTENTS_U4):
    """events: per event, list of (projection id, number_of_voxels, [(id, value), ...])."""
    ext, vext, metas, voxels = [], [], [], []
    for projections in events:
        ext.append((len(vext), len(projections)))
        for pid, size, vox in projections:
            vext.append({"first": len(voxels), "N": len(vox), "ID": pid})
            metas.append((1, pid, [0.3 * s for s in size], size, [0.0] * dim))
            voxels.extend(vox)
    group = f.create_group(f"Data/{product}_group")
    dataset(group, "extents", np.array(ext, dtype=extents))
    rows = np.zeros(len(vext), dtype=id_extents)
    for i, row in enumerate(vext):
        for key, value in row.items():
            rows[i][key] = value
    dataset(group, "voxel_extents", rows)
    dataset(group, "image_meta", np.array(metas, dtype=official_meta_dtype(dim)))
    dataset(group, "voxels", np.array(voxels, dtype=VOXEL))


def raw_event_ids(f, n):
    ids = np.array(
        [(7, 1, i) for i in range(n)], dtype=[("run", "<i8"), ("subrun", "<i8"), ("event", "<i8")]
    )
    f.create_dataset("Events/event_id", data=ids, maxshape=(None,), chunks=True)


def raw_particles(f):
    rows = np.zeros(2, dtype=PARTICLE)
    rows["pdg"] = [13, 2212]
    rows["process"] = [b"primary", b"protonInelastic"]
    rows["vtx"]["z"] = [1.25, 2.5]
    group = f.create_group("Data/particle_mcst_group")
    dataset(group, "extents", np.array([(0, 2), (2, 0)], dtype=EXTENTS_U8))
    dataset(group, "particles", rows)


def raw_clusters(f):
    """cluster3d_mcst: event 0 clusters {45, 1} and {119}; event 1 cluster {60}."""
    group = f.create_group("Data/cluster3d_mcst_group")
    dataset(group, "extents", np.array([(0, 1), (1, 1)], dtype=EXTENTS_U8))
    proj = np.zeros(2, dtype=ID_EXTENTS_U8)
    proj["first"], proj["N"], proj["ID"] = [0, 2], [2, 1], [0, 0]
    dataset(group, "projection_extents", proj)
    meta = official_meta_dtype(3)
    dataset(
        group,
        "image_meta",
        np.array([(1, 0, [1.2, 1.5, 1.8], [4, 5, 6], [0.0] * 3)] * 2, dtype=meta),
    )
    cext = np.zeros(3, dtype=ID_EXTENTS_U8)
    cext["first"], cext["N"], cext["ID"] = [0, 2, 3], [2, 1, 1], [0, 1, 0]
    dataset(group, "cluster_extents", cext)
    dataset(group, "voxels", np.array([(45, 1.5), (1, 0.5), (119, 2.0), (60, 3.0)], dtype=VOXEL))


def build_official_3d(path, labels=((119, 4.0), (45, 0.0), (1, 1.0))):
    """3D image 4 x 5 x 6: id = (ix * 5 + iy) * 6 + iz.

    Event 0 voxels (1,2,3) -> 45, (0,0,1) -> 1, (3,4,5) -> 119 in that (unsorted) order;
    labels stored in another order. Event 1 voxel (2,0,0) -> 60.
    """
    with h5py.File(path, "w") as f:
        raw_event_ids(f, 2)
        size = [4, 5, 6]
        raw_sparse(
            f,
            "sparse3d_data",
            [[(0, size, [(45, 1.5), (1, 0.5), (119, 2.0)])], [(0, size, [(60, 3.0)])]],
            3,
        )
        raw_sparse(
            f, "sparse3d_fivetypes", [[(0, size, list(labels))], [(0, size, [(60, 2.0)])]], 3
        )
        raw_particles(f)
        raw_clusters(f)


def build_official_2d(path):
    """Projections xy 4x5 (id = ix*5 + iy), yz 5x6 (id = iy*6 + iz), zx 6x4 (id = iz*4 + ix),
    stored in the order zx, xy, yz."""
    events = [
        [
            (2, [6, 4], [(23, 0.25), (1, 0.5)]),
            (0, [4, 5], [(7, 1.0), (19, 2.0)]),
            (1, [5, 6], [(29, 4.0)]),
        ],
        [(2, [6, 4], []), (0, [4, 5], [(0, 8.0)]), (1, [5, 6], [(6, 9.0)])],
    ]
    labels = [
        [
            (2, [6, 4], [(1, 3.0), (23, 4.0)]),
            (0, [4, 5], [(19, 0.0), (7, 1.0)]),
            (1, [5, 6], [(29, 2.0)]),
        ],
        [(2, [6, 4], []), (0, [4, 5], [(0, 1.0)]), (1, [5, 6], [(6, 2.0)])],
    ]
    with h5py.File(path, "w") as f:
        raw_event_ids(f, 2)
        raw_sparse(f, "sparse2d_data", events, 2, EXTENTS_U8, ID_EXTENTS_U8)
        raw_sparse(f, "sparse2d_fivetypes", labels, 2)


def test_official_layout_3d(tmp_path):
    path = tmp_path / "official3d.h5"
    build_official_3d(path)
    events = open_dataset(path)
    assert events.products == (
        "cluster3d_mcst",
        "particle_mcst",
        "sparse3d_data",
        "sparse3d_fivetypes",
    )
    event = events[0]
    np.testing.assert_array_equal(event.coords, [[1, 2, 3], [0, 0, 1], [3, 4, 5]])
    np.testing.assert_array_equal(event.energy, [1.5, 0.5, 2.0])
    np.testing.assert_array_equal(event.label, [0, 1, 4])
    assert event.meta.size_px == (4, 5, 6)
    np.testing.assert_allclose(event.meta.voxel_cm, (0.3, 0.3, 0.3))
    assert event.particles["process"].tolist() == [b"primary", b"protonInelastic"]
    assert event.particles["vtx"]["z"].tolist() == [1.25, 2.5]
    assert [c.tolist() for c in event.clusters] == [[0, 1], [2]]
    assert event.prim_ion is None and event.particle_index is None
    second = events[1]
    np.testing.assert_array_equal(second.coords, [[2, 0, 0]])
    np.testing.assert_array_equal(second.label, [2])
    assert len(second.particles) == 0 and [c.tolist() for c in second.clusters] == [[0]]


@pytest.mark.parametrize(
    ("projection", "coords", "energy", "label", "size"),
    [
        (0, [[1, 2], [3, 4]], [1.0, 2.0], [1, 0], (4, 5)),
        (1, [[4, 5]], [4.0], [2], (5, 6)),
        (2, [[5, 3], [0, 1]], [0.25, 0.5], [4, 3], (6, 4)),
    ],
)
def test_official_layout_2d(tmp_path, projection, coords, energy, label, size):
    path = tmp_path / "official2d.h5"
    build_official_2d(path)
    event = open_dataset(path, dim=2, projection=projection)[0]
    np.testing.assert_array_equal(event.coords, coords)
    np.testing.assert_array_equal(event.energy, energy)
    np.testing.assert_array_equal(event.label, label)
    assert event.meta.size_px == size and event.meta.projection_id == projection


def test_official_layout_2d_empty_projection(tmp_path):
    path = tmp_path / "official2d.h5"
    build_official_2d(path)
    events = open_dataset(path, dim=2, projection=2)
    assert events[1].coords.shape == (0, 2) and events[1].label.shape == (0,)
    np.testing.assert_array_equal(open_dataset(path, dim=2, projection=1)[1].coords, [[1, 0]])


# --- bad input -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_dataset(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("not an hdf5 file\n")
    with pytest.raises(DataError, match="not a readable HDF5 file.*delete it"):
        open_dataset(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "sim3d.h5"
    write_3d(path, n_events=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=str(path)):
        list(open_dataset(path))


def test_hdf5_without_larcv3_groups(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(DataError, match="not a larcv3 file"):
        open_dataset(path)


def test_missing_product(tmp_path):
    path = tmp_path / "official3d.h5"
    build_official_3d(path)
    with pytest.raises(DataError, match="no product 'sparse3d_semantics'.*label_product"):
        open_dataset(path, label_product="sparse3d_semantics")


def test_2d_request_on_3d_file(tmp_path):
    path = tmp_path / "official3d.h5"
    build_official_3d(path)
    with pytest.raises(DataError, match="open it with dim=3"):
        open_dataset(path, dim=2)


def test_3d_request_on_2d_file(tmp_path):
    path = tmp_path / "official2d.h5"
    build_official_2d(path)
    with pytest.raises(DataError, match="open it with dim=2"):
        open_dataset(path, dim=3)


@pytest.mark.parametrize(("dim", "projection"), [(2, 3), (2, -1), (3, 1)])
def test_projection_out_of_range(tmp_path, dim, projection):
    path = tmp_path / "official2d.h5"
    build_official_2d(path)
    with pytest.raises(DataError, match=f"projection={projection} is out of range"):
        open_dataset(path, dim=dim, projection=projection)


def test_dim_must_be_2_or_3(tmp_path):
    with pytest.raises(DataError, match="dim=4"):
        open_dataset(tmp_path / "x.h5", dim=4)


def test_out_of_range_voxel_id(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        raw_event_ids(f, 1)
        raw_sparse(f, "sparse3d_data", [[(0, [4, 5, 6], [(120, 1.0)])]], 3)
    with pytest.raises(DataError, match="voxel id 120 is out of range"):
        open_dataset(path)[0]


def test_negative_image_size(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        raw_event_ids(f, 1)
        raw_sparse(f, "sparse3d_data", [[(0, [4, 5, 6], [(1, 1.0)])]], 3)
        f["Data/sparse3d_data_group/image_meta"][0:1] = np.array(
            [(1, 0, [-1.2, 1.5, 1.8], [4, 5, 6], [0.0] * 3)], dtype=official_meta_dtype(3)
        )
    with pytest.raises(DataError, match="must be positive"):
        open_dataset(path)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (((119, 4.0), (45, 7.0), (1, 1.0)), "7.0, not an integer in 0..4"),
        (((119, 4.0), (45, 0.5), (1, 1.0)), "0.5, not an integer in 0..4"),
        (((119, 4.0), (45, 0.0)), "1 data voxel\\(s\\) have no value in sparse3d_fivetypes"),
    ],
)
def test_bad_labels(tmp_path, labels, message):
    path = tmp_path / "bad.h5"
    build_official_3d(path, labels=labels)
    with pytest.raises(DataError, match=f"event 0.*{message}"):
        open_dataset(path)[0]


def test_truth_false_reads_only_voxels_labels_and_primary_ionization(tiny_sample):
    with open_dataset(tiny_sample) as full, open_dataset(tiny_sample, truth=False) as lean:
        event, light = full[1], lean[1]
    assert np.array_equal(light.coords, event.coords)
    assert np.array_equal(light.label, event.label)
    assert np.array_equal(light.prim_ion, event.prim_ion)
    assert light.particles is None and light.clusters is None and light.particle_index is None
