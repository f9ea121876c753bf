"""Events of a larcv3 file as a lazy, picklable sequence: voxels, labels and truth extras."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis_lib.core.errors import DataError
from analysis_lib.core.labels import NUM_CLASSES
from analysis_lib.data.larcv_read import Larcv3File
from analysis_lib.data.larcv_schema import ImageMeta, LazyFile
from analysis_lib.data.projection import PROJECTIONS

PROJECTION_NAMES = tuple(name for _, name in PROJECTIONS)


@dataclass
class Event:
    """One event (one projection for 2D) with its voxels, labels and optional truth.

    Attributes
    ----------
    coords : (N, D) int64
        Voxel indices, in the order of the data product (sorted by flat id in our files).
    energy : (N,) float32
        Deposited energy per voxel (MeV).
    label : (N,) int64 or None
        Semantic class per voxel (0 HIP, 1 MIP, 2 shower, 3 delta, 4 Michel), aligned with
        ``coords``; None when the file has no label product.
    meta : ImageMeta
        Image geometry of this event/projection.
    index : int
        Event index in the file.
    prim_ion : (N,) int64 or None
        Primary-ionization flag (0/1) per voxel, where the file has it.
    particle_index : (N,) int64 or None
        Row of ``particles`` that deposited each voxel (-1: none), where the file has it.
    particles : structured array, (P,), or None
        Particle rows (``PARTICLE_DTYPE`` fields), where the file has a particle product.
    clusters : list of (K_c,) int64 or None
        One index array into ``coords`` per cluster of the cluster product (cluster c is
        particle row c in ``particle_mcst``), where the file has it.
    """

    coords: np.ndarray
    energy: np.ndarray
    label: np.ndarray | None
    meta: ImageMeta
    index: int
    prim_ion: np.ndarray | None = None
    particle_index: np.ndarray | None = None
    particles: np.ndarray | None = None
    clusters: list[np.ndarray] | None = None


@dataclass(frozen=True)
class _Products:
    """Product names one dataset reads (None: not read)."""

    data: str
    label: str | None
    prim_ion: str | None
    particle_index: str | None
    particles: str | None
    clusters: str | None


def _data_product(dim: int) -> str:
    return f"sparse{dim}d_data"


def _default_products(dim: int) -> dict[str, str]:
    kind = f"sparse{dim}d"
    return {
        "data": _data_product(dim),
        "label": f"{kind}_fivetypes",
        "prim_ion": f"{kind}_primion",
        "particle_index": f"{kind}_index",
        "particles": "particle_mcst",
        "clusters": f"cluster{dim}d_mcst",
    }


def _choose_products(
    path: Path, available: tuple[str, ...], dim: int, requested: dict[str, str | None]
) -> _Products:
    """Pick the products to read: explicit names must exist, defaults are used if present."""
    chosen = {}
    for role, default in _default_products(dim).items():
        name = requested.get(role)
        if name is not None and name not in available:
            raise DataError(
                f"{path}: no product {name!r} (the file has: {', '.join(available)}); "
                f"pass one of those as {role}_product"
            )
        chosen[role] = name if name is not None else (default if default in available else None)
    products = _Products(**chosen)
    if products.data is None:
        other = 3 if dim == 2 else 2
        hint = (
            f"; it holds {other}D data, open it with dim={other}"
            if _data_product(other) in available
            else "; pass data_product= with one of those"
        )
        raise DataError(
            f"{path}: no {dim}D data product {_data_product(dim)!r} "
            f"(the file has: {', '.join(available) or 'none'}){hint}"
        )
    return products


def _check_request(path: Path, dim: int, projection: int) -> None:
    if dim not in (2, 3):
        raise DataError(f"open_dataset({path}): dim={dim} must be 2 or 3")
    allowed = (0, 1, 2) if dim == 2 else (0,)
    if projection not in allowed:
        names = ", ".join(f"{p} {n}" for p, n in enumerate(PROJECTION_NAMES))
        raise DataError(
            f"open_dataset({path}): projection={projection} is out of range for dim={dim}; "
            + (f"use one of {names}" if dim == 2 else "3D images have projection 0 only")
        )


class _Aligner:
    """Maps flat ids of another product onto the positions of the data voxels."""

    def __init__(self, data_ids: np.ndarray, where: str) -> None:
        self.where = where
        self.order = np.argsort(data_ids, kind="stable")
        self.sorted_ids = data_ids[self.order]
        if len(data_ids) > 1 and np.any(self.sorted_ids[1:] == self.sorted_ids[:-1]):
            raise DataError(f"{where}: the data product repeats a voxel id; the file is corrupt")

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position in the data of each id, and whether the id is a data voxel at all."""
        if len(self.sorted_ids) == 0:
            return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(self.sorted_ids, ids), len(self.sorted_ids) - 1)
        return self.order[pos], self.sorted_ids[pos] == ids

    def positions(self, ids: np.ndarray, what: str) -> np.ndarray:
        """Index into the data voxels of each id; every id must be a data voxel."""
        pos, found = self._lookup(ids)
        if not np.all(found):
            raise DataError(
                f"{self.where}: {int(np.sum(~found))} voxel(s) of {what} are not data voxels; "
                "the products disagree, rebuild the file"
            )
        return pos

    def per_voxel(self, ids: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
        """Values of another product aligned with the data voxels.

        Voxels of ``what`` outside the data are ignored; every data voxel needs a value.
        """
        pos, found = self._lookup(ids)
        out = np.zeros(len(self.sorted_ids), dtype=np.float64)
        seen = np.zeros(len(self.sorted_ids), dtype=bool)
        out[pos[found]] = values[found]
        seen[pos[found]] = True
        if not np.all(seen):
            raise DataError(
                f"{self.where}: {int(np.sum(~seen))} data voxel(s) have no value in {what}; "
                "the products must cover the same voxels, rebuild or fix the file"
            )
        return out


def _as_int(values: np.ndarray, low: int, high: int, what: str, where: str) -> np.ndarray:
    """Integer-valued floats in ``low..high`` as int64, else DataError."""
    if values.size and (
        not np.all(values == np.round(values)) or values.min() < low or values.max() > high
    ):
        bad = values[(values != np.round(values)) | (values < low) | (values > high)][0]
        raise DataError(
            f"{where}: {what} holds {float(bad)!r}, not an integer in {low}..{high}; "
            "the file is corrupt or uses another label convention"
        )
    return values.astype(np.int64)


class LArTPCDataset(LazyFile, Sequence[Event]):
    """Events of one larcv3 file, read one at a time; see :func:`open_dataset`.

    The HDF5 file is opened on first access (so the object pickles to worker processes
    without an open handle) and closed by :meth:`close` or the context manager.

    Attributes
    ----------
    path : Path
    dim : int
    projection : int
    products : tuple of str
        Names of every product in the file.
    meta : ImageMeta or None
        Geometry of the first event (None for a file without events).
    """

    def __init__(self, path: Path, dim: int, projection: int, roles: _Products) -> None:
        self.path, self.dim, self.projection, self.roles = path, dim, projection, roles
        with Larcv3File(path) as reader:
            self.products = reader.products
            self._n_events = reader.n_events
            self.meta = reader.meta(roles.data, 0, projection) if reader.n_events else None
        self._handle: Larcv3File | None = None

    def _open(self) -> Larcv3File:
        if self._handle is None:
            self._handle = Larcv3File(self.path)
        return self._handle

    def _read(self, index: int) -> Event:
        reader, roles, where = self._open(), self.roles, f"{self.path}: event {index}"
        meta, ids, energy = reader.sparse(roles.data, index, self.projection)
        align = _Aligner(ids, where)
        event = Event(meta.coords_from_ids(ids), energy, None, meta, index)
        if roles.label:
            event.label = self._aligned(reader, roles.label, index, align, 0, NUM_CLASSES - 1)
        if roles.prim_ion:
            event.prim_ion = self._aligned(reader, roles.prim_ion, index, align, 0, 1)
        if roles.particles:
            event.particles = reader.particles(roles.particles, index)
        if roles.particle_index:
            n_rows = len(event.particles) if event.particles is not None else 2**31
            event.particle_index = self._aligned(
                reader, roles.particle_index, index, align, -1, n_rows - 1
            )
        if roles.clusters:
            _, clusters = reader.clusters(roles.clusters, index, self.projection)
            event.clusters = [align.positions(c_ids, roles.clusters) for c_ids, _ in clusters]
        return event

    def _aligned(
        self, reader: Larcv3File, product: str, index: int, align: _Aligner, low: int, high: int
    ) -> np.ndarray:
        _, ids, values = reader.sparse(product, index, self.projection)
        per_voxel = align.per_voxel(ids, values, product)
        return _as_int(per_voxel, low, high, product, align.where)

    def __repr__(self) -> str:
        return (
            f"LArTPCDataset({str(self.path)!r}, dim={self.dim}, projection={self.projection}, "
            f"events={len(self)})"
        )


def open_dataset(
    path: str | os.PathLike,
    dim: int = 3,
    projection: int = 0,
    *,
    data_product: str | None = None,
    label_product: str | None = None,
    prim_ion_product: str | None = None,
    particle_index_product: str | None = None,
    particle_product: str | None = None,
    cluster_product: str | None = None,
    truth: bool = True,
) -> LArTPCDataset:
    """Open a larcv3 HDF5 file as a sequence of :class:`Event`.

    Products default to ``sparse{dim}d_data`` (energy), ``sparse{dim}d_fivetypes`` (labels),
    ``sparse{dim}d_primion``, ``sparse{dim}d_index``, ``particle_mcst`` and
    ``cluster{dim}d_mcst``; each default is read only if the file has it, while a name
    given explicitly must exist. Labels and extras are matched to the data voxels by flat id,
    so products may store voxels in different orders.

    Parameters
    ----------
    path : str or os.PathLike
        larcv3 HDF5 file.
    dim : {2, 3}
        Read the 3D images or one 2D projection.
    projection : int
        2D projection: 0 xy, 1 yz, 2 zx. 3D: 0.
    data_product, label_product, prim_ion_product, particle_index_product,
    particle_product, cluster_product : str, optional
        Product names overriding the defaults.
    truth : bool
        False skips the particle table, the clusters and the per-voxel particle index
        (training needs only energy, labels and the primary-ionization flag).

    Returns
    -------
    LArTPCDataset

    Raises
    ------
    DataError
        Missing, non-HDF5 or truncated file, missing product, a dim the file does not hold,
        projection out of range; when reading an event: voxel ids outside the image, labels
        that are not integers 0..4 or do not cover every data voxel.

    Examples
    --------
    >>> events = open_dataset("sim_3d_64px_seed1.h5")  # doctest: +SKIP
    >>> ev = events[0]; ev.coords.shape, ev.label.shape  # doctest: +SKIP
    ((812, 3), (812,))
    """
    path = Path(path)
    _check_request(path, dim, projection)
    with Larcv3File(path) as reader:
        available = reader.products
    requested = {
        "data": data_product,
        "label": label_product,
        "prim_ion": prim_ion_product,
        "particle_index": particle_index_product,
        "particles": particle_product,
        "clusters": cluster_product,
    }
    products = _choose_products(path, available, dim, requested)
    if not truth:
        products = dataclasses.replace(products, particle_index=None, particles=None,
                                       clusters=None)
    return LArTPCDataset(path, dim, projection, products)
