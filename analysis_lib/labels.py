"""The study's five voxel classes: ids, names and colours, defined once for the whole project."""

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
#: Label colours of the study's figures: HIP blue, MIP cyan, shower green, delta yellow,
#: Michel orange.
CLASS_COLORS = ("#1f3fbf", "#17c5d6", "#2ca02c", "#f2d600", "#ff7f0e")
