"""The particle transport engine: a stack-based Monte Carlo compiled with numba.

One call of :func:`transport` follows every primary of an event and all its descendants through
liquid argon (physics-spec v1, §2–4) and returns energy-deposit points and a particle table.

Heavy tracks (μ, π, p) step 1 mm at a time with the mean loss dT/dR of the CSDA tables, split into
a continuous restricted part with Gaussian noise and explicit δ-rays above 0.1 MeV; electrons step
1 mm with collision loss, Poisson bremsstrahlung and Highland scattering; photons fly exponential
distances and Compton-scatter (Klein–Nishina) or convert. Every deposit carries its owner (a row of
the particle table), its semantic class and its primary-ionization flag; every row keeps an
energy ledger (in, deposited, handed to tabled children, escaped or invisible) so bookkeeping can
be checked.
The arrays' column layouts and the helpers that append rows are in :mod:`analysis_lib.sim.ledger`.
"""

import math

import numpy as np
from numba import njit

from analysis_lib.sim import constants as c
from analysis_lib.sim.ledger import (
    DELTA,
    DEPOSIT_WIDTH,
    ELECTRON,
    HIP,
    MASSES,
    MICHEL,
    MIP,
    MUON_MINUS,
    MUON_PLUS,
    P_CAPTURE,
    P_DECAY,
    P_HIONI,
    P_MUCAPTURE,
    P_MUIONI,
    P_PIMINEL,
    P_PINEL,
    P_PIPINEL,
    P_PRIMARY,
    PHOTON,
    PION_MINUS,
    PION_PLUS,
    POSITRON,
    PROTON,
    Q_CAPTURE,
    Q_ECUT,
    Q_KCUT,
    Q_LAMBDA_P,
    Q_LAMBDA_PI,
    Q_MARGIN,
    Q_SPACING,
    Q_STEP_E,
    Q_STEP_HEAVY,
    S_DX,
    S_DY,
    S_DZ,
    S_KIND,
    S_OWNER,
    S_PRIM,
    S_SEM,
    S_T,
    S_TABLED,
    S_X,
    S_Y,
    S_Z,
    SHOWER,
    STACK_WIDTH,
    T_ECHILD,
    T_EIN,
    T_EOUT,
    T_INTERACTION,
    T_LENGTH,
    TABLE_WIDTH,
    deposit,
    deposit_segment,
    new_row,
    outside,
    push,
    set_end,
)
from analysis_lib.sim.sampling import (
    brems_integral,
    brems_photon_energy,
    delta_ray_mean_energy,
    isotropic,
    ke_at_range,
    klein_nishina,
    lookup,
    michel_energy,
    rotate,
    scatter,
    urban_u,
)
from analysis_lib.sim.tables import Row

ME = c.ELECTRON_MASS_MEV
X0 = c.RADIATION_LENGTH_CM


