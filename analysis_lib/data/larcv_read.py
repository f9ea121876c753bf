"""larcv3 HDF5 reader: event-by-event access that reads only the requested event's voxel rows.

The layout read is the one described in `analysis_lib.data.larcv_schema`.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from analysis_lib.core.errors import DataError
from analysis_lib.data.larcv_schema import (
    DATA_GROUP,
    EVENT_ID_TABLE,
    EVENTS_GROUP,
    EXTENTS_DTYPE,
    ID_EXTENTS_DTYPE,
    VOXEL_DTYPE,
    ClosingContext,
    ImageMeta,
    group_name,
    image_meta_dtype,
    product_of_group,
)

# Fields the reader needs in each product table; particles are returned as stored.
_TABLE_FIELDS = {
    "extents": EXTENTS_DTYPE.names,
    "voxel_extents": ID_EXTENTS_DTYPE.names,
    "projection_extents": ID_EXTENTS_DTYPE.names,
    "cluster_extents": EXTENTS_DTYPE.names,
    "image_meta": image_meta_dtype(3).names,
    "voxels": VOXEL_DTYPE.names,
    "particles": (),
}
# Tables read whole at first use: the index tables, a few rows per event. Reading one row of a
# gzip-chunked table decompresses its chunk; three products' four index reads were most of an
# event's read time.
_INDEX_TABLES = ("extents", "voxel_extents", "projection_extents", "cluster_extents",
                 "image_meta")
# HDF5's chunk cache per dataset (1 MiB by default holds 8 of a voxel table's 8192-row chunks):
# large enough for a ci training set's voxel tables, so that training, which draws each event
# many times, decompresses each chunk once. It fills only with chunks actually read.
_CHUNK_CACHE_BYTES = 128 * 2**20
_CHUNK_CACHE_SLOTS = 10007


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning every failure into a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path or build the data set first")
    try:
        return h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES,
                         rdcc_nslots=_CHUNK_CACHE_SLOTS)
    except OSError as err:
        raise DataError(
            f"{path}: not a readable HDF5 file ({str(err).splitlines()[0]}); it is corrupt or "
            "truncated, delete it and rebuild or download it again"
        ) from None


class Larcv3File(ClosingContext):
    """Event-by-event, read-only access to the products of one larcv3 HDF5 file.

    Every read touches only the voxel rows of the requested event, found through the
    ``extents`` index tables (read whole at first use); fields are read by name, so any
    compound padding or field order works.

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
            self._event_id = self._file[f"{EVENTS_GROUP}/{EVENT_ID_TABLE}"]
            self._datasets: dict[tuple[str, str], h5py.Dataset | np.ndarray] = {}
            data = self._file[DATA_GROUP]
            self.n_events = int(self._event_id.shape[0])
            self.products = tuple(sorted(p for p in map(product_of_group, data) if p is not None))
        except (KeyError, OSError, TypeError) as err:
            self._file.close()
            raise DataError(
                f"{self.path}: not a larcv3 file (needs /Events/event_id and /Data groups: "
                f"{err}); convert it to the larcv3 HDF5 schema of formats.md"
            ) from None

    def close(self) -> None:
        """Close the underlying HDF5 file."""
        self._file.close()

    def _dataset(self, product: str, table: str, where: str) -> h5py.Dataset | np.ndarray:
        """A product table, opened once and checked for the fields the reader needs (an index
        table read whole into memory)."""
        key = (product, table)
        if key not in self._datasets:
            try:
                dataset = self._file[f"{DATA_GROUP}/{group_name(product)}/{table}"]
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
            if table in _INDEX_TABLES:
                try:
                    dataset = dataset[()]
                except OSError as err:
                    raise DataError(f"{where}: cannot read {table} ({err}); the file is "
                                    "corrupt") from None
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
