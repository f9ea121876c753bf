"""LArTPC event simulator (physics-spec v1): transport, voxelization, labels, larcv3 output.

Knows nothing of torch.
"""

from analysis_lib.sim.config import GENERATOR_VERSION, PhysicsConfig
from analysis_lib.sim.simulate import SimEvent, simulate, simulate_event, simulate_primaries

__all__ = [
    "GENERATOR_VERSION",
    "PhysicsConfig",
    "SimEvent",
    "simulate",
    "simulate_event",
    "simulate_primaries",
]
