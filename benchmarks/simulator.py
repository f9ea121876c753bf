"""Simulator throughput: events per second per core at the study's image sizes (3D).

Single-process timing of simulate_event (transport + voxelization + labels) after the numba
kernels are compiled, then end-to-end simulate() into a larcv3 file with all cores.

    python benchmarks/simulator.py [--events 100] [--sizes 192 512 768]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from analysis_lib.sim import PhysicsConfig, simulate, simulate_event


def per_core(size: int, n_events: int, cfg: PhysicsConfig) -> tuple[float, float]:
    """Events/s of one process and mean nonzero voxels per event."""
    simulate_event(np.random.default_rng(0), size, cfg)  # compile / load kernels
    start = time.perf_counter()
    voxels = 0
    for i in range(n_events):
        voxels += len(simulate_event(np.random.default_rng([99, i]), size, cfg).voxels.energy)
    return n_events / (time.perf_counter() - start), voxels / n_events


def end_to_end(size: int, n_events: int) -> float:
    """Events/s of simulate() writing a file with every core."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        simulate(Path(tmp) / "bench.h5", n_events, size, seed=7, progress=False)
        return n_events / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 512, 768])
    args = parser.parse_args()
    cfg = PhysicsConfig()
    cores = os.cpu_count()
    print(f"simulator throughput, {cores} cores, {args.events} events per size")
    print(f"{'size (px)':>9} {'voxels/event':>13} {'ev/s per core':>14} "
          f"{f'ev/s, {cores} processes':>20}")
    for size in args.sizes:
        rate, voxels = per_core(size, args.events, cfg)
        total = end_to_end(size, args.events)
        print(f"{size:>9} {voxels:>13.0f} {rate:>14.1f} {total:>20.1f}")


if __name__ == "__main__":
    main()
