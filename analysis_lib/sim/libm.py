"""exp, log, sin and cos element by element through the C library, as the compiled engine calls
them.

numpy chooses its own vectorized exp, log, sin and cos by the CPU it runs on: on an AVX-512
machine they differ from the C library's in the last bit, on an AVX2 machine they agree with
it. A simulated file must have the same bytes on every machine (the manifest checks its sha256),
so the simulator's tables and directions take these instead of numpy's.
"""

import math

import numpy as np


def _elementwise(fn, x: np.ndarray | float) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return np.fromiter(map(fn, a.ravel().tolist()), np.float64, a.size).reshape(a.shape)


def exp(x: np.ndarray | float) -> np.ndarray:
    """``exp`` of every element (float64)."""
    return _elementwise(math.exp, x)


def log(x: np.ndarray | float) -> np.ndarray:
    """Natural ``log`` of every element (float64); elements must be positive."""
    return _elementwise(math.log, x)


def sin(x: np.ndarray | float) -> np.ndarray:
    """``sin`` of every element (float64)."""
    return _elementwise(math.sin, x)


def cos(x: np.ndarray | float) -> np.ndarray:
    """``cos`` of every element (float64)."""
    return _elementwise(math.cos, x)
