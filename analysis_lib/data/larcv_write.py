"""larcv3 HDF5 writer: buffered, chunked and byte-for-byte reproducible.

The layout written is the one described in `analysis_lib.data.larcv_schema`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from analysis_lib.core.errors import ConfigError, DataError
from analysis_lib.data.larcv_schema import (
    CLUSTER_TYPES,
    DATA_GROUP,
    EVENT_ID_DTYPE,
    EVENT_ID_TABLE,
    EVENTS_GROUP,
    EXTENTS_DTYPE,
    ID_EXTENTS_DTYPE,
    PARTICLE_DTYPE,
    PARTICLE_TYPES,
    SPARSE_TYPES,
    VOXEL_DTYPE,
    ClosingContext,
    ImageMeta,
    check_product_name,
    group_name,
    image_meta_dtype,
    product_dim,
)


def _create_group(parent: h5py.Group, name: str) -> h5py.Group:
    """Create a group whose object header stores no timestamps (byte-reproducible files)."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


class _Table:
    """One growing, chunked 1D dataset plus the rows waiting to be appended to it."""

    def __init__(
        self, group: h5py.Group, name: str, dtype: np.dtype, chunk_rows: int, filters: dict
    ) -> None:
        self.dataset = group.create_dataset(
            name,
            shape=(0,),
            maxshape=(None,),
            dtype=dtype,
            chunks=(chunk_rows,),
            track_times=False,
            **filters,
        )
        self.holds_voxels = name == "voxels"
        self.n_rows = 0
        self.n_pending = 0
        self._pending: list[np.ndarray] = []

    def append(self, rows: np.ndarray) -> None:
        if len(rows):
            self._pending.append(rows)
            self.n_rows += len(rows)
            self.n_pending += len(rows)

    def flush(self) -> None:
        if not self._pending:
            return
        rows = np.concatenate(self._pending)
        start = self.dataset.shape[0]
        self.dataset.resize((start + len(rows),))
        self.dataset[start:] = rows
        self._pending, self.n_pending = [], 0


def _extent_rows(dtype: np.dtype, first: int, counts: Sequence[int], ids=None) -> np.ndarray:
    """Consecutive extents rows: row k covers ``counts[k]`` rows after the previous ones."""
    rows = np.zeros(len(counts), dtype=dtype)
    counts = np.asarray(counts, dtype=np.uint64)
    rows["first"] = first + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.uint64)
    rows["N"] = counts
    if ids is not None:
        rows["ID"] = ids
    return rows


