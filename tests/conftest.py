"""Shared fixtures: a tiny simulated sample for the training tests."""

import pytest

from analysis_lib.sim import simulate


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory):
    """12 simulated 3D events of 32 px (depth <= 4 divides them)."""
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    return simulate(path, 12, 32, seed=11, workers=1, progress=False)
