"""larcv3 row types, image geometry, the writer and the low-level reader."""

import hashlib
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from analysis_lib.core.errors import ConfigError, DataError
from analysis_lib.core.paths import ROOT
from analysis_lib.data.larcv_read import Larcv3File
from analysis_lib.data.larcv_schema import (
    EXTENTS_DTYPE,
    ID_EXTENTS_DTYPE,
    PARTICLE_DTYPE,
    VOXEL_DTYPE,
    ImageMeta,
    image_meta_dtype,
)
from analysis_lib.data.larcv_write import Larcv3Writer

META3 = ImageMeta((8, 6, 5), (0.3, 0.3, 0.3), (-1.0, 0.0, 2.0))


def random_voxels(rng, meta, n):
    ids = rng.choice(meta.n_voxels, size=n, replace=False)
    coords = np.stack(np.unravel_index(ids, meta.size_px), axis=1)
    return coords.astype(np.int64), rng.random(n).astype(np.float32)


def write_file(path, n_events=5, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    with Larcv3Writer(path, **kwargs) as writer:
        for event in range(n_events):
            coords, values = random_voxels(rng, META3, 0 if event == 1 else 7)
            particles = np.zeros(2, dtype=PARTICLE_DTYPE)
            particles["pdg"] = [13, 2212]
            particles["process"] = [b"primary", b"muIoni"]
            clusters = [(coords[:3], values[:3]), (coords[3:], values[3:])]
            writer.write_event(
                1,
                2,
                event,
                sparse={"sparse3d_data": [(META3, coords, values)]},
                clusters={"cluster3d_mcst": [(META3, clusters)]},
                particles={"particle_mcst": particles},
            )


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_flat_ids_are_c_order():
    meta = ImageMeta((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    coords = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [3, 4, 5]])
    assert meta.flat_ids(coords).tolist() == [1, 6, 30, (3 * 5 + 4) * 6 + 5]
    assert meta.flat_ids(coords).dtype == np.uint64
    np.testing.assert_array_equal(meta.coords_from_ids(meta.flat_ids(coords)), coords)


@pytest.mark.parametrize(
    ("coords", "message"),
    [
        (np.array([[0, 0, 6]]), "out of range"),
        (np.array([[-1, 0, 0]]), "out of range"),
        (np.array([[0, 0]]), "shape"),
    ],
)
def test_flat_ids_reject_bad_coords(coords, message):
    meta = ImageMeta((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(DataError, match=message):
        meta.flat_ids(coords)


def test_coords_from_ids_rejects_out_of_range():
    with pytest.raises(DataError, match="out of range"):
        META3.coords_from_ids(np.array([META3.n_voxels], dtype=np.uint64))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size_px=(-4, 4, 4), voxel_cm=(1, 1, 1), origin_cm=(0, 0, 0)),
        dict(size_px=(4, 4, 4), voxel_cm=(1, 0, 1), origin_cm=(0, 0, 0)),
        dict(size_px=(4, 4, 4, 4), voxel_cm=(1,) * 4, origin_cm=(0,) * 4),
    ],
)
def test_image_meta_rejects_bad_geometry(kwargs):
    with pytest.raises(DataError, match="ImageMeta"):
        ImageMeta(**kwargs)


def test_row_types_match_larcv3_layout():
    assert PARTICLE_DTYPE.itemsize == 344
    assert PARTICLE_DTYPE.fields["shape"][1] == 8  # 2-byte gap after mct_index
    assert PARTICLE_DTYPE.fields["process"][0] == np.dtype("S64")
    assert PARTICLE_DTYPE.fields["ancestor_vtx"][1] == 312
    assert VOXEL_DTYPE.itemsize == 16
    meta = image_meta_dtype(3)
    assert meta.itemsize == 96 and meta.fields["projection_id"][1] == 8
    assert image_meta_dtype(2).fields["origin"][1] == 48
    assert EXTENTS_DTYPE.itemsize == ID_EXTENTS_DTYPE.itemsize == 16


