"""Simulate events and write them in the larcv3 HDF5 schema of the public sample.

Each event draws from its own generator seeded by (seed, event index), so a file is the same
byte for byte whatever the number of worker processes.
"""

import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from analysis_lib.core.errors import ConfigError, StorageError
from analysis_lib.core.files import atomic_output, refuse_existing
from analysis_lib.data.larcv import PARTICLE_DTYPE, ImageMeta, Larcv3Writer
from analysis_lib.data.projection import PROJECTIONS, project
from analysis_lib.sim import constants as c
from analysis_lib.sim import ledger as lg
from analysis_lib.sim import transport as tr
from analysis_lib.sim.config import PhysicsConfig
from analysis_lib.sim.events import sample_primaries
from analysis_lib.sim.tables import TABLES
from analysis_lib.sim.voxelize import Voxels, voxelize

_SHAPE_OF_CLASS = np.array([1, 1, 0, 3, 2])  # larcv ShapeType: track, track, shower, delta, michel


@dataclass
class SimEvent:
    """One simulated event: its voxels and the particle table with energy ledgers."""

    voxels: Voxels
    table: np.ndarray  # (K, ledger.TABLE_WIDTH) float64
    deposits: np.ndarray | None  # (M, ledger.DEPOSIT_WIDTH), kept only on request
    size: int


def simulate_event(
    rng: np.random.Generator, size: int, cfg: PhysicsConfig, keep_deposits: bool = False
) -> SimEvent:
    """Transport the primaries of one event and voxelize the deposits into a ``size``³ image."""
    size_cm = size * c.VOXEL_CM
    primaries = sample_primaries(rng, size_cm, cfg)
    return simulate_primaries(rng, primaries, size, cfg, keep_deposits)


def simulate_primaries(
    rng: np.random.Generator,
    primaries: np.ndarray,
    size: int,
    cfg: PhysicsConfig,
    keep_deposits: bool = False,
) -> SimEvent:
    """Transport given primaries (rows as in :func:`sample_primaries`) and voxelize."""
    lo = np.zeros(3)
    hi = np.full(3, size * c.VOXEL_CM)
    deposits, table = tr.transport(primaries, TABLES, cfg.engine_settings(), lo, hi, rng)
    voxels = voxelize(
        deposits,
        table,
        size,
        c.VOXEL_CM,
        cfg.smear_sigma_mm,
        cfg.threshold_mev,
        cfg.delta_merge_voxels,
    )
    return SimEvent(voxels, table, deposits if keep_deposits else None, size)


def particle_rows(event: SimEvent) -> np.ndarray:
    """The particle table as larcv3 particle rows (positions in image cm, energies in MeV).

    ``energy_init`` is the total energy, ``energy_deposit`` the energy of the particle's cluster
    in the image (voxels whose largest contributor it is), ``dist_travel`` the path length (cm)
    followed inside the tracked volume (a photon's: to its first interaction).
    """
    t = event.table
    rows = np.zeros(len(t), dtype=PARTICLE_DTYPE)
    kind = t[:, lg.T_KIND].astype(np.int64)
    mass = lg.MASSES[kind]
    ke = t[:, lg.T_KE]
    p = np.sqrt(ke * (ke + 2.0 * mass))
    parent = t[:, lg.T_PARENT].astype(np.int64)
    root = t[:, lg.T_ROOT].astype(np.int64)
    deposit = np.bincount(event.voxels.owner, weights=event.voxels.energy, minlength=len(t))
    rows["id"] = np.arange(len(t))
    rows["trackid"] = np.arange(len(t)) + 1
    rows["pdg"] = lg.KIND_TO_PDG[kind]
    rows["shape"] = _SHAPE_OF_CLASS[t[:, lg.T_SEM].astype(np.int64)]
    rows["interaction_type"] = t[:, lg.T_INTERACTION].astype(np.int64)
    for axis, name in enumerate(("px", "py", "pz")):
        rows[name] = p * t[:, lg.T_DX + axis]
    for field, cols in (
        ("vtx", (lg.T_X0, lg.T_Y0, lg.T_Z0)),
        ("end_pt", (lg.T_X1, lg.T_Y1, lg.T_Z1)),
    ):
        for axis, col in zip("xyz", cols, strict=True):
            rows[field][axis] = t[:, col]
    rows["energy_init"] = ke + mass
    rows["energy_deposit"] = deposit
    rows["dist_travel"] = t[:, lg.T_LENGTH]
    rows["process"] = [lg.PROCESS_NAMES[k].encode() for k in t[:, lg.T_PROCESS].astype(int)]
    has_parent = parent >= 0
    rows["parent_trackid"] = np.where(has_parent, parent + 1, 0)
    rows["parent_pdg"] = np.where(has_parent, lg.KIND_TO_PDG[kind[np.maximum(parent, 0)]], 0)
    rows["ancestor_trackid"] = root + 1
    rows["ancestor_pdg"] = lg.KIND_TO_PDG[kind[root]]
    for axis, col in zip("xyz", (lg.T_X0, lg.T_Y0, lg.T_Z0), strict=True):
        rows["parent_vtx"][axis] = np.where(has_parent, t[np.maximum(parent, 0), col], 0.0)
        rows["ancestor_vtx"][axis] = t[root, col]
    return rows


