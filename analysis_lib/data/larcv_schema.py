"""larcv3 HDF5 schema: compound row types, image geometry and product naming.

Shared by the writer (``larcv_write``) and the reader (``larcv_read``).

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

from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import numpy as np

from analysis_lib.core.errors import DataError

EVENTS_GROUP = "Events"
EVENT_ID_TABLE = "event_id"
DATA_GROUP = "Data"
GROUP_SUFFIX = "_group"

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


SPARSE_TYPES = ("sparse2d", "sparse3d")
CLUSTER_TYPES = ("cluster2d", "cluster3d")
PARTICLE_TYPES = ("particle",)
_TYPE_DIMS = {"sparse2d": 2, "sparse3d": 3, "cluster2d": 2, "cluster3d": 3}


def split_product_name(name: str) -> tuple[str, str]:
    """Split a product name into (type, producer): ``sparse3d_data`` -> ("sparse3d", "data")."""
    kind, _, producer = name.partition("_")
    return kind, producer


def product_dim(name: str) -> int | None:
    """Image dimension implied by a product name (``sparse3d_data`` -> 3), None for particles."""
    return _TYPE_DIMS.get(split_product_name(name)[0])


def check_product_name(name: str, kinds: tuple[str, ...], argument: str) -> None:
    """Reject a product name that is not ``<type>_<producer>`` with type in ``kinds``.

    Raises
    ------
    DataError
        Naming ``argument`` (the writer argument the name came from) and the allowed types.
    """
    kind, producer = split_product_name(name)
    if kind not in kinds or not producer:
        raise DataError(
            f"{argument}: product name {name!r} must look like '<type>_<producer>' with type "
            f"one of {', '.join(kinds)}"
        )


def group_name(product: str) -> str:
    """``/Data`` group holding a product: ``sparse3d_data`` -> ``sparse3d_data_group``."""
    return product + GROUP_SUFFIX


def product_of_group(group: str) -> str | None:
    """Product stored in a ``/Data`` group, the inverse of `group_name`; None for other keys."""
    return group[: -len(GROUP_SUFFIX)] if group.endswith(GROUP_SUFFIX) else None


_Context = TypeVar("_Context", bound="ClosingContext")


class ClosingContext:
    """Context-manager protocol of the reader and the writer: ``with`` closes on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Context) -> _Context:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class LazyFile(ClosingContext):
    """A sequence of events over one file that opens it on first access and reopens it after
    pickling, so it can be handed to worker processes.

    Subclasses set ``path`` and ``_n_events`` and implement ``_read(index)``; ``_handle`` is
    the open file object or None.
    """

    _handle = None

    def __len__(self) -> int:
        return self._n_events

    def __getitem__(self, index: int | slice):
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(len(self)))]
        index = int(index)
        if not -self._n_events <= index < self._n_events:
            raise IndexError(f"{self.path}: event {index} out of range for {len(self)} events")
        return self._read(index % self._n_events)

    def __iter__(self):
        for index in range(len(self)):
            yield self._read(index)

    def close(self) -> None:
        """Close the file if it is open; the next access reopens it."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}