def test_writer_output_has_larcv3_layout(tmp_path):
    path = tmp_path / "events.h5"
    write_file(path, n_events=3)
    with h5py.File(path) as f:
        assert set(f["Data"]) == {
            "sparse3d_data_group",
            "cluster3d_mcst_group",
            "particle_mcst_group",
        }
        assert set(f["Data/sparse3d_data_group"]) == {
            "extents",
            "voxel_extents",
            "image_meta",
            "voxels",
        }
        assert set(f["Data/cluster3d_mcst_group"]) == {
            "extents",
            "projection_extents",
            "image_meta",
            "cluster_extents",
            "voxels",
        }
        particles = f["Data/particle_mcst_group/particles"]
        assert particles.id.get_type().get_size() == 344
        assert particles.dtype.fields["shape"][1] == 8
        assert f["Events/event_id"][2].tolist() == (1, 2, 2)
        voxels = f["Data/sparse3d_data_group/voxels"][:7]["id"]
        assert np.all(np.diff(voxels.astype(np.int64)) > 0), "voxels sorted by flat id"
        assert f["Data/sparse3d_data_group/extents"][1]["N"] == 1


def test_round_trip_through_low_level_reader(tmp_path):
    path = tmp_path / "events.h5"
    write_file(path, n_events=5, flush_every=2)
    rng = np.random.default_rng(0)
    with Larcv3File(path) as reader:
        assert reader.n_events == 5
        assert reader.products == ("cluster3d_mcst", "particle_mcst", "sparse3d_data")
        for event in range(5):
            coords, values = random_voxels(rng, META3, 0 if event == 1 else 7)
            meta, ids, read_values = reader.sparse("sparse3d_data", event)
            order = np.argsort(META3.flat_ids(coords))
            np.testing.assert_array_equal(meta.coords_from_ids(ids), coords[order])
            np.testing.assert_array_equal(read_values, values[order])
            assert meta.size_px == META3.size_px and meta.origin_cm == META3.origin_cm
            np.testing.assert_allclose(meta.voxel_cm, META3.voxel_cm)
            _, clusters = reader.clusters("cluster3d_mcst", event)
            assert [len(ids) for ids, _ in clusters] == [
                min(3, len(coords)),
                max(len(coords) - 3, 0),
            ]
            particles = reader.particles("particle_mcst", event)
            assert particles["pdg"].tolist() == [13, 2212]
            assert particles["process"].tolist() == [b"primary", b"muIoni"]
            assert reader.event_id(event) == (1, 2, event)


def test_same_input_gives_identical_bytes(tmp_path):
    write_file(tmp_path / "a.h5")
    time.sleep(1.1)  # HDF5 timestamps have one-second resolution
    write_file(tmp_path / "b.h5")
    assert sha256(tmp_path / "a.h5") == sha256(tmp_path / "b.h5")


def test_different_product_set_is_rejected(tmp_path):
    coords, values = random_voxels(np.random.default_rng(1), META3, 4)
    with Larcv3Writer(tmp_path / "x.h5") as writer:
        writer.write_event(0, 0, 0, sparse={"sparse3d_data": [(META3, coords, values)]})
        with pytest.raises(DataError, match="same products"):
            writer.write_event(0, 0, 1, sparse={"sparse3d_fivetypes": [(META3, coords, values)]})
        assert writer.n_events == 1


@pytest.mark.parametrize(
    ("sparse", "message"),
    [
        ({"sparse3d_data": [(META3, np.array([[0, 0, 0], [0, 0, 0]]), np.ones(2))]}, "duplicate"),
        ({"sparse3d_data": [(META3, np.array([[8, 0, 0]]), np.ones(1))]}, "out of range"),
        ({"sparse3d_data": [(META3, np.array([[1, 0, 0]]), np.ones(2))]}, "values must have"),
        ({"sparse2d_data": [(META3, np.array([[1, 0, 0]]), np.ones(1))]}, "2D ImageMeta"),
        ({"dense_data": [(META3, np.array([[1, 0, 0]]), np.ones(1))]}, "product name"),
    ],
)
def test_writer_rejects_bad_events(tmp_path, sparse, message):
    with Larcv3Writer(tmp_path / "x.h5") as writer, pytest.raises(DataError, match=message):
        writer.write_event(0, 0, 0, sparse=sparse)


def test_writer_rejects_unknown_compression(tmp_path):
    with pytest.raises(ConfigError, match="compression"):
        Larcv3Writer(tmp_path / "x.h5", compression="zstd")


def test_writer_needs_existing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Larcv3Writer(tmp_path / "missing" / "x.h5")


def test_data_package_does_not_import_torch():
    root = ROOT
    code = "import sys, analysis_lib.data; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(root)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0
