"""larcv3 HDF5 files: compound row types, image geometry, a writer and a low-level reader.

The on-disk layout follows larcv3's serialization (DeepLearnPhysics/larcv3,
``src/larcv3/core/dataformat``):

- ``/Events/event_id``: ``EventID`` rows ``run``, ``subrun``, ``event`` (int64, 24 bytes).
- ``/Data/<type>_<producer>_group``: one group per product (``IOManager::register_producer``).
- sparse tensors (``EventSparseTensor``): ``extents`` -> ``voxel_extents`` (one row per
  projection, ``ID`` = projection id) -> ``voxels``; ``image_meta`` is row-aligned with
  ``voxel_extents``.
- sparse clusters (``EventSparseCluster``): ``extents`` -> ``projection_extents`` ->
  ``cluster_extents`` (``ID`` = cluster index) -> ``voxels``; ``image_meta`` row-aligned with
  ``projection_extents``.
- particles (``EventParticle``): ``extents`` -> ``particles``.

Row types mirror the C structs that larcv3 hands to ``H5Tcreate(H5T_COMPOUND, sizeof(T))``,
so they carry the same alignment gaps: ``Voxel`` is ``id`` uint64 + ``value`` float32 in
16 bytes; ``ImageMeta<D>`` is ``valid`` (hbool, 1 byte) at 0, ``projection_id`` (size_t) at 8,
then ``image_sizes[D]``, ``number_of_voxels[D]``, ``origin[D]``, followed by the unserialized
``DistanceUnit_t`` and tail padding; ``Particle`` has a 2-byte gap after ``mct_index``, four
``Vertex`` members (``x, y, z, t`` float64) and a 64-byte NUL-padded ``process`` string.
Index rows follow formats.md (``first`` uint64, ``N`` and ``ID`` uint32, padded to 16 bytes as
the C struct would be); older larcv3 releases stored ``first`` as uint32, which the reader
accepts because every field is read by name, never by position or offset.

Flat voxel ids are C-order, last axis fastest: ``id = (ix * Ny + iy) * Nz + iz``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from analysis_lib.errors import ConfigError, DataError

EXTENTS_DTYPE = np.dtype(
    {"names": ["first", "N"], "formats": ["<u8", "<u4"], "offsets": [0, 8], "itemsize": 16}
)
ID_EXTENTS_DTYPE = np.dtype(
    {
        "names": ["first", "N", "ID"],
        "formats": ["<u8", "<u4", "<u4"],
        "offsets": [0, 8, 12],
        "itemsize": 16,
    }
)
VOXEL_DTYPE = np.dtype(
    {"names": ["id", "value"], "formats": ["<u8", "<f4"], "offsets": [0, 8], "itemsize": 16}
)
EVENT_ID_DTYPE = np.dtype(
    {
        "names": ["run", "subrun", "event"],
        "formats": ["<i8", "<i8", "<i8"],
        "offsets": [0, 8, 16],
        "itemsize": 24,
    }
)
VERTEX_DTYPE = np.dtype({"names": ["x", "y", "z", "t"], "formats": ["<f8"] * 4})
PROCESS_STRLEN = 64

_PARTICLE_LAYOUT = (
    ("id", "<u2", 0),
    ("mcst_index", "<u2", 2),
    ("mct_index", "<u2", 4),
    ("shape", "<i4", 8),
    ("current_type", "<i2", 12),
    ("interaction_type", "<i2", 14),
    ("trackid", "<u4", 16),
    ("pdg", "<i4", 20),
    ("px", "<f8", 24),
    ("py", "<f8", 32),
    ("pz", "<f8", 40),
    ("vtx", VERTEX_DTYPE, 48),
    ("end_pt", VERTEX_DTYPE, 80),
    ("first_step", VERTEX_DTYPE, 112),
    ("last_step", VERTEX_DTYPE, 144),
    ("dist_travel", "<f8", 176),
    ("energy_init", "<f8", 184),
    ("energy_deposit", "<f8", 192),
    ("process", f"S{PROCESS_STRLEN}", 200),
    ("parent_trackid", "<u4", 264),
    ("parent_pdg", "<i4", 268),
    ("parent_vtx", VERTEX_DTYPE, 272),
    ("ancestor_trackid", "<u4", 304),
    ("ancestor_pdg", "<i4", 308),
    ("ancestor_vtx", VERTEX_DTYPE, 312),
)
PARTICLE_DTYPE = np.dtype(
    {
        "names": [name for name, _, _ in _PARTICLE_LAYOUT],
        "formats": [fmt for _, fmt, _ in _PARTICLE_LAYOUT],
        "offsets": [offset for _, _, offset in _PARTICLE_LAYOUT],
        "itemsize": 344,
    }
)


def image_meta_dtype(dim: int) -> np.dtype:
    """Return larcv3's ``ImageMeta<dim>`` row type (with its C padding).

    Parameters
    ----------
    dim : int
        Number of image axes (2 or 3).
    """
    return np.dtype(
        {
            "names": ["valid", "projection_id", "image_sizes", "number_of_voxels", "origin"],
            "formats": ["u1", "<u8", ("<f8", (dim,)), ("<u8", (dim,)), ("<f8", (dim,))],
            "offsets": [0, 8, 16, 16 + 8 * dim, 16 + 16 * dim],
            "itemsize": 16 + 24 * dim + 8,
        }
    )


@dataclass(frozen=True)
class ImageMeta:
    """Geometry of one image (projection): voxel counts, pitch and lower corner.

    Attributes
    ----------
    size_px : tuple of int, (D,)
        Voxels per axis; D is 2 or 3.
    voxel_cm : tuple of float, (D,)
        Voxel pitch per axis in cm; larcv3's ``image_sizes`` is ``size_px * voxel_cm``.
    origin_cm : tuple of float, (D,)
        Position of the lower corner in cm.
    projection_id : int
        larcv3 projection id (2D: 0 xy, 1 yz, 2 zx; 3D: 0).

    Raises
    ------
    DataError
        If the tuples differ in length, D is not 2 or 3, or a size or pitch is not positive.
    """

    size_px: tuple[int, ...]
    voxel_cm: tuple[float, ...]
    origin_cm: tuple[float, ...]
    projection_id: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_px", tuple(int(s) for s in self.size_px))
        object.__setattr__(self, "voxel_cm", tuple(float(v) for v in self.voxel_cm))
        object.__setattr__(self, "origin_cm", tuple(float(o) for o in self.origin_cm))
        object.__setattr__(self, "projection_id", int(self.projection_id))
        dim = len(self.size_px)
        if dim not in (2, 3) or len(self.voxel_cm) != dim or len(self.origin_cm) != dim:
            raise DataError(
                f"ImageMeta: size_px={self.size_px}, voxel_cm={self.voxel_cm} and "
                f"origin_cm={self.origin_cm} must all have 2 or 3 entries, one per axis"
            )
        if min(self.size_px) <= 0 or not all(np.isfinite(v) and v > 0 for v in self.voxel_cm):
            raise DataError(
                f"ImageMeta: size_px={self.size_px} and voxel_cm={self.voxel_cm} must be "
                "positive on every axis; check the image geometry"
            )
        if self.projection_id < 0:
            raise DataError(f"ImageMeta: projection_id={self.projection_id} must be >= 0")

    @property
    def dim(self) -> int:
        """Number of axes D."""
        return len(self.size_px)

    @property
    def image_sizes_cm(self) -> tuple[float, ...]:
        """Full image extent per axis in cm, shape (D,)."""
        return tuple(s * v for s, v in zip(self.size_px, self.voxel_cm, strict=True))

    @property
    def n_voxels(self) -> int:
        """Total number of voxels of the dense image."""
        return int(np.prod(self.size_px, dtype=np.int64))

    def flat_ids(self, coords: np.ndarray) -> np.ndarray:
        """Convert voxel indices to larcv3 flat ids (C order, last axis fastest).

        Parameters
        ----------
        coords : (N, D) int
            Voxel indices, each in ``0 <= coords[:, d] < size_px[d]``.

        Returns
        -------
        ids : (N,) uint64

        Raises
        ------
        DataError
            If ``coords`` has the wrong shape, is not integer, or lies outside the image.
        """
        coords = np.asarray(coords)
        if coords.ndim != 2 or coords.shape[1] != self.dim:
            raise DataError(f"coords must have shape (N, {self.dim}), got {coords.shape}")
        if coords.size and not np.issubdtype(coords.dtype, np.integer):
            raise DataError(f"coords must be integer voxel indices, got dtype {coords.dtype}")
        coords = coords.astype(np.int64, copy=False)
        if coords.size and (coords.min() < 0 or np.any(coords.max(axis=0) >= self.size_px)):
            raise DataError(
                f"coords out of range for an image of {self.size_px} voxels "
                f"(min {coords.min(axis=0).tolist()}, max {coords.max(axis=0).tolist()})"
            )
        return np.ravel_multi_index(tuple(coords.T), self.size_px).astype(np.uint64)

    def coords_from_ids(self, ids: np.ndarray) -> np.ndarray:
        """Convert larcv3 flat ids back to voxel indices.

        Parameters
        ----------
        ids : (N,) integer
            Flat ids, each below ``prod(size_px)``.

        Returns
        -------
        coords : (N, D) int64

        Raises
        ------
        DataError
            If an id is negative or not below the number of voxels of the image.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise DataError(f"ids must be one-dimensional, got shape {ids.shape}")
        if ids.size == 0:
            return np.zeros((0, self.dim), dtype=np.int64)
        if not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"voxel ids must be integers, got dtype {ids.dtype}")
        if (ids.dtype.kind == "i" and ids.min() < 0) or int(ids.max()) >= self.n_voxels:
            raise DataError(
                f"voxel id {int(ids.max()) if ids.min() >= 0 else int(ids.min())} is out of "
                f"range for an image of {self.size_px} voxels (ids run 0..{self.n_voxels - 1})"
            )
        unraveled = np.unravel_index(ids.astype(np.int64), self.size_px)
        return np.stack(unraveled, axis=1).astype(np.int64)

    def to_row(self) -> np.ndarray:
        """Return this geometry as one larcv3 ``image_meta`` row, shape (1,)."""
        row = np.zeros(1, dtype=image_meta_dtype(self.dim))
        row["valid"] = 1
        row["projection_id"] = self.projection_id
        row["image_sizes"] = self.image_sizes_cm
        row["number_of_voxels"] = self.size_px
        row["origin"] = self.origin_cm
        return row

    @classmethod
    def from_row(cls, row: np.void) -> ImageMeta:
        """Build the geometry from one ``image_meta`` row read from a file (fields by name)."""
        sizes = np.asarray(row["number_of_voxels"], dtype=np.int64)
        extent = np.asarray(row["image_sizes"], dtype=np.float64)
        if sizes.size and np.any(sizes <= 0):
            raise DataError(f"image_meta has non-positive number_of_voxels {sizes.tolist()}")
        return cls(
            size_px=tuple(sizes.tolist()),
            voxel_cm=tuple((extent / sizes).tolist()),
            origin_cm=tuple(np.asarray(row["origin"], dtype=np.float64).tolist()),
            projection_id=int(row["projection_id"]),
        )