@njit(cache=True)
def _heavy(rng, tab, kind, row, x, y, z, dx, dy, dz, t, stack, ns, dep, nd, table, nt, q, lo, hi):
    """Follow one μ/π/p (table row ``row``) to its end; push its secondaries."""
    mass = MASSES[kind]
    sem = HIP if kind == PROTON else MIP
    if kind == PROTON:
        r_row, lam = Row.RANGE_PROTON, q[Q_LAMBDA_P]
    elif kind == PION_PLUS or kind == PION_MINUS:
        r_row, lam = Row.RANGE_PION, q[Q_LAMBDA_PI]
    else:
        r_row, lam = Row.RANGE_MUON, 0.0
    step, spacing, wcut, margin = q[Q_STEP_HEAVY], q[Q_SPACING], c.DELTA_CUT_MEV, q[Q_MARGIN]
    delta_process = P_MUIONI if kind == MUON_MINUS or kind == MUON_PLUS else P_HIONI
    interaction = table[row, T_INTERACTION]
    while t > 0.0:
        if outside(x, y, z, lo, hi, margin):
            table[row, T_EOUT] += t
            t = 0.0
            break
        residual = lookup(tab, r_row, t)
        if residual <= step:
            dep = deposit_segment(
                dep, nd, x, y, z, dx, dy, dz, residual, t, row, sem, 0, table, spacing
            )
            x, y, z = x + residual * dx, y + residual * dy, z + residual * dz
            table[row, T_LENGTH] += residual
            t = 0.0
            break
        if lam > 0.0 and rng.random() < step / lam:
            stack, table = _hadronic_interaction(
                rng, x, y, z, t, row, kind, stack, ns, table, nt, interaction
            )
            t = 0.0
            break
        gamma = (t + mass) / mass
        beta2 = 1.0 - 1.0 / (gamma * gamma)
        ratio = ME / mass
        tmax = 2.0 * ME * beta2 * gamma * gamma / (1.0 + 2.0 * gamma * ratio + ratio * ratio)
        mean_delta = delta_ray_mean_energy(t, mass, beta2, tmax, wcut) * step
        xi = c.DELTA_RAY_CONSTANT_MEV_CM * step / beta2
        sigma = math.sqrt(xi * wcut * (1.0 - 0.5 * beta2))
        mean_loss = t - ke_at_range(tab, r_row, residual - step)
        e_cont = max(0.0, mean_loss - mean_delta + sigma * rng.normal())
        e_delta = 0.0
        if tmax > wcut:
            inv_lo, inv_hi = 1.0 / wcut, 1.0 / tmax
            n_env = rng.poisson(c.DELTA_RAY_CONSTANT_MEV_CM / beta2 * (inv_lo - inv_hi) * step)
            etot = t + mass
            for _ in range(n_env):
                td = 1.0 / (inv_lo - rng.random() * (inv_lo - inv_hi))
                if rng.random() > 1.0 - beta2 * td / tmax + td * td / (2.0 * etot * etot):
                    continue
                if e_cont + e_delta + td >= t:
                    break
                e_delta += td
                s = rng.random() * step
                px, py, pz = x + s * dx, y + s * dy, z + s * dz
                pe = math.sqrt(td * (td + 2.0 * ME))
                pmax = math.sqrt(tmax * (tmax + 2.0 * ME))
                cost = min(1.0, td / pe * pmax / tmax)
                ex, ey, ez = rotate(dx, dy, dz, cost, 2.0 * math.pi * rng.random())
                if td >= q[Q_ECUT]:
                    table[row, T_ECHILD] += td
                    table = new_row(
                        table, nt, ELECTRON, row, delta_process, px, py, pz, ex, ey, ez, td, DELTA,
                        interaction
                    )
                    stack = push(
                        stack, ns, ELECTRON, px, py, pz, ex, ey, ez, td, nt[0] - 1, DELTA, 1, 1
                    )
                else:
                    reach = lookup(tab, Row.RANGE_ELECTRON, td)
                    dep = deposit(
                        dep, nd, px + reach * ex, py + reach * ey, pz + reach * ez, td, row, sem, 0,
                        table
                    )
        e_cont = min(e_cont, t - e_delta)
        dep = deposit_segment(
            dep, nd, x, y, z, dx, dy, dz, step, e_cont, row, sem, 0, table, spacing
        )
        x, y, z = x + step * dx, y + step * dy, z + step * dz
        table[row, T_LENGTH] += step
        t -= e_cont + e_delta
        if t > 0.0:
            dx, dy, dz = scatter(rng, dx, dy, dz, t, mass, step)
    set_end(table, row, x, y, z)
    stack, table = _at_rest(rng, kind, row, x, y, z, stack, ns, table, nt, q, interaction)
    return stack, dep, table


@njit(cache=True)
def _hadronic_interaction(rng, x, y, z, t, row, kind, stack, ns, table, nt, interaction):
    """End a p/π track in flight: 0–2 protons with T ~ U(0, T/2); the rest is invisible."""
    process = P_PINEL if kind == PROTON else (P_PIPINEL if kind == PION_PLUS else P_PIMINEL)
    given = 0.0
    for _ in range(int(rng.integers(0, 3))):
        tp = rng.random() * 0.5 * t
        dx, dy, dz = isotropic(rng)
        given += tp
        table = new_row(table, nt, PROTON, row, process, x, y, z, dx, dy, dz, tp, HIP, interaction)
        stack = push(stack, ns, PROTON, x, y, z, dx, dy, dz, tp, nt[0] - 1, HIP, 0, 1)
    table[row, T_ECHILD] += given
    table[row, T_EOUT] += t - given
    return stack, table