def _voxel_rows(meta: ImageMeta, coords: np.ndarray, values: np.ndarray, where: str) -> np.ndarray:
    """Validate one voxel set and return its ``voxels`` rows sorted by flat id."""
    values = np.asarray(values)
    coords = np.asarray(coords)
    if values.ndim != 1 or len(values) != len(coords):
        raise DataError(
            f"{where}: values must have shape (N,) matching coords {coords.shape}, "
            f"got {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise DataError(f"{where}: values contain NaN or infinity")
    try:
        ids = meta.flat_ids(coords.reshape(0, meta.dim) if coords.size == 0 else coords)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise DataError(f"{where}: coords contain duplicate voxels; merge them before writing")
    rows = np.zeros(len(ids), dtype=VOXEL_DTYPE)
    rows["id"] = ids
    rows["value"] = values[order]
    return rows


class _ImageProduct:
    """``extents``, projection index (``ID`` = projection id) and ``image_meta`` tables.

    Subclasses name their ``write_event`` ``argument``, their ``index_table`` and the
    ``expected`` parts of one projection entry, and convert an entry in ``_convert``.
    """

    def __init__(self, name: str, group: h5py.Group, filters: dict) -> None:
        self.name, self.dim = name, product_dim(name)
        self.extents = _Table(group, "extents", EXTENTS_DTYPE, 512, filters)
        self.index = _Table(group, self.index_table, ID_EXTENTS_DTYPE, 512, filters)
        self.image_meta = _Table(group, "image_meta", image_meta_dtype(self.dim), 512, filters)

    def prepare(self, projections: Sequence) -> list[tuple[ImageMeta, object]]:
        """Validate every projection entry and convert it to rows; write nothing yet."""
        prepared, product = [], f"{self.argument}[{self.name!r}]"
        for k, item in enumerate(projections):
            where = f"{product}[{k}]"
            if len(item) != len(self.expected):
                raise DataError(f"{where}: expected ({', '.join(self.expected)})")
            meta = item[0]
            if not isinstance(meta, ImageMeta):
                raise DataError(f"{where}: expected an ImageMeta, got {type(meta).__name__}")
            if meta.dim != self.dim:
                raise DataError(
                    f"{where}: a {self.dim}D product needs a {self.dim}D ImageMeta, got {meta.dim}D"
                )
            prepared.append((meta, self._convert(meta, item, where)))
        ids = [m.projection_id for m, _ in prepared]
        if len(set(ids)) != len(ids):
            raise DataError(f"{product}: projection ids {ids} repeat; give each projection once")
        return prepared

    def _commit_projections(
        self, prepared: list[tuple[ImageMeta, object]], first: int, counts: Sequence[int]
    ) -> None:
        """Append the event's extents row, its index rows and its image_meta rows."""
        self.extents.append(_extent_rows(EXTENTS_DTYPE, self.index.n_rows, [len(prepared)]))
        ids = [m.projection_id for m, _ in prepared]
        self.index.append(_extent_rows(ID_EXTENTS_DTYPE, first, counts, ids))
        for meta, _ in prepared:
            self.image_meta.append(meta.to_row())


class _SparseProduct(_ImageProduct):
    """Tables of one ``sparse2d_*`` / ``sparse3d_*`` product."""

    argument, index_table, expected = "sparse", "voxel_extents", ("meta", "coords", "values")

    def __init__(self, name: str, group: h5py.Group, filters: dict) -> None:
        super().__init__(name, group, filters)
        self.voxels = _Table(group, "voxels", VOXEL_DTYPE, 8192, filters)
        self.tables = (self.extents, self.index, self.image_meta, self.voxels)

    @staticmethod
    def _convert(meta: ImageMeta, item: tuple, where: str) -> np.ndarray:
        return _voxel_rows(meta, item[1], item[2], where)

    def commit(self, prepared: list[tuple[ImageMeta, np.ndarray]]) -> None:
        self._commit_projections(prepared, self.voxels.n_rows, [len(rows) for _, rows in prepared])
        for _, rows in prepared:
            self.voxels.append(rows)


class _ClusterProduct(_ImageProduct):
    """Tables of one ``cluster2d_*`` / ``cluster3d_*`` product."""

    argument, index_table = "clusters", "projection_extents"
    expected = ("meta", "[(coords, values), ...]")

    def __init__(self, name: str, group: h5py.Group, filters: dict) -> None:
        super().__init__(name, group, filters)
        self.cluster_extents = _Table(group, "cluster_extents", ID_EXTENTS_DTYPE, 4096, filters)
        self.voxels = _Table(group, "voxels", VOXEL_DTYPE, 8192, filters)
        self.tables = (self.extents, self.index, self.image_meta, self.cluster_extents, self.voxels)

    @staticmethod
    def _convert(meta: ImageMeta, item: tuple, where: str) -> list[np.ndarray]:
        return [
            _voxel_rows(meta, coords, values, f"{where} cluster {c}")
            for c, (coords, values) in enumerate(item[1])
        ]

    def commit(self, prepared: list[tuple[ImageMeta, list[np.ndarray]]]) -> None:
        counts = [len(clusters) for _, clusters in prepared]
        self._commit_projections(prepared, self.cluster_extents.n_rows, counts)
        for _, clusters in prepared:
            sizes = [len(rows) for rows in clusters]
            self.cluster_extents.append(
                _extent_rows(ID_EXTENTS_DTYPE, self.voxels.n_rows, sizes, np.arange(len(sizes)))
            )
            for rows in clusters:
                self.voxels.append(rows)


class _ParticleProduct:
    """Tables of one ``particle_*`` product."""

    def __init__(self, name: str, group: h5py.Group, filters: dict) -> None:
        self.name = name
        self.extents = _Table(group, "extents", EXTENTS_DTYPE, 512, filters)
        self.particles = _Table(group, "particles", PARTICLE_DTYPE, 1024, filters)
        self.tables = (self.extents, self.particles)

    def prepare(self, particles: np.ndarray) -> np.ndarray:
        particles = np.asarray(particles)
        names = particles.dtype.names or ()
        missing = [n for n in PARTICLE_DTYPE.names if n not in names]
        if particles.ndim != 1 or missing:
            raise DataError(
                f"particles[{self.name!r}]: expected a 1D structured array of PARTICLE_DTYPE "
                f"rows; missing fields: {', '.join(missing) or 'none'}, shape {particles.shape}"
            )
        rows = np.zeros(len(particles), dtype=PARTICLE_DTYPE)
        for name in PARTICLE_DTYPE.names:
            rows[name] = particles[name]
        return rows

    def commit(self, rows: np.ndarray) -> None:
        self.extents.append(_extent_rows(EXTENTS_DTYPE, self.particles.n_rows, [len(rows)]))
        self.particles.append(rows)


_COMPRESSION_FILTERS = {
    None: {},
    "gzip": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "lzf": {"compression": "lzf", "shuffle": True},
}
_KINDS = {
    "sparse": (_SparseProduct, SPARSE_TYPES),
    "clusters": (_ClusterProduct, CLUSTER_TYPES),
    "particles": (_ParticleProduct, PARTICLE_TYPES),
}


class Larcv3Writer(ClosingContext):
    """Write events to a larcv3 HDF5 file, buffered and byte-for-byte reproducible.

    Rows are buffered in memory and appended to chunked, resizable datasets every
    ``flush_every`` events, whenever ``max_pending_voxels`` voxel rows are waiting, and at
    ``close``. No object stores a timestamp, so the same events give the same file bytes.
    The first event fixes the products of the file; every later event must carry exactly
    the same product names.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; overwritten if it exists.
    compression : {"gzip", "lzf", None}
        Dataset filter.
    flush_every : int
        Events buffered between two appends to the file.
    max_pending_voxels : int
        Upper bound on voxel rows held in memory before an early flush.

    Examples
    --------
    >>> meta = ImageMeta((64, 64, 64), (0.3, 0.3, 0.3), (0.0, 0.0, 0.0))
    >>> with Larcv3Writer("events.h5") as writer:  # doctest: +SKIP
    ...     writer.write_event(1, 0, 0, sparse={"sparse3d_data": [(meta, coords, energy)]})
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        compression: str | None = "gzip",
        flush_every: int = 256,
        max_pending_voxels: int = 2_000_000,
    ) -> None:
        if compression not in _COMPRESSION_FILTERS:
            raise ConfigError(
                f"Larcv3Writer: compression={compression!r} is not one of 'gzip', 'lzf', None"
            )
        if flush_every < 1 or max_pending_voxels < 1:
            raise ConfigError("Larcv3Writer: flush_every and max_pending_voxels must be >= 1")
        self.path = Path(path)
        self._filters = _COMPRESSION_FILTERS[compression]
        self._flush_every, self._max_pending = flush_every, max_pending_voxels
        self._file = self._create_file(self.path)
        events = _create_group(self._file, EVENTS_GROUP)
        self._events = _Table(events, EVENT_ID_TABLE, EVENT_ID_DTYPE, 1024, self._filters)
        self._data = _create_group(self._file, DATA_GROUP)
        self._products: dict[str, object] | None = None
        self._kinds: set[tuple[str, str]] = set()
        self.n_events = 0

    @staticmethod
    def _create_file(path: Path) -> h5py.File:
        if not path.parent.is_dir():
            raise DataError(f"Larcv3Writer: directory {path.parent} does not exist; create it")
        fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
        fcpl.set_obj_track_times(False)
        try:
            fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fcpl=fcpl)
        except OSError as err:
            raise DataError(
                f"Larcv3Writer: cannot create {path} ({err}); check permissions"
            ) from None
        return h5py.File(fid)

    def _register(self, given: dict[str, Mapping]) -> dict[str, object]:
        names = {(kind, name) for kind, mapping in given.items() for name in mapping}
        if self._products is None:
            products = {}
            for kind, name in sorted(names):
                cls, kinds = _KINDS[kind]
                check_product_name(name, kinds, kind)
                group = _create_group(self._data, group_name(name))
                products[name] = cls(name, group, self._filters)
            self._products = products
            self._kinds = names
        elif names != self._kinds:
            raise DataError(
                f"{self.path}: event {self.n_events} has products "
                f"{sorted(n for _, n in names)} but the file has {sorted(self._products)}; "
                "every event must carry the same products (write empty ones where needed)"
            )
        return self._products

    def write_event(
        self,
        run: int,
        subrun: int,
        event: int,
        *,
        sparse: Mapping[str, Sequence[tuple[ImageMeta, np.ndarray, np.ndarray]]] | None = None,
        clusters: Mapping[str, Sequence[tuple[ImageMeta, Sequence[tuple]]]] | None = None,
        particles: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Append one event.

        Parameters
        ----------
        run, subrun, event : int
            larcv3 event id.
        sparse : mapping of str to sequence of (ImageMeta, (N, D) int, (N,) float32)
            Per sparse product (``"sparse3d_data"``), one entry per projection.
        clusters : mapping of str to sequence of (ImageMeta, list of ((K, D) int, (K,) float))
            Per cluster product (``"cluster3d_mcst"``), per projection: the geometry and
            one (coords, values) pair per cluster.
        particles : mapping of str to structured array of PARTICLE_DTYPE, (P,)
            Per particle product (``"particle_mcst"``).

        Raises
        ------
        DataError
            On a closed writer, malformed input, or a product set different from the first
            event's. Nothing of a rejected event is written.
        """
        if self._file is None:
            raise DataError(f"{self.path}: the writer is closed; open a new Larcv3Writer")
        given = {"sparse": sparse or {}, "clusters": clusters or {}, "particles": particles or {}}
        products = self._register(given)
        prepared = {
            name: products[name].prepare(value)
            for mapping in given.values()
            for name, value in mapping.items()
        }
        for name, rows in prepared.items():
            products[name].commit(rows)
        self._events.append(np.array([(run, subrun, event)], dtype=EVENT_ID_DTYPE))
        self.n_events += 1
        if self.n_events % self._flush_every == 0 or self._pending_voxels() > self._max_pending:
            self.flush()

    def _all_tables(self) -> list[_Table]:
        products = self._products or {}
        return [self._events] + [t for p in products.values() for t in p.tables]

    def _pending_voxels(self) -> int:
        return sum(t.n_pending for t in self._all_tables() if t.holds_voxels)

    def flush(self) -> None:
        """Append all buffered rows to the file."""
        if self._file is not None:
            for table in self._all_tables():
                table.flush()

    def close(self) -> None:
        """Flush and close the file; calling it again does nothing."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