def product_dim(name: str) -> int | None:
    """Image dimension implied by a product name (``sparse3d_data`` -> 3), None for particles."""
    kind = name.split("_", 1)[0]
    return {"sparse2d": 2, "sparse3d": 3, "cluster2d": 2, "cluster3d": 3}.get(kind)


def _check_product_name(name: str, kinds: tuple[str, ...], argument: str) -> None:
    kind, _, producer = name.partition("_")
    if kind not in kinds or not producer:
        raise DataError(
            f"{argument}: product name {name!r} must look like '<type>_<producer>' with type "
            f"one of {', '.join(kinds)}"
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


def _check_meta(meta: object, dim: int | None, where: str) -> ImageMeta:
    if not isinstance(meta, ImageMeta):
        raise DataError(f"{where}: expected an ImageMeta, got {type(meta).__name__}")
    if dim is not None and meta.dim != dim:
        raise DataError(f"{where}: a {dim}D product needs a {dim}D ImageMeta, got {meta.dim}D")
    return meta


def _check_projection_ids(metas: Sequence[ImageMeta], where: str) -> None:
    ids = [m.projection_id for m in metas]
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: projection ids {ids} repeat; give each projection once")


class _SparseProduct:
    """Tables of one ``sparse2d_*`` / ``sparse3d_*`` product."""

    def __init__(self, name: str, group: h5py.Group, filters: dict) -> None:
        self.name, self.dim = name, product_dim(name)
        self.extents = _Table(group, "extents", EXTENTS_DTYPE, 512, filters)
        self.voxel_extents = _Table(group, "voxel_extents", ID_EXTENTS_DTYPE, 512, filters)
        self.image_meta = _Table(group, "image_meta", image_meta_dtype(self.dim), 512, filters)
        self.voxels = _Table(group, "voxels", VOXEL_DTYPE, 8192, filters)
        self.tables = (self.extents, self.voxel_extents, self.image_meta, self.voxels)

    def prepare(self, projections: Sequence) -> list[tuple[ImageMeta, np.ndarray]]:
        prepared = []
        for k, item in enumerate(projections):
            where = f"sparse[{self.name!r}][{k}]"
            if len(item) != 3:
                raise DataError(f"{where}: expected (meta, coords, values)")
            meta = _check_meta(item[0], self.dim, where)
            prepared.append((meta, _voxel_rows(meta, item[1], item[2], where)))
        _check_projection_ids([m for m, _ in prepared], f"sparse[{self.name!r}]")
        return prepared

    def commit(self, prepared: list[tuple[ImageMeta, np.ndarray]]) -> None:
        self.extents.append(_extent_rows(EXTENTS_DTYPE, self.voxel_extents.n_rows, [len(prepared)]))
        self.voxel_extents.append(
            _extent_rows(
                ID_EXTENTS_DTYPE,
                self.voxels.n_rows,
                [len(rows) for _, rows in prepared],
                [m.projection_id for m, _ in prepared],
            )
        )
        for meta, rows in prepared:
            self.image_meta.append(meta.to_row())
            self.voxels.append(rows)


class _ClusterProduct:
    """Tables of one ``cluster2d_*`` / ``cluster3d_*`` product."""

    def __init__(self, name: str, group: h5py.Group, filters: dict) -> None:
        self.name, self.dim = name, product_dim(name)
        self.extents = _Table(group, "extents", EXTENTS_DTYPE, 512, filters)
        self.projection_extents = _Table(
            group, "projection_extents", ID_EXTENTS_DTYPE, 512, filters
        )
        self.image_meta = _Table(group, "image_meta", image_meta_dtype(self.dim), 512, filters)
        self.cluster_extents = _Table(group, "cluster_extents", ID_EXTENTS_DTYPE, 4096, filters)
        self.voxels = _Table(group, "voxels", VOXEL_DTYPE, 8192, filters)
        self.tables = (
            self.extents,
            self.projection_extents,
            self.image_meta,
            self.cluster_extents,
            self.voxels,
        )

    def prepare(self, projections: Sequence) -> list[tuple[ImageMeta, list[np.ndarray]]]:
        prepared = []
        for k, item in enumerate(projections):
            where = f"clusters[{self.name!r}][{k}]"
            if len(item) != 2:
                raise DataError(f"{where}: expected (meta, [(coords, values), ...])")
            meta = _check_meta(item[0], self.dim, where)
            rows = [
                _voxel_rows(meta, coords, values, f"{where} cluster {c}")
                for c, (coords, values) in enumerate(item[1])
            ]
            prepared.append((meta, rows))
        _check_projection_ids([m for m, _ in prepared], f"clusters[{self.name!r}]")
        return prepared

    def commit(self, prepared: list[tuple[ImageMeta, list[np.ndarray]]]) -> None:
        self.extents.append(
            _extent_rows(EXTENTS_DTYPE, self.projection_extents.n_rows, [len(prepared)])
        )
        self.projection_extents.append(
            _extent_rows(
                ID_EXTENTS_DTYPE,
                self.cluster_extents.n_rows,
                [len(clusters) for _, clusters in prepared],
                [m.projection_id for m, _ in prepared],
            )
        )
        for meta, clusters in prepared:
            self.image_meta.append(meta.to_row())
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
    "sparse": (_SparseProduct, ("sparse2d", "sparse3d")),
    "clusters": (_ClusterProduct, ("cluster2d", "cluster3d")),
    "particles": (_ParticleProduct, ("particle",)),
}


