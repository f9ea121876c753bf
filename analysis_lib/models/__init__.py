"""Networks of the study: the U-ResNet with a dense and a sparse backend."""

from analysis_lib.models.uresnet import BACKENDS, GROWTHS, UResNet, level_planes

__all__ = ["BACKENDS", "GROWTHS", "UResNet", "level_planes"]