def _products(event: SimEvent, dim: int) -> dict:
    """The sparse, cluster and particle products of one event for :class:`Larcv3Writer`."""
    v, size = event.voxels, event.size
    columns = {"energy": v.energy, "label": v.label, "prim_ion": v.prim_ion, "owner": v.owner}
    prefix = f"sparse{dim}d"
    if dim == 3:
        views = [(ImageMeta((size,) * 3, (c.VOXEL_CM,) * 3, (0.0,) * 3, 0), v.coords, columns)]
    else:
        views = []
        for pid, (axes, _) in enumerate(PROJECTIONS):
            coords2, cols2 = project(v.coords, columns, axes)
            views.append(
                (ImageMeta((size,) * 2, (c.VOXEL_CM,) * 2, (0.0,) * 2, pid), coords2, cols2)
            )
    sparse = {
        f"{prefix}_{name}": [(m, xy, cols[key].astype(np.float32)) for m, xy, cols in views]
        for name, key in (
            ("data", "energy"),
            ("fivetypes", "label"),
            ("primion", "prim_ion"),
            ("index", "owner"),
        )
    }
    products = {"sparse": sparse}
    if dim == 3:
        meta, coords, cols = views[0]
        n = len(event.table)
        order = np.argsort(cols["owner"], kind="stable")
        bounds = np.searchsorted(cols["owner"][order], np.arange(n + 1))
        clusters = [
            (coords[order[a:b]], cols["energy"][order[a:b]])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        products["clusters"] = {"cluster3d_mcst": [(meta, clusters)]}
        products["particles"] = {"particle_mcst": particle_rows(event)}
    return products


def _simulate_products(args: tuple) -> dict:
    seed, index, size, dim, cfg = args
    rng = np.random.default_rng([seed, index])
    return _products(simulate_event(rng, size, cfg), dim)


def _compile_engine(cfg: PhysicsConfig) -> None:
    """Compile (or load from cache) the numba kernels once, before workers fork."""
    simulate_event(np.random.default_rng(0), 8, cfg)


def _check_arguments(n_events: int, size: int, seed: int, dim: int, workers: int | None) -> None:
    if n_events < 1:
        raise ConfigError(f"n_events={n_events} must be >= 1")
    if size < 8:
        raise ConfigError(f"size={size} voxels is too small; use >= 8 (the study uses 192/512/768)")
    if seed < 0:
        raise ConfigError(f"seed={seed} must be >= 0")
    if dim not in (2, 3):
        raise ConfigError(f"dim={dim} must be 2 or 3")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers={workers} must be >= 1 (or None for all cores)")


#: Bytes a simulated 3D event takes per voxel of image edge, with a margin: the ci sets take
#: 230 (128 px) to 290 (512 px); a 2D file of three projections is smaller.
_BYTES_PER_EVENT_AND_PX = 400


def _check_space(path: Path, n_events: int, size: int) -> None:
    """Refuse to start when the disk cannot hold the file: HDF5 crashes on a full disk."""
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    need = _BYTES_PER_EVENT_AND_PX * size * n_events
    if free < need:
        raise StorageError(f"{folder} has {free / 2**30:.1f} GiB free; {n_events} events of "
                           f"{size} px need about {need / 2**30:.1f} GiB: free some space or "
                           f"write elsewhere")


def simulate(
    path: str | os.PathLike,
    n_events: int,
    size: int,
    seed: int,
    dim: int = 3,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    **physics_overrides: object,
) -> Path:
    """Simulate ``n_events`` events of ``size``³ voxels (3 mm) into a larcv3 HDF5 file.

    ``dim=3`` writes the 3D products (data, labels, primary-ionization flag, particle index,
    clusters and particles); ``dim=2`` writes the three 2D projections (xy, yz, zx) of each 3D
    event. ``physics_overrides`` change :class:`PhysicsConfig` settings by name. An existing
    ``path`` is replaced only with ``overwrite``; the file appears only once complete (see
    :func:`analysis_lib.core.files.atomic_output`).
    """
    _check_arguments(n_events, size, seed, dim, workers)
    cfg = PhysicsConfig().with_overrides(**physics_overrides)
    path = Path(path)
    refuse_existing(path, overwrite)
    _check_space(path, n_events, size)
    workers = workers or os.cpu_count() or 1
    jobs = [(seed, i, size, dim, cfg) for i in range(n_events)]
    with atomic_output(path, overwrite) as tmp, Larcv3Writer(tmp) as writer:
        bar = tqdm(total=n_events, desc=f"simulate {path.name}", unit="ev",
                   disable=not progress)
        if workers == 1:
            results = map(_simulate_products, jobs)
            pool = None
        else:
            _compile_engine(cfg)
            pool = mp.get_context("fork").Pool(workers)
            results = pool.imap(_simulate_products, jobs, chunksize=4)
        try:
            for i, products in enumerate(results):
                writer.write_event(0, 0, i, **products)
                bar.update()
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
    return path
