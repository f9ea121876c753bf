"""PILArNet-M point-cloud files read as :class:`~analysis_lib.data.dataset.Event` sequences.

Layout (formats.md section 2): datasets ``point`` and ``cluster`` hold one variable-length
1D array per event; v2/v3 files also hold ``cluster_extra``.

- ``point`` reshapes to (N, 8): x, y, z, voxel value, energy deposit, time, electrons, dx.
  Coordinates are voxel indices of a 768-voxel cube (3 mm pitch); they are floored to int64
  and must lie in 0..767. The energy is column 3 (the voxel value), as formats.md specifies.
- ``cluster`` reshapes to (M, 5) in v1 (size, fragment id, group id, interaction id,
  semantic) or (M, 6) in v2/v3 (size, cluster id, group id, interaction id, semantic, pid).
  Points are stored cluster after cluster, so per-point values are
  ``np.repeat(cluster[:, k], cluster[:, 0])``. The revision is v2/v3 when the file has
  ``cluster_extra``, else v1 (or as given).

Class mapping to the study (0 HIP, 1 MIP, 2 shower, 3 delta, 4 Michel): track with pid 4
(proton) -> HIP, any other track -> MIP, shower -> shower, Michel -> Michel, delta -> delta,
low-energy deposit -> shower (these are small Compton-like electron deposits, closest to
the EM class). v1 files carry no pid, so every track is MIP there.

Points of different clusters may share a voxel; they are kept as separate rows (the
sparse network's input layer sums duplicate sites).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from analysis_lib.core.errors import DataError
from analysis_lib.core.labels import VoxelClass
from analysis_lib.data.dataset import Event
from analysis_lib.data.larcv_read import open_hdf5
from analysis_lib.data.larcv_schema import ImageMeta, LazyFile

CUBE_PX = 768
VOXEL_CM = 0.3
ENERGY_COLUMN = 3
POINT_COLUMNS = 8
CLUSTER_COLUMNS = {"v1": 5, "v2": 6, "v3": 6}

SEM_SHOWER, SEM_TRACK, SEM_MICHEL, SEM_DELTA, SEM_LOW_ENERGY = 0, 1, 2, 3, 4
PID_PROTON = 4
HIP, MIP, SHOWER, DELTA, MICHEL = VoxelClass
_SEMANTIC_TO_CLASS = np.array([SHOWER, MIP, MICHEL, DELTA, SHOWER], dtype=np.int64)


def study_classes(semantic: np.ndarray, pid: np.ndarray | None) -> np.ndarray:
    """Map PILArNet-M semantic ids (and pid) to the study's five classes.

    Parameters
    ----------
    semantic : (M,) int
        0 shower, 1 track, 2 Michel, 3 delta, 4 low-energy deposit.
    pid : (M,) int or None
        Particle id (4 proton); None for v1 files (tracks become MIP).

    Returns
    -------
    classes : (M,) int64
        0 HIP, 1 MIP, 2 shower, 3 delta, 4 Michel.

    Raises
    ------
    DataError
        If a semantic id is outside 0..4.
    """
    semantic = np.asarray(semantic, dtype=np.int64)
    bad = (semantic < 0) | (semantic >= len(_SEMANTIC_TO_CLASS))
    if np.any(bad):
        raise DataError(f"semantic id {int(semantic[bad][0])} is not one of 0..4")
    classes = _SEMANTIC_TO_CLASS[semantic]
    if pid is not None:
        classes[(semantic == SEM_TRACK) & (np.asarray(pid) == PID_PROTON)] = HIP
    return classes


class PilarnetMDataset(LazyFile, Sequence[Event]):
    """Events of one PILArNet-M file; the HDF5 file opens on first access (picklable).

    Parameters
    ----------
    path : Path
    revision : {"v1", "v2", "v3"}
    n_events : int
    """

    def __init__(self, path: Path, revision: str, n_events: int) -> None:
        self.path, self.revision, self._n_events = path, revision, n_events
        self.meta = ImageMeta((CUBE_PX,) * 3, (VOXEL_CM,) * 3, (0.0,) * 3)
        self._handle: h5py.File | None = None

    def _row(self, name: str, index: int, columns: int) -> np.ndarray:
        if self._handle is None:
            self._handle = open_hdf5(self.path)
        try:
            flat = np.asarray(self._handle[name][index])
        except OSError as err:
            raise DataError(f"{self.path}: cannot read {name}[{index}] ({err})") from None
        if flat.ndim != 1 or flat.size % columns:
            raise DataError(
                f"{self.path}: {name}[{index}] has {flat.size} values, not a multiple of "
                f"{columns}; check the revision ({self.revision})"
            )
        return flat.reshape(-1, columns)

    def _read(self, index: int) -> Event:
        where = f"{self.path}: event {index}"
        points = self._row("point", index, POINT_COLUMNS)
        clusters = self._row("cluster", index, CLUSTER_COLUMNS[self.revision]).astype(np.int64)
        sizes = clusters[:, 0]
        if np.any(sizes < 0):
            raise DataError(
                f"{where}: negative cluster size {int(sizes.min())}; the file is corrupt or the "
                f"revision is wrong (read as {self.revision})"
            )
        if sizes.sum() != len(points):
            raise DataError(
                f"{where}: cluster sizes sum to {int(sizes.sum())} but there are "
                f"{len(points)} points; the file is corrupt or the revision is wrong"
            )
        coords = np.floor(points[:, :3]).astype(np.int64)
        if coords.size and (coords.min() < 0 or coords.max() >= CUBE_PX):
            raise DataError(
                f"{where}: point coordinates span {coords.min()}..{coords.max()}, outside the "
                f"0..{CUBE_PX - 1} voxel cube"
            )
        pid = clusters[:, 5] if self.revision != "v1" else None
        try:
            classes = study_classes(clusters[:, 4], pid)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return Event(
            coords=coords,
            energy=points[:, ENERGY_COLUMN].astype(np.float32),
            label=np.repeat(classes, sizes),
            meta=self.meta,
            index=index,
            clusters=[np.arange(bounds[c], bounds[c + 1]) for c in range(len(sizes))],
        )


def open_pilarnet_m(path: str | os.PathLike, *, revision: str | None = None) -> PilarnetMDataset:
    """Open a PILArNet-M HDF5 file as a sequence of 3D :class:`Event`.

    Parameters
    ----------
    path : str or os.PathLike
    revision : {"v1", "v2", "v3"}, optional
        Cluster layout; detected from the presence of ``cluster_extra`` when omitted.

    Returns
    -------
    PilarnetMDataset
        Events with ``coords`` (N, 3) int64, ``energy`` (N,) float32 (column 3),
        ``label`` (N,) int64 in the study's classes and ``clusters`` (one index range per
        cluster row).

    Raises
    ------
    DataError
        Missing or non-HDF5 file, missing ``point``/``cluster`` datasets or different event
        counts, unknown revision.
    """
    path = Path(path)
    if revision is not None and revision not in CLUSTER_COLUMNS:
        raise DataError(f"open_pilarnet_m({path}): revision={revision!r} is not v1, v2 or v3")
    with open_hdf5(path) as file:
        if "point" not in file or "cluster" not in file:
            raise DataError(
                f"{path}: not a PILArNet-M file (needs 'point' and 'cluster' datasets, found "
                f"{', '.join(file) or 'nothing'})"
            )
        n_points, n_clusters = len(file["point"]), len(file["cluster"])
        detected = "v2" if "cluster_extra" in file else "v1"
    if n_points != n_clusters:
        raise DataError(
            f"{path}: 'point' has {n_points} events but 'cluster' has {n_clusters}; "
            "the file is truncated"
        )
    return PilarnetMDataset(path, revision or detected, n_points)
