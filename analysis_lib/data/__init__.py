"""Data I/O: larcv3 HDF5 (write and read), PILArNet-M point clouds, the data manifest.

These modules use numpy and h5py only.
"""

from analysis_lib.data.dataset import Event, LArTPCDataset, open_dataset
from analysis_lib.data.larcv_read import Larcv3File
from analysis_lib.data.larcv_schema import PARTICLE_DTYPE, ImageMeta, image_meta_dtype
from analysis_lib.data.larcv_write import Larcv3Writer
from analysis_lib.data.manifest import (
    Manifest,
    PublicFile,
    SimulatedSet,
    load_manifest,
    make_missing,
    record_hashes,
    verify,
)
from analysis_lib.data.pilarnet_m import open_pilarnet_m

__all__ = [
    "PARTICLE_DTYPE",
    "Event",
    "ImageMeta",
    "LArTPCDataset",
    "Larcv3File",
    "Larcv3Writer",
    "Manifest",
    "PublicFile",
    "SimulatedSet",
    "image_meta_dtype",
    "load_manifest",
    "make_missing",
    "open_dataset",
    "open_pilarnet_m",
    "record_hashes",
    "verify",
]