class Larcv3Writer:
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
        self._events = _Table(
            _create_group(self._file, "Events"), "event_id", EVENT_ID_DTYPE, 1024, self._filters
        )
        self._data = _create_group(self._file, "Data")
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

    def __enter__(self) -> Larcv3Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _register(self, given: dict[str, Mapping]) -> dict[str, object]:
        names = {(kind, name) for kind, mapping in given.items() for name in mapping}
        if self._products is None:
            products = {}
            for kind, name in sorted(names):
                cls, kinds = _KINDS[kind]
                _check_product_name(name, kinds, kind)
                group = _create_group(self._data, f"{name}_group")
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


_TABLE_FIELDS = {
    "extents": ("first", "N"),
    "voxel_extents": ("first", "N", "ID"),
    "projection_extents": ("first", "N", "ID"),
    "cluster_extents": ("first", "N"),
    "image_meta": ("valid", "projection_id", "image_sizes", "number_of_voxels", "origin"),
    "voxels": ("id", "value"),
    "particles": (),
}


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning every failure into a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path or build the data set first")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(
            f"{path}: not a readable HDF5 file ({str(err).splitlines()[0]}); it is corrupt or "
            "truncated, delete it and rebuild or download it again"
        ) from None


class Larcv3File:
    """Event-by-event, read-only access to the products of one larcv3 HDF5 file.

    Every read touches only the rows of the requested event (through the ``extents`` index
    tables); fields are read by name, so any compound padding or field order works.

    Parameters
    ----------
    path : str or os.PathLike
        larcv3 HDF5 file.

    Raises
    ------
    DataError
        If the file is missing, not HDF5, truncated, or lacks ``/Events/event_id`` or ``/Data``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = open_hdf5(self.path)
        try:
            self._event_id = self._file["Events/event_id"]
            self._datasets: dict[tuple[str, str], h5py.Dataset] = {}
            data = self._file["Data"]
            self.n_events = int(self._event_id.shape[0])
            self.products = tuple(
                sorted(key[: -len("_group")] for key in data if key.endswith("_group"))
            )
        except (KeyError, OSError, TypeError) as err:
            self._file.close()
            raise DataError(
                f"{self.path}: not a larcv3 file (needs /Events/event_id and /Data groups: "
                f"{err}); convert it to the larcv3 HDF5 schema of formats.md"
            ) from None

    def close(self) -> None:
        """Close the underlying HDF5 file."""
        self._file.close()

    def __enter__(self) -> Larcv3File:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _dataset(self, product: str, table: str, where: str) -> h5py.Dataset:
        """A product table, opened once and checked for the fields the reader needs."""
        key = (product, table)
        if key not in self._datasets:
            try:
                dataset = self._file[f"Data/{product}_group/{table}"]
            except KeyError:
                raise DataError(
                    f"{where}: dataset {table!r} is missing; the product is not in larcv3 layout"
                ) from None
            missing = [k for k in _TABLE_FIELDS[table] if k not in (dataset.dtype.names or ())]
            if missing:
                raise DataError(
                    f"{where}: {table} rows lack field(s) {', '.join(missing)}; the product is "
                    "not in larcv3 layout"
                )
            self._datasets[key] = dataset
        return self._datasets[key]

    def _rows(self, product: str, table: str, first: int, n: int, event: int) -> np.ndarray:
        """Rows ``first:first+n`` of a product table, checked against the table length."""
        where = f"{self.path}: event {event} of {product}"
        dataset = self._dataset(product, table, where)
        if first + n > dataset.shape[0]:
            raise DataError(
                f"{where}: {table} rows {first}..{first + n} lie past the end of the table "
                f"({dataset.shape[0]} rows); the file is truncated or inconsistent"
            )
        if n == 0:
            return np.zeros(0, dtype=dataset.dtype)
        try:
            return dataset[first : first + n]
        except OSError as err:
            raise DataError(f"{where}: cannot read {table} ({err}); the file is corrupt") from None

    def _check(self, product: str, event: int) -> None:
        if product not in self.products:
            raise DataError(
                f"{self.path}: no product {product!r} (the file has: "
                f"{', '.join(self.products) or 'none'}); pick one of those"
            )
        if not 0 <= event < self.n_events:
            raise IndexError(f"{self.path}: event {event} out of range 0..{self.n_events - 1}")

    def _extent(self, product: str, event: int) -> tuple[int, int]:
        row = self._rows(product, "extents", event, 1, event)[0]
        return int(row["first"]), int(row["N"])

    def _projection(self, product: str, table: str, event: int, projection: int):
        """Locate ``projection`` among the event's projection rows: (row index, id row, meta)."""
        first, n = self._extent(product, event)
        rows = self._rows(product, table, first, n, event)
        hits = np.flatnonzero(rows["ID"] == projection)
        if len(hits) == 0:
            raise DataError(
                f"{self.path}: event {event} of {product} has no projection {projection} "
                f"(it has {rows['ID'].tolist()}); choose one of those"
            )
        k = first + int(hits[0])
        meta_row = self._rows(product, "image_meta", k, 1, event)[0]
        if not meta_row["valid"]:
            raise DataError(f"{self.path}: event {event} of {product}: image_meta is not valid")
        try:
            meta = ImageMeta.from_row(meta_row)
        except DataError as err:
            raise DataError(f"{self.path}: event {event} of {product}: {err}") from None
        return rows[int(hits[0])], meta

    def event_id(self, event: int) -> tuple[int, int, int]:
        """(run, subrun, event) of entry ``event``."""
        row = self._event_id[event]
        return int(row["run"]), int(row["subrun"]), int(row["event"])

    def meta(self, product: str, event: int, projection: int = 0) -> ImageMeta:
        """Geometry of one projection of a sparse product in one event."""
        self._check(product, event)
        return self._projection(product, "voxel_extents", event, projection)[1]

    def sparse(
        self, product: str, event: int, projection: int = 0
    ) -> tuple[ImageMeta, np.ndarray, np.ndarray]:
        """Read one projection of a sparse product.

        Returns
        -------
        meta : ImageMeta
        ids : (N,) uint64
            Flat voxel ids, checked to lie inside the image.
        values : (N,) float32
        """
        self._check(product, event)
        row, meta = self._projection(product, "voxel_extents", event, projection)
        voxels = self._rows(product, "voxels", int(row["first"]), int(row["N"]), event)
        return meta, self._checked_ids(voxels, meta, product, event), self._values(voxels)

    def clusters(
        self, product: str, event: int, projection: int = 0
    ) -> tuple[ImageMeta, list[tuple[np.ndarray, np.ndarray]]]:
        """Read one projection of a cluster product: geometry and (ids, values) per cluster."""
        self._check(product, event)
        row, meta = self._projection(product, "projection_extents", event, projection)
        extents = self._rows(product, "cluster_extents", int(row["first"]), int(row["N"]), event)
        if len(extents) == 0:
            return meta, []
        starts = extents["first"].astype(np.int64)
        stops = starts + extents["N"].astype(np.int64)
        span = self._rows(
            product, "voxels", int(starts.min()), int(stops.max() - starts.min()), event
        )
        starts, stops = starts - starts.min(), stops - starts.min()
        ids, values = self._checked_ids(span, meta, product, event), self._values(span)
        return meta, [(ids[a:b], values[a:b]) for a, b in zip(starts, stops, strict=True)]

    def particles(self, product: str, event: int) -> np.ndarray:
        """Read the particle rows of one event (structured array, the file's own row type)."""
        self._check(product, event)
        first, n = self._extent(product, event)
        return self._rows(product, "particles", first, n, event)

    def _checked_ids(
        self, voxels: np.ndarray, meta: ImageMeta, product: str, event: int
    ) -> np.ndarray:
        ids = np.asarray(voxels["id"]).astype(np.uint64)
        if ids.size and int(ids.max()) >= meta.n_voxels:
            raise DataError(
                f"{self.path}: event {event} of {product}: voxel id {int(ids.max())} is out of "
                f"range for an image of {meta.size_px} voxels; the file is corrupt"
            )
        return ids

    @staticmethod
    def _values(voxels: np.ndarray) -> np.ndarray:
        return np.asarray(voxels["value"], dtype=np.float32)
