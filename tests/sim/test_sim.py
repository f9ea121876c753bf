"""Simulator: determinism, bookkeeping, voxelization and physics spot checks."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from analysis_lib.core.errors import ConfigError
from analysis_lib.data import open_dataset
from analysis_lib.sim import PhysicsConfig, simulate, simulate_event, simulate_primaries
from analysis_lib.sim import constants as c
from analysis_lib.sim import ledger as lg
from analysis_lib.sim import transport as tr
from analysis_lib.sim.tables import TABLES, Row, lookup
from analysis_lib.sim.voxelize import voxelize

CFG = PhysicsConfig()


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shoot(kind: int, ke: float, seed: int = 0, cfg: PhysicsConfig = CFG):
    primary = np.array([[kind, 0, 0, 0, 1, 0, 0, ke, 0]], float)
    lo, hi = np.full(3, -1e5), np.full(3, 1e5)
    return tr.transport(primary, TABLES, cfg.engine_settings(), lo, hi, np.random.default_rng(seed))


def test_same_seed_gives_identical_file_whatever_the_workers(tmp_path):
    one = simulate(tmp_path / "a.h5", 6, 64, seed=5, workers=1, progress=False)
    two = simulate(tmp_path / "b.h5", 6, 64, seed=5, workers=2, progress=False)
    assert _sha256(one) == _sha256(two)


def test_same_seed_gives_identical_file_on_a_baseline_x86_64_cpu(tmp_path):
    """The manifest's hashes hold on every machine: a process whose numpy may use none of its
    CPU-specific loops (AVX2, AVX-512) and whose numba compiles for a generic CPU writes the
    same bytes as this one (numpy's AVX-512 exp and log differ from the C library's)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__

    ours = simulate(tmp_path / "host.h5", 3, 64, seed=5, workers=1, progress=False)
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__),
           "NUMBA_CPU_NAME": "generic"}
    code = ("import sys; from analysis_lib.sim import simulate; "
            "simulate(sys.argv[1], 3, 64, seed=5, workers=1, progress=False)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "generic.h5")], env=env,
                   check=True)
    assert _sha256(ours) == _sha256(tmp_path / "generic.h5")


def test_different_seeds_give_different_files(tmp_path):
    one = simulate(tmp_path / "a.h5", 3, 64, seed=5, workers=1, progress=False)
    two = simulate(tmp_path / "b.h5", 3, 64, seed=6, workers=1, progress=False)
    assert _sha256(one) != _sha256(two)


def test_simulated_file_reads_back_in_3d_and_2d(tmp_path):
    path3 = simulate(tmp_path / "e3.h5", 4, 96, seed=1, workers=1, progress=False)
    path2 = simulate(tmp_path / "e2.h5", 4, 96, seed=1, dim=2, workers=1, progress=False)
    events = open_dataset(path3)
    assert len(events) == 4
    event = events[0]
    assert event.coords.shape[1] == 3 and event.coords.dtype == np.int64
    assert event.coords.min() >= 0 and event.coords.max() < 96
    assert set(np.unique(event.label)) <= set(range(5))
    assert len(event.particles) == len(event.clusters)
    # the three projections carry the 3D event's energy
    total = events[0].energy.sum()
    for projection in range(3):
        e2 = open_dataset(path2, dim=2, projection=projection)[0]
        assert e2.coords.shape[1] == 2
        assert e2.energy.sum() == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"n_events": -1}, "n_events"), ({"size": 0}, "size"), ({"dim": 4}, "dim"),
     ({"seed": -2}, "seed"), ({"workers": 0}, "workers"), ({"sigma_typo": 1.0}, "sigma_typo")],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs, word):
    args = {"n_events": 1, "size": 64, "seed": 1} | kwargs
    with pytest.raises(ConfigError, match=word):
        simulate(tmp_path / "x.h5", **args)


def test_invalid_physics_setting_is_rejected():
    with pytest.raises(ConfigError, match="muon_capture_probability"):
        PhysicsConfig(muon_capture_probability=1.5)


