"""The simulator's validation rows: numbers measured, bands applied, and the rows on a sample."""

import math

import numpy as np
import pytest

from analysis_lib.core import paper
from analysis_lib.core.labels import VoxelClass
from analysis_lib.sim import PhysicsConfig
from analysis_lib.sim import ledger as lg
from analysis_lib.sim.checks import Check, Measured
from analysis_lib.sim.particle_checks import row_mip_width, row_track_length
from analysis_lib.sim.validation import (
    row_bookkeeping,
    row_class_shares,
    row_occupancy,
    sample_events,
)


def test_a_check_passes_only_when_every_number_is_in_its_band():
    inside, edge, outside = (Measured("a", 1.0, 0.5, 1.5), Measured("b", 2.0, 2.0, 3.0),
                             Measured("c", 0.1, 0.2, math.inf))
    assert Check(1, "s", "t", (inside, edge)).passed
    failing = Check(2, "s", "t", (inside, outside))
    assert not failing.passed and failing["c"] == 0.1
    assert failing.value == "a 1; c 0.1"
    with pytest.raises(KeyError, match=r"row 2 measures \['a', 'c'\], not 'd'"):
        failing["d"]


def test_class_shares_are_the_voxel_percentages():
    counts = {VoxelClass.HIP: 170, VoxelClass.MIP: 340, VoxelClass.SHOWER: 470,
              VoxelClass.DELTA: 10, VoxelClass.MICHEL: 10}
    labels = np.repeat(list(counts), list(counts.values()))
    check = row_class_shares([labels[:400], labels[400:]])
    assert [m.value for m in check.measured] == pytest.approx([17.0, 34.0, 47.0, 1.0, 1.0])
    assert check.passed
    no_michel = row_class_shares([labels[labels != VoxelClass.MICHEL]])
    assert not no_michel.passed and no_michel["Michel e-"] == 0.0


def test_occupancy_is_the_mean_voxel_count_over_the_volume():
    size = 100
    at_paper = round(paper.OCCUPANCY * size**3)
    check = row_occupancy([at_paper - 10, at_paper + 10], size)
    assert check["occupancy"] == pytest.approx(at_paper / size**3)
    assert check.passed
    assert not row_occupancy([3 * at_paper], size).passed


@pytest.mark.parametrize("row", [row_track_length, row_mip_width])
def test_single_particle_rows_pass_on_the_default_physics(row):
    """Two of physics-spec §7's rows at reduced statistics: stopping ranges within 3 % of
    the CSDA table, and muon voxels per cm at both smearing widths."""
    check = row(PhysicsConfig(), n=10)
    assert check.passed, check.value


def test_bookkeeping_closes_on_a_sample_and_flags_a_broken_ledger():
    events = list(sample_events(4, 64, 1, PhysicsConfig()))
    tables, deposits = [e.table for e in events], [e.deposits for e in events]
    assert row_bookkeeping(tables, deposits).passed
    broken = [t.copy() for t in tables]
    broken[0][0, lg.T_EDEP] += 0.05 * broken[0][0, lg.T_EIN]  # 5 % more energy than it had
    check = row_bookkeeping(broken, deposits)
    assert not check.passed and check["worst closure"] == pytest.approx(0.05, rel=1e-6)
