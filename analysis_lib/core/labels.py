"""The study's five voxel classes: ids and names, defined once for the whole project (their
colours are the report's: :data:`analysis_lib.report.plots.CLASS_COLORS`)."""

from enum import IntEnum


class VoxelClass(IntEnum):
    """Semantic class of a voxel, with the study's ids."""

    HIP = 0
    MIP = 1
    SHOWER = 2
    DELTA = 3
    MICHEL = 4


NUM_CLASSES = len(VoxelClass)
CLASS_NAMES = ("HIP", "MIP", "EM shower", "Delta ray", "Michel e-")