@pytest.mark.parametrize("kind", [lg.MUON_PLUS, lg.MUON_MINUS, lg.PROTON, lg.PION_PLUS,
                                  lg.PION_MINUS, lg.ELECTRON, lg.POSITRON, lg.PHOTON])
def test_energy_ledger_of_every_particle_closes(kind):
    _, table = _shoot(kind, 400.0, seed=kind)
    spent = table[:, lg.T_EDEP] + table[:, lg.T_ECHILD] + table[:, lg.T_EOUT]
    np.testing.assert_allclose(spent, table[:, lg.T_EIN], rtol=1e-9)


def test_michel_electrons_point_at_a_muon_parent():
    for seed in range(20):
        _, table = _shoot(lg.MUON_PLUS, 50.0, seed)
        michels = np.flatnonzero(table[:, lg.T_SEM] == 4)
        assert len(michels) == 1
        assert table[int(table[michels[0], lg.T_PARENT]), lg.T_KIND] == lg.MUON_PLUS


def test_primary_ionization_flag_only_on_delta_and_michel_families():
    deposits, _ = _shoot(lg.MUON_PLUS, 800.0, seed=3)
    flagged = deposits[deposits[:, lg.D_PRIM] == 1]
    assert len(flagged) > 0
    assert set(np.unique(flagged[:, lg.D_SEM])) <= {3.0, 4.0}


def test_stopping_muon_range_matches_the_csda_table():
    lengths = [_shoot(lg.MUON_MINUS, 300.0, seed)[1][0, lg.T_LENGTH] for seed in range(20)]
    assert np.mean(lengths) == pytest.approx(123.5, rel=0.03)


def test_photon_mean_free_path_matches_its_attenuation_length():
    ends = [np.linalg.norm(_shoot(lg.PHOTON, 10.0, s)[1][0, [lg.T_X1, lg.T_Y1, lg.T_Z1]])
            for s in range(3000)]
    assert np.mean(ends) == pytest.approx(float(lookup(Row.LAMBDA_PHOTON, 10.0)), rel=0.06)


def test_range_tables_reproduce_the_spec_points():
    for pdg, row in ((c.PDG_PROTON, Row.RANGE_PROTON), (c.PDG_MUON_MINUS, Row.RANGE_MUON)):
        np.testing.assert_allclose(lookup(row, c.RANGE_TABLE_KE_MEV[pdg]),
                                   c.RANGE_TABLE_CM[pdg], rtol=2e-3)


def _deposits(points, owner=0, sem=1, prim=0, energy=1.0):
    points = np.asarray(points, float)
    out = np.zeros((len(points), lg.DEPOSIT_WIDTH))
    out[:, :3] = points
    out[:, lg.D_E] = energy
    out[:, lg.D_OWNER], out[:, lg.D_SEM], out[:, lg.D_PRIM] = owner, sem, prim
    return out


def _table(rows):
    table = np.zeros((len(rows), lg.TABLE_WIDTH))
    for i, (kind, parent, process, sem) in enumerate(rows):
        table[i, [lg.T_KIND, lg.T_PARENT, lg.T_PROCESS, lg.T_SEM]] = kind, parent, process, sem
    return table


def test_smearing_conserves_energy_exactly():
    rng = np.random.default_rng(0)
    deposits = _deposits(rng.uniform(0.1, 9.5, (500, 3)), energy=0.01)
    table = _table([(lg.MUON_MINUS, -1, lg.P_PRIMARY, 1)])
    vox = voxelize(deposits, table, 32, 0.3, 1.27, 0.0, 10)
    total = vox.energy.sum() + vox.outside_image_mev
    assert total == pytest.approx(deposits[:, lg.D_E].sum(), rel=1e-6)


def test_without_smearing_a_point_lands_in_its_own_voxel():
    deposits = _deposits([[0.45, 0.75, 1.05]], sem=0, energy=2.0)
    table = _table([(lg.PROTON, -1, lg.P_PRIMARY, 0)])
    vox = voxelize(deposits, table, 8, 0.3, 0.0, 0.01, 10)
    assert vox.coords.tolist() == [[1, 2, 3]]
    assert vox.energy.tolist() == [2.0]
    assert vox.label.tolist() == [0]


