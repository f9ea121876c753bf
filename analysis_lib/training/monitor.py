"""What the training loop logs beside the loss: the spread of the shower score over the voxels a
network calls shower (the study's Figures 6-9 follow it during training)."""

import numpy as np

from analysis_lib.core.labels import VoxelClass


def shower_score_spread(probs: np.ndarray, pred: np.ndarray) -> float:
    """Standard deviation of the shower score over the voxels predicted as shower (NaN when
    fewer than two are): how unevenly a network is confident about what it calls shower."""
    shower = probs[pred == VoxelClass.SHOWER, VoxelClass.SHOWER]
    return float(shower.std()) if len(shower) > 1 else float("nan")
