"""The study's relabeling: Michel and delta-ray voxels off the electron's primary ionization
become EM shower (their bremsstrahlung photons look like showers)."""

import numpy as np

from analysis_lib.core.errors import DataError
from analysis_lib.core.labels import VoxelClass


def relabel(label: np.ndarray, prim_ion: np.ndarray | None) -> np.ndarray:
    """Labels (N,) with classes delta and Michel set to shower where ``prim_ion`` (N,) is 0.

    Raises
    ------
    DataError
        If the primary-ionization flag is missing (the file has no ``*_primion`` product).
    """
    if prim_ion is None:
        raise DataError(
            "relabeling needs the per-voxel primary-ionization flag "
            "(product sparse3d_primion), which this file does not have"
        )
    out = label.copy()
    secondary = np.isin(label, (VoxelClass.DELTA, VoxelClass.MICHEL)) & (prim_ion == 0)
    out[secondary] = VoxelClass.SHOWER
    return out
