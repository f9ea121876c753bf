"""The simulator measured against the validation checklist of physics-spec v1 (§7).

Each ``row_*`` function simulates what it needs (single particles from a fixed seed, in
:mod:`analysis_lib.sim.particle_checks`, or an event sample, here) and returns a
:class:`~analysis_lib.sim.checks.Check`: the target as the spec states it, and each measured
number with the band it must fall in; a row passes when every number does. :func:`validate`
runs all twelve.
"""

from collections.abc import Callable, Sequence

import numpy as np

from analysis_lib.core import paper
from analysis_lib.core.labels import CLASS_NAMES, VoxelClass
from analysis_lib.sim import constants as c
from analysis_lib.sim import ledger as lg
from analysis_lib.sim.checks import HOLDS, Check, Measured
from analysis_lib.sim.config import PhysicsConfig
from analysis_lib.sim.events import sample_primaries
from analysis_lib.sim.particle_checks import (
    row_bragg,
    row_delta_multiplicity,
    row_michel_primary_share,
    row_michel_spectrum,
    row_mip_slab,
    row_mip_width,
    row_photon_gap,
    row_shower_profile,
    row_track_length,
)
from analysis_lib.sim.simulate import simulate_primaries


def row_class_shares(labels: Sequence[np.ndarray]) -> Check:
    """Row 1: class shares of nonzero voxels over a sample of events."""
    counts = np.bincount(np.concatenate(labels), minlength=len(VoxelClass))
    share = counts / counts.sum() * 100
    bands = ((14, 20), (30, 38), (42, 52), (0.5, 2), (0.5, 2))
    published = "/".join(f"{100 * f:.0f}" for f in paper.CLASS_FRACTIONS)
    return Check(
        1,
        "class shares of nonzero voxels (HIP/MIP/shower/delta/Michel, %)",
        f"{published}, within 17±3/34±4/47±5/0.5–2/0.5–2",
        tuple(Measured(name, float(v), lo, hi, ".1f") for name, v, (lo, hi) in
              zip(CLASS_NAMES, share, bands, strict=True)),
    )


def row_occupancy(n_voxels: Sequence[int], size: int) -> Check:
    """Row 2: mean fraction of nonzero voxels."""
    occ = float(np.mean(n_voxels)) / size**3
    return Check(
        2,
        f"occupancy ({size} px cube)",
        f"{paper.OCCUPANCY:.2%} within ×2",
        (Measured("occupancy", occ, paper.OCCUPANCY / 2, paper.OCCUPANCY * 2, ".4%"),),
    )


def row_bookkeeping(tables: Sequence[np.ndarray], deposits: Sequence[np.ndarray]) -> Check:
    """Row 12: per-particle energy ledgers close; Michels have muon parents; the primary-
    ionization flag is set only on δ/Michel families."""
    closure = np.concatenate(
        [(t[:, lg.T_EDEP] + t[:, lg.T_ECHILD] + t[:, lg.T_EOUT]) / t[:, lg.T_EIN] for t in tables]
    )
    worst = float(np.max(np.abs(closure - 1)))
    parents_ok = all(
        np.isin(
            t[t[t[:, lg.T_SEM] == lg.MICHEL, lg.T_PARENT].astype(int), lg.T_KIND],
            (lg.MUON_PLUS, lg.MUON_MINUS),
        ).all()
        for t in tables
    )
    flag_ok = all(np.isin(d[d[:, lg.D_PRIM] == 1, lg.D_SEM], (lg.DELTA, lg.MICHEL)).all()
                  for d in deposits)
    return Check(
        12,
        "bookkeeping: energy closure, Michel parents, prim_ion flag",
        "closure ±1%; all Michel parents are muons; prim_ion only on delta/Michel",
        (Measured("worst closure", worst, 0.0, 0.01, ".2e"),
         Measured("muon parents", float(parents_ok), *HOLDS, ".0f"),
         Measured("flag on delta/Michel only", float(flag_ok), *HOLDS, ".0f")),
    )


def sample_events(n_events: int, size: int, seed: int, cfg: PhysicsConfig):
    """Events simulated in memory with their deposits (for rows that need the truth)."""
    for i in range(n_events):
        rng = np.random.default_rng([seed, i])
        yield simulate_primaries(
            rng, sample_primaries(rng, size * c.VOXEL_CM, cfg), size, cfg, keep_deposits=True
        )


def validate(
    n_events: int = 200,
    size: int = 512,
    seed: int = 2024,
    scale: float = 1.0,
    cfg: PhysicsConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Check]:
    """Run all twelve checks; ``scale`` multiplies the single-particle statistics."""
    cfg = cfg or PhysicsConfig()
    labels, n_voxels, tables, deposits = [], [], [], []
    for event in sample_events(n_events, size, seed, cfg):
        labels.append(event.voxels.label)
        n_voxels.append(len(event.voxels.label))
        tables.append(event.table)
        deposits.append(event.deposits)

    def k(n: int) -> int:
        return max(5, int(n * scale))

    steps = [
        lambda: row_class_shares(labels),
        lambda: row_occupancy(n_voxels, size),
        lambda: row_mip_slab(cfg, k(200)),
        lambda: row_bragg(cfg, k(40)),
        lambda: row_track_length(cfg, k(30)),
        lambda: row_michel_spectrum(cfg, k(2000)),
        lambda: row_michel_primary_share(cfg, k(300)),
        lambda: row_delta_multiplicity(cfg, labels, k(8000)),
        lambda: row_photon_gap(cfg, k(10000)),
        lambda: row_shower_profile(cfg, k(30)),
        lambda: row_mip_width(cfg, k(40)),
        lambda: row_bookkeeping(tables, deposits),
    ]
    checks = []
    for step in steps:
        checks.append(step())
        if progress:
            progress(f"row {checks[-1].number}: {'pass' if checks[-1].passed else 'FAIL'}")
    return checks
