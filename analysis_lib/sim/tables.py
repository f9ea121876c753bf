"""Energy-dependent physics tables on one uniform ln(T) grid, for fast lookups in the engine.

Each row of :data:`TABLES` is one quantity sampled on ``exp(LN_T0 + i * DLN_T)``; the transport
kernels interpolate linearly in ln T. Heavy-particle ranges come from the spec's CSDA tables through
a monotone cubic in log-log space (so dE/dx = dT/dR is smooth: no kinks in the Bragg curve); the
electron CSDA range is the integral of 1 / (S_col + S_rad).
"""

import math
from enum import IntEnum

import numpy as np
from scipy.interpolate import PchipInterpolator

from analysis_lib.sim import constants as c
from analysis_lib.sim import libm

LN_T0 = math.log(1e-3)
LN_T1 = math.log(1e5)
N_GRID = 6000
DLN_T = (LN_T1 - LN_T0) / (N_GRID - 1)
KE_GRID_MEV = libm.exp(LN_T0 + DLN_T * np.arange(N_GRID))
#: ln of the grid's energies, as the lookups interpolate in it (computed once: libm loops in Python)
LN_KE_GRID = libm.log(KE_GRID_MEV)


class Row(IntEnum):
    """Row of :data:`TABLES`."""

    RANGE_MUON = 0
    DEDX_MUON = 1
    RANGE_PION = 2
    DEDX_PION = 3
    RANGE_PROTON = 4
    DEDX_PROTON = 5
    SCOL_ELECTRON = 6
    BREMS_F = 7
    LAMBDA_PHOTON = 8
    PAIR_FRACTION = 9
    RANGE_ELECTRON = 10


def loglog(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation in log-log space, held constant beyond the ends."""
    return libm.exp(np.interp(libm.log(x), libm.log(xs), libm.log(ys)))


def _heavy_range_and_dedx(ke: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSDA range R(T) (cm) and mean loss dT/dR (MeV/cm) on the grid from a range table.

    Below the first point the range follows the power law of the first two points; above the
    last one, the last segment's power law.
    """
    lx, ly = libm.log(ke), libm.log(r)
    spline = PchipInterpolator(lx, ly)
    lt = LN_KE_GRID
    lo_slope = (ly[1] - ly[0]) / (lx[1] - lx[0])
    hi_slope = (ly[-1] - ly[-2]) / (lx[-1] - lx[-2])
    inside = (lt >= lx[0]) & (lt <= lx[-1])
    ln_r = np.where(lt < lx[0], ly[0] + lo_slope * (lt - lx[0]), ly[-1] + hi_slope * (lt - lx[-1]))
    ln_r[inside] = spline(lt[inside])
    slope = np.where(lt < lx[0], lo_slope, hi_slope)
    slope[inside] = spline.derivative()(lt[inside])
    rng = libm.exp(ln_r)
    dedx = KE_GRID_MEV / (rng * slope)
    return rng, dedx


def electron_total_stopping_power(ke: np.ndarray) -> np.ndarray:
    """S_col + S_rad (MeV/cm) with S_rad = f(T) (T + m_e) / X0."""
    s_col = loglog(ke, c.ELECTRON_SCOL_KE_MEV, c.ELECTRON_SCOL_MEV_CM)
    f = loglog(ke, c.BREMS_F_KE_MEV, c.BREMS_F)
    return s_col + f * (ke + c.ELECTRON_MASS_MEV) / c.RADIATION_LENGTH_CM


def _electron_range(ke: np.ndarray) -> np.ndarray:
    """Electron CSDA range (cm): cumulative trapezoid of 1/S_tot in T, zero at the grid start."""
    inv = 1.0 / electron_total_stopping_power(ke)
    steps = 0.5 * (inv[1:] + inv[:-1]) * np.diff(ke)
    return np.concatenate([[ke[0] * inv[0]], ke[0] * inv[0] + np.cumsum(steps)])


def _pair_fraction(e: np.ndarray) -> np.ndarray:
    """Share of photon interactions that are pair conversions; zero below threshold."""
    xs, ys = c.PAIR_FRACTION_E_MEV, c.PAIR_FRACTION
    frac = np.interp(libm.log(e), libm.log(xs), ys)
    return np.where(e <= xs[0], 0.0, frac)


def build_tables() -> np.ndarray:
    """All rows of :class:`Row` on the grid, as one C-contiguous (rows, N_GRID) float64 array."""
    tab = np.empty((len(Row), N_GRID))
    for pdg, r_row, s_row in (
        (c.PDG_MUON_MINUS, Row.RANGE_MUON, Row.DEDX_MUON),
        (c.PDG_PION_PLUS, Row.RANGE_PION, Row.DEDX_PION),
        (c.PDG_PROTON, Row.RANGE_PROTON, Row.DEDX_PROTON),
    ):
        tab[r_row], tab[s_row] = _heavy_range_and_dedx(
            c.RANGE_TABLE_KE_MEV[pdg], c.RANGE_TABLE_CM[pdg]
        )
    tab[Row.SCOL_ELECTRON] = loglog(KE_GRID_MEV, c.ELECTRON_SCOL_KE_MEV, c.ELECTRON_SCOL_MEV_CM)
    tab[Row.BREMS_F] = loglog(KE_GRID_MEV, c.BREMS_F_KE_MEV, c.BREMS_F)
    tab[Row.LAMBDA_PHOTON] = loglog(KE_GRID_MEV, c.PHOTON_LAMBDA_E_MEV, c.PHOTON_LAMBDA_CM)
    tab[Row.PAIR_FRACTION] = _pair_fraction(KE_GRID_MEV)
    tab[Row.RANGE_ELECTRON] = _electron_range(KE_GRID_MEV)
    return np.ascontiguousarray(tab)


TABLES = build_tables()


def lookup(row: Row, ke: np.ndarray | float) -> np.ndarray:
    """Table value at kinetic energy ``ke`` (MeV), vectorized, for analysis and tests."""
    return np.interp(libm.log(ke), LN_KE_GRID, TABLES[row])
