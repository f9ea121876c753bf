"""larcv3 HDF5 files: the public names of the schema, the writer and the reader.

Row types, `ImageMeta` and product naming live in `analysis_lib.data.larcv_schema`
(with the notes on the official larcv3 layouts), `Larcv3Writer` in
`analysis_lib.data.larcv_write`, `open_hdf5` and `Larcv3File` in
`analysis_lib.data.larcv_read`. This module re-exports them for existing callers.
"""

from analysis_lib.data.larcv_read import Larcv3File, open_hdf5
from analysis_lib.data.larcv_schema import (
    EVENT_ID_DTYPE,
    EXTENTS_DTYPE,
    ID_EXTENTS_DTYPE,
    PARTICLE_DTYPE,
    PROCESS_STRLEN,
    VERTEX_DTYPE,
    VOXEL_DTYPE,
    ImageMeta,
    image_meta_dtype,
    product_dim,
)
from analysis_lib.data.larcv_write import Larcv3Writer

__all__ = [
    "EVENT_ID_DTYPE",
    "EXTENTS_DTYPE",
    "ID_EXTENTS_DTYPE",
    "PARTICLE_DTYPE",
    "PROCESS_STRLEN",
    "VERTEX_DTYPE",
    "VOXEL_DTYPE",
    "ImageMeta",
    "Larcv3File",
    "Larcv3Writer",
    "image_meta_dtype",
    "open_hdf5",
    "product_dim",
]
