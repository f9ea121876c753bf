"""Sampling and interpolation for the transport engine (numba): CSDA table lookups in ln T,
directions (rotation, isotropic), LAr-tuned Highland multiple scattering, the mean δ-ray energy
above the cut, bremsstrahlung photon energies, Compton scattering (Klein–Nishina, as Geant4
samples it), the Michel spectrum and the Urban fluctuation's excitation count (physics-spec v1,
§2–4)."""

import math

import numpy as np
from numba import njit

from analysis_lib.sim import constants as c
from analysis_lib.sim.tables import DLN_T, LN_T0, N_GRID

ME = c.ELECTRON_MASS_MEV
X0 = c.RADIATION_LENGTH_CM


@njit(cache=True)
def lookup(tab, row, t):
    """Linear interpolation of a table row in ln T."""
    u = (math.log(max(t, 1e-12)) - LN_T0) / DLN_T
    if u <= 0.0:
        return tab[row, 0]
    if u >= N_GRID - 1:
        return tab[row, N_GRID - 1]
    i = int(u)
    f = u - i
    return tab[row, i] * (1.0 - f) + tab[row, i + 1] * f


@njit(cache=True)
def ke_at_range(tab, row, r):
    """Inverse of a range row: the kinetic energy whose CSDA range is ``r`` (cm)."""
    ranges = tab[row]
    i = np.searchsorted(ranges, r)
    if i <= 0:
        return math.exp(LN_T0) * r / ranges[0]
    if i >= N_GRID:
        i = N_GRID - 1
    f = (r - ranges[i - 1]) / (ranges[i] - ranges[i - 1])
    return math.exp(LN_T0 + (i - 1 + f) * DLN_T)


@njit(cache=True)
def rotate(dx, dy, dz, cost, phi):
    """Direction at polar angle acos(cost), azimuth phi, around the unit vector (dx, dy, dz)."""
    sint = math.sqrt(max(0.0, 1.0 - cost * cost))
    # an orthonormal pair perpendicular to d
    if abs(dz) < 0.9:
        ax, ay, az = -dy, dx, 0.0
    else:
        ax, ay, az = 0.0, -dz, dy
    n = math.sqrt(ax * ax + ay * ay + az * az)
    ax, ay, az = ax / n, ay / n, az / n
    bx, by, bz = dy * az - dz * ay, dz * ax - dx * az, dx * ay - dy * ax
    cp, sp = math.cos(phi), math.sin(phi)
    nx = cost * dx + sint * (cp * ax + sp * bx)
    ny = cost * dy + sint * (cp * ay + sp * by)
    nz = cost * dz + sint * (cp * az + sp * bz)
    n = math.sqrt(nx * nx + ny * ny + nz * nz)
    return nx / n, ny / n, nz / n


@njit(cache=True)
def isotropic(rng):
    cost = 2.0 * rng.random() - 1.0
    phi = 2.0 * math.pi * rng.random()
    sint = math.sqrt(1.0 - cost * cost)
    return sint * math.cos(phi), sint * math.sin(phi), cost


@njit(cache=True)
def highland_kappa(p_mev):
    """LAr-tuned Highland constant (MeV), with p held at >= 0.1 GeV/c where the fit was made."""
    p_gev = max(p_mev * 1e-3, 0.1)
    return 0.1049 / (p_gev * p_gev) + 11.0038


@njit(cache=True)
def scatter(rng, dx, dy, dz, t, mass, step):
    """Highland multiple scattering over ``step`` cm (no log term), as two Gaussian projections."""
    p = math.sqrt(t * (t + 2.0 * mass))
    beta = p / (t + mass)
    kappa = highland_kappa(p) if mass > ME else 13.6
    theta0 = kappa / (beta * p) * math.sqrt(step / X0)
    tx = rng.normal() * theta0
    ty = rng.normal() * theta0
    theta = math.sqrt(tx * tx + ty * ty)
    if theta > math.pi:
        theta = math.pi
    return rotate(dx, dy, dz, math.cos(theta), math.atan2(ty, tx))


@njit(cache=True)
def michel_energy(rng):
    """Total energy (MeV) from dN/dx ∝ x²(3 − 2x), x = 2E/m_μ, by rejection (max of pdf = 1)."""
    while True:
        x = rng.random()
        if rng.random() <= x * x * (3.0 - 2.0 * x):
            return x * c.MICHEL_ENDPOINT_MEV


@njit(cache=True)
def delta_ray_mean_energy(t, mass, beta2, tmax, wcut):
    """Mean energy (MeV/cm) carried by δ-rays above ``wcut`` (spin-1/2 cross-section)."""
    if tmax <= wcut:
        return 0.0
    etot = t + mass
    cst = c.DELTA_RAY_CONSTANT_MEV_CM / beta2
    return cst * (
        math.log(tmax / wcut)
        - beta2 * (tmax - wcut) / tmax
        + (tmax * tmax - wcut * wcut) / (4.0 * etot * etot)
    )


@njit(cache=True)
def brems_integral(t, kc):
    """∫_{kc}^{T} (4/3 − 4/3 y + y²) dk/k with y = k/E."""
    e = t + ME
    return (
        (4.0 / 3.0) * math.log(t / kc)
        - (4.0 / 3.0) * (t - kc) / e
        + (t * t - kc * kc) / (2.0 * e * e)
    )


@njit(cache=True)
def brems_photon_energy(rng, t, kc):
    e = t + ME
    while True:
        k = kc * math.exp(rng.random() * math.log(t / kc))
        y = k / e
        if rng.random() * (4.0 / 3.0) <= 4.0 / 3.0 - 4.0 / 3.0 * y + y * y:
            return k


@njit(cache=True)
def klein_nishina(rng, k0):
    """Geant4's sampling of ε = E'/E for Compton scattering; returns (ε, 1 − cos θ)."""
    eps0 = 1.0 / (1.0 + 2.0 * k0)
    eps0sq = eps0 * eps0
    alpha1 = -math.log(eps0)
    alpha2 = alpha1 + 0.5 * (1.0 - eps0sq)
    while True:
        if alpha1 > alpha2 * rng.random():
            eps = math.exp(-alpha1 * rng.random())
            epssq = eps * eps
        else:
            epssq = eps0sq + (1.0 - eps0sq) * rng.random()
            eps = math.sqrt(epssq)
        onecost = (1.0 - eps) / (eps * k0)
        sint2 = onecost * (2.0 - onecost)
        if 1.0 - eps * sint2 / (1.0 + epssq) >= rng.random():
            return eps, onecost


@njit(cache=True)
def urban_u(rng):
    a = 0.625 if rng.random() < 9.0 / 36.0 else 1.875
    return -math.log(max(rng.random() * rng.random(), 1e-300)) / a