def test_threshold_drops_small_voxels_and_logs_their_energy():
    deposits = np.vstack([_deposits([[0.15, 0.15, 0.15]], energy=0.005),
                          _deposits([[0.75, 0.15, 0.15]], energy=0.5)])
    table = _table([(lg.MUON_MINUS, -1, lg.P_PRIMARY, 1)])
    vox = voxelize(deposits, table, 8, 0.3, 0.0, 0.01, 10)
    assert vox.coords.tolist() == [[2, 0, 0]]
    assert vox.dropped_below_threshold_mev == pytest.approx(0.005)


def test_overlapping_voxel_takes_the_lowest_class_above_threshold():
    deposits = np.vstack([_deposits([[0.15, 0.15, 0.15]], owner=0, sem=2, energy=1.0),
                          _deposits([[0.16, 0.15, 0.15]], owner=1, sem=1, energy=0.02)])
    table = _table([(lg.ELECTRON, -1, lg.P_PRIMARY, 2), (lg.MUON_MINUS, -1, lg.P_PRIMARY, 1)])
    vox = voxelize(deposits, table, 8, 0.3, 0.0, 0.01, 10)
    assert vox.label.tolist() == [1]
    assert vox.owner.tolist() == [0]  # the cluster is the largest contributor's


def test_small_delta_merges_into_its_parent_and_large_one_stays():
    track = [[x * 0.3 + 0.15, 0.15, 0.15] for x in range(30)]
    short = [[3.15, 0.45 + 0.3 * k, 0.15] for k in range(3)]  # 3 voxels off the track
    long_ = [[6.15, 0.45 + 0.3 * k, 0.15] for k in range(15)]  # 15 voxels off the track
    deposits = np.vstack([_deposits(track, owner=0, sem=1), _deposits(short, owner=1, sem=3,
                                                                       prim=1),
                          _deposits(long_, owner=2, sem=3, prim=1)])
    table = _table([(lg.MUON_MINUS, -1, lg.P_PRIMARY, 1), (lg.ELECTRON, 0, lg.P_MUIONI, 3),
                    (lg.ELECTRON, 0, lg.P_MUIONI, 3)])
    vox = voxelize(deposits, table, 32, 0.3, 0.0, 0.01, 10)
    assert set(vox.label[vox.owner == 1]) == {1}
    assert set(vox.label[vox.owner == 2]) == {3}


def test_event_labels_are_the_five_classes_and_flags_are_binary():
    event = simulate_event(np.random.default_rng(3), 128, CFG)
    v = event.voxels
    assert len(v.label) > 0
    assert set(np.unique(v.label)) <= set(range(5))
    assert set(np.unique(v.prim_ion)) <= {0, 1}
    assert v.owner.max() < len(event.table)
    assert (v.energy >= CFG.threshold_mev).all()


def test_a_michel_from_a_stopping_muon_is_labelled_michel():
    primary = np.array([[lg.MUON_PLUS, 19.2, 19.2, 19.2, 1, 0, 0, 20.0, 0]], float)
    event = simulate_primaries(np.random.default_rng(1), primary, 128, CFG)
    assert (event.voxels.label == 4).sum() > 0
    assert (event.voxels.label == 1).sum() > 0


def test_dist_travel_is_each_particles_path_length(tmp_path):
    path = simulate(tmp_path / "e.h5", 4, 96, seed=2, workers=1, progress=False)
    for event in open_dataset(path):
        rows = event.particles
        chord = np.sqrt(sum((rows["end_pt"][a] - rows["vtx"][a]) ** 2 for a in "xyz"))
        travel = rows["dist_travel"]
        moved = chord > 1e-6
        assert moved.any() and (travel[moved] > 0).all()
        assert (travel >= chord - 1e-9).all()  # a path is never shorter than its chord
        photon = rows["pdg"] == 22
        np.testing.assert_allclose(travel[photon], chord[photon], atol=1e-9)