@njit(cache=True)
def _at_rest(rng, kind, row, x, y, z, stack, ns, table, nt, q, interaction):
    """Decay or capture of a stopped μ/π: Michel electrons, π → μ, π⁻ absorption."""
    if kind == MUON_PLUS or (kind == MUON_MINUS and rng.random() >= q[Q_CAPTURE]):
        e_kind = POSITRON if kind == MUON_PLUS else ELECTRON
        process = P_DECAY if kind == MUON_PLUS else P_MUCAPTURE
        te = max(michel_energy(rng) - ME, 1e-3)
        dx, dy, dz = isotropic(rng)
        table = new_row(
            table, nt, e_kind, row, process, x, y, z, dx, dy, dz, te, MICHEL, interaction
        )
        stack = push(stack, ns, e_kind, x, y, z, dx, dy, dz, te, nt[0] - 1, MICHEL, 1, 1)
    elif kind == PION_PLUS:
        dx, dy, dz = isotropic(rng)
        tm = c.PION_DECAY_MUON_KE_MEV
        table = new_row(
            table, nt, MUON_PLUS, row, P_DECAY, x, y, z, dx, dy, dz, tm, MIP, interaction
        )
        stack = push(stack, ns, MUON_PLUS, x, y, z, dx, dy, dz, tm, nt[0] - 1, MIP, 0, 1)
    elif kind == PION_MINUS:
        for _ in range(int(rng.integers(0, 3))):
            tp = 10.0 + 50.0 * rng.random()
            dx, dy, dz = isotropic(rng)
            table = new_row(
                table, nt, PROTON, row, P_CAPTURE, x, y, z, dx, dy, dz, tp, HIP, interaction
            )
            stack = push(stack, ns, PROTON, x, y, z, dx, dy, dz, tp, nt[0] - 1, HIP, 0, 1)
    return stack, table


@njit(cache=True)
def _electron(
    rng, tab, kind, x, y, z, dx, dy, dz, t, owner, sem, prim, tabled, stack, ns, dep, nd, table, q,
    lo, hi
):
    """Follow one e±: 1 mm steps with collision loss, brems and scattering; below the tracking
    cut the rest is laid on a straight segment of its CSDA range. A positron annihilates."""
    step, spacing, kc, margin = q[Q_STEP_E], q[Q_SPACING], q[Q_KCUT], q[Q_MARGIN]
    while True:
        if outside(x, y, z, lo, hi, margin):
            table[owner, T_EOUT] += t
            if tabled:
                set_end(table, owner, x, y, z)
            return stack, dep
        if t < q[Q_ECUT]:
            reach = lookup(tab, Row.RANGE_ELECTRON, t)
            dep = deposit_segment(
                dep, nd, x, y, z, dx, dy, dz, reach, t, owner, sem, prim, table, spacing
            )
            x, y, z = x + reach * dx, y + reach * dy, z + reach * dz
            if tabled:
                table[owner, T_LENGTH] += reach
            break
        e_col = min(lookup(tab, Row.SCOL_ELECTRON, t) * step, t)
        t_rad = t - e_col
        if t_rad > kc:
            f = lookup(tab, Row.BREMS_F, t)
            n_brems = rng.poisson(f * step / X0 * brems_integral(t, kc))
            for _ in range(n_brems):
                if t_rad <= kc:
                    break
                k = brems_photon_energy(rng, t_rad, kc)
                t_rad -= k
                s = rng.random() * step
                stack = push(
                    stack, ns, PHOTON, x + s * dx, y + s * dy, z + s * dz, dx, dy, dz, k, owner,
                    sem, 0
                )
        dep = deposit_segment(
            dep, nd, x, y, z, dx, dy, dz, step, e_col, owner, sem, prim, table, spacing
        )
        x, y, z = x + step * dx, y + step * dy, z + step * dz
        if tabled:
            table[owner, T_LENGTH] += step
        t = t_rad
        if t <= 0.0:
            break
        dx, dy, dz = scatter(rng, dx, dy, dz, t, ME, step)
    if tabled:
        set_end(table, owner, x, y, z)
    if kind == POSITRON:
        table[owner, T_EIN] += 2.0 * ME
        ax, ay, az = isotropic(rng)
        stack = push(stack, ns, PHOTON, x, y, z, ax, ay, az, ME, owner, sem, 0)
        stack = push(stack, ns, PHOTON, x, y, z, -ax, -ay, -az, ME, owner, sem, 0)
    return stack, dep


@njit(cache=True)
def _photon(
    rng, tab, x, y, z, dx, dy, dz, e, owner, sem, tabled, stack, ns, dep, nd, table, q, lo, hi
):
    """Follow one photon through Compton scatters to conversion, escape or a point deposit.
    A tabled photon's end point is its first interaction."""
    margin = q[Q_MARGIN]
    while e >= c.PHOTON_POINT_DEPOSIT_MEV:
        d = rng.exponential(lookup(tab, Row.LAMBDA_PHOTON, e))
        x, y, z = x + d * dx, y + d * dy, z + d * dz
        if tabled:
            set_end(table, owner, x, y, z)
            table[owner, T_LENGTH] = d
            tabled = 0
        if outside(x, y, z, lo, hi, margin):
            table[owner, T_EOUT] += e
            return stack, dep
        if rng.random() < lookup(tab, Row.PAIR_FRACTION, e):
            eps = ME / e + rng.random() * (1.0 - 2.0 * ME / e)
            phi = 2.0 * math.pi * rng.random()
            for kind, share, azimuth in (
                (ELECTRON, eps, phi),
                (POSITRON, 1.0 - eps, phi + math.pi),
            ):
                etot = share * e
                theta = min(urban_u(rng) * ME / etot, math.pi)
                ex, ey, ez = rotate(dx, dy, dz, math.cos(theta), azimuth)
                stack = push(
                    stack, ns, kind, x, y, z, ex, ey, ez, max(etot - ME, 0.0), owner, sem, 0
                )
            table[owner, T_EIN] -= 2.0 * ME
            return stack, dep
        eps, onecost = klein_nishina(rng, e / ME)
        e_out = eps * e
        nx, ny, nz = rotate(dx, dy, dz, 1.0 - onecost, 2.0 * math.pi * rng.random())
        px, py, pz = e * dx - e_out * nx, e * dy - e_out * ny, e * dz - e_out * nz
        norm = math.sqrt(px * px + py * py + pz * pz)
        if norm > 0.0:
            stack = push(
                stack, ns, ELECTRON, x, y, z, px / norm, py / norm, pz / norm, e - e_out, owner,
                sem, 0
            )
        else:
            dep = deposit(dep, nd, x, y, z, e - e_out, owner, sem, 0, table)
        e, dx, dy, dz = e_out, nx, ny, nz
    dep = deposit(dep, nd, x, y, z, e, owner, sem, 0, table)
    return stack, dep


@njit(cache=True)
def transport(primaries, tab, q, lo, hi, rng):
    """Simulate one event.

    Parameters
    ----------
    primaries : (P, 9) float64
        kind, x, y, z (cm), dx, dy, dz, kinetic energy (MeV), interaction id.
    tab : (rows, N_GRID) float64
        :data:`analysis_lib.sim.tables.TABLES`.
    q : (SETTINGS_WIDTH,) float64
        Engine settings, indexed by the ``Q_*`` constants.
    lo, hi : (3,) float64
        Corners of the image (cm); particles farther than ``q[Q_MARGIN]`` outside are dropped.
    rng : numpy.random.Generator

    Returns
    -------
    deposits : (M, DEPOSIT_WIDTH) float64
    table : (K, TABLE_WIDTH) float64
    """
    stack = np.empty((256, STACK_WIDTH))
    dep = np.empty((1 << 14, DEPOSIT_WIDTH))
    table = np.empty((64, TABLE_WIDTH))
    ns, nd, nt = np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64)
    for i in range(primaries.shape[0]):
        kind = int(primaries[i, 0])
        x, y, z = primaries[i, 1], primaries[i, 2], primaries[i, 3]
        dx, dy, dz, t = primaries[i, 4], primaries[i, 5], primaries[i, 6], primaries[i, 7]
        sem = HIP if kind == PROTON else (SHOWER if kind <= PHOTON else MIP)
        table = new_row(
            table, nt, kind, -1, P_PRIMARY, x, y, z, dx, dy, dz, t, sem, primaries[i, 8]
        )
        stack = push(stack, ns, kind, x, y, z, dx, dy, dz, t, nt[0] - 1, sem, 0, 1)
    while ns[0] > 0:
        ns[0] -= 1
        s = stack[ns[0]].copy()
        kind, owner = int(s[S_KIND]), int(s[S_OWNER])
        sem, prim, tabled = int(s[S_SEM]), int(s[S_PRIM]), int(s[S_TABLED])
        x, y, z, dx, dy, dz, t = s[S_X], s[S_Y], s[S_Z], s[S_DX], s[S_DY], s[S_DZ], s[S_T]
        if kind == PHOTON:
            stack, dep = _photon(
                rng, tab, x, y, z, dx, dy, dz, t, owner, sem, tabled, stack, ns, dep, nd, table, q,
                lo, hi
            )
        elif kind == ELECTRON or kind == POSITRON:
            stack, dep = _electron(
                rng, tab, kind, x, y, z, dx, dy, dz, t, owner, sem, prim, tabled, stack, ns, dep,
                nd, table, q, lo, hi
            )
        else:
            stack, dep, table = _heavy(
                rng, tab, kind, owner, x, y, z, dx, dy, dz, t, stack, ns, dep, nd, table, nt, q, lo,
                hi
            )
    return dep[: nd[0]].copy(), table[: nt[0]].copy()
