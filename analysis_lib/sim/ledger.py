"""What the transport engine records, and the compiled helpers that append to it.

The engine keeps three growing float arrays: the stack of particles still to follow, the particle
table (one row per tabled particle, with its energy ledger) and the deposit points. This module
fixes their column layout, the particle kinds and processes, the settings vector's indices, and
the numba helpers that add rows (doubling an array when it is full).
"""

import math

import numpy as np
from numba import njit

from analysis_lib.core.labels import VoxelClass
from analysis_lib.sim import constants as c

# Kinds of stack entries (small ints, not PDG codes, so the engine can branch cheaply).
ELECTRON, POSITRON, PHOTON, MUON_MINUS, MUON_PLUS, PION_PLUS, PION_MINUS, PROTON = range(8)
KIND_TO_PDG = np.array([11, -11, 22, 13, -13, 211, -211, 2212])
PROCESS_NAMES = (
    "primary",
    "muIoni",
    "hIoni",
    "Decay",
    "muMinusCaptureAtRest",
    "protonInelastic",
    "pi+Inelastic",
    "pi-Inelastic",
    "hBertiniCaptureAtRest",
)
P_PRIMARY, P_MUIONI, P_HIONI, P_DECAY, P_MUCAPTURE, P_PINEL, P_PIPINEL, P_PIMINEL, P_CAPTURE = (
    range(9)
)

# Columns of the stack rows.
S_KIND, S_X, S_Y, S_Z, S_DX, S_DY, S_DZ, S_T, S_OWNER, S_SEM, S_PRIM, S_TABLED = range(12)
STACK_WIDTH = 12
# Columns of the particle-table rows.
(
    T_KIND, T_PARENT, T_ROOT, T_PROCESS, T_X0, T_Y0, T_Z0, T_X1, T_Y1, T_Z1, T_KE, T_DX, T_DY, T_DZ,
    T_SEM, T_EIN, T_EDEP, T_ECHILD, T_EOUT, T_INTERACTION, T_LENGTH
) = range(21)
TABLE_WIDTH = 21
# Columns of the deposit rows.
D_X, D_Y, D_Z, D_E, D_OWNER, D_SEM, D_PRIM = range(7)
DEPOSIT_WIDTH = 7

#: The semantic classes of :class:`VoxelClass` as plain ints, which numba compiles in.
HIP, MIP, SHOWER, DELTA, MICHEL = (int(v) for v in VoxelClass)

# Indices into the settings vector passed to the engine (see :class:`PhysicsConfig`).
(
    Q_STEP_HEAVY, Q_STEP_E, Q_SPACING, Q_LAMBDA_P, Q_LAMBDA_PI, Q_CAPTURE, Q_MARGIN, Q_ECUT, Q_KCUT
) = range(9)
SETTINGS_WIDTH = 9

#: Rest mass of each kind, MeV.
MASSES = np.array(
    [
        c.ELECTRON_MASS_MEV,
        c.ELECTRON_MASS_MEV,
        0.0,
        c.MUON_MASS_MEV,
        c.MUON_MASS_MEV,
        c.PION_MASS_MEV,
        c.PION_MASS_MEV,
        c.PROTON_MASS_MEV,
    ]
)


@njit(cache=True)
def set_end(table, row, x, y, z):
    table[row, T_X1], table[row, T_Y1], table[row, T_Z1] = x, y, z


@njit(cache=True)
def grow(arr, n):
    """``arr`` with room for at least one more row after ``n`` rows (doubling)."""
    if n < arr.shape[0]:
        return arr
    out = np.empty((arr.shape[0] * 2, arr.shape[1]))
    out[:n] = arr[:n]
    return out


@njit(cache=True)
def deposit(dep, nd, x, y, z, e, owner, sem, prim, table):
    dep = grow(dep, nd[0])
    i = nd[0]
    dep[i, D_X], dep[i, D_Y], dep[i, D_Z], dep[i, D_E] = x, y, z, e
    dep[i, D_OWNER], dep[i, D_SEM], dep[i, D_PRIM] = owner, sem, prim
    nd[0] += 1
    table[int(owner), T_EDEP] += e
    return dep


@njit(cache=True)
def deposit_segment(dep, nd, x, y, z, dx, dy, dz, length, e, owner, sem, prim, table, spacing):
    """Spread energy ``e`` evenly over points every ``spacing`` cm along a straight segment."""
    n = max(1, int(math.ceil(length / spacing)))
    for k in range(n):
        s = (k + 0.5) * length / n
        dep = deposit(dep, nd, x + s * dx, y + s * dy, z + s * dz, e / n, owner, sem, prim, table)
    return dep


@njit(cache=True)
def push(stack, ns, kind, x, y, z, dx, dy, dz, t, owner, sem, prim, tabled=0):
    """Put a particle on the stack; ``tabled`` marks the particle of row ``owner`` itself."""
    stack = grow(stack, ns[0])
    i = ns[0]
    stack[i, S_TABLED] = tabled
    stack[i, S_KIND], stack[i, S_X], stack[i, S_Y], stack[i, S_Z] = kind, x, y, z
    stack[i, S_DX], stack[i, S_DY], stack[i, S_DZ], stack[i, S_T] = dx, dy, dz, t
    stack[i, S_OWNER], stack[i, S_SEM], stack[i, S_PRIM] = owner, sem, prim
    ns[0] += 1
    return stack


@njit(cache=True)
def new_row(table, nt, kind, parent, process, x, y, z, dx, dy, dz, t, sem, interaction):
    table = grow(table, nt[0])
    i = nt[0]
    table[i, :] = 0.0
    table[i, T_KIND], table[i, T_PARENT], table[i, T_PROCESS] = kind, parent, process
    table[i, T_ROOT] = i if parent < 0 else table[int(parent), T_ROOT]
    table[i, T_X0], table[i, T_Y0], table[i, T_Z0] = x, y, z
    table[i, T_X1], table[i, T_Y1], table[i, T_Z1] = x, y, z
    table[i, T_DX], table[i, T_DY], table[i, T_DZ] = dx, dy, dz
    table[i, T_KE], table[i, T_EIN], table[i, T_SEM] = t, t, sem
    table[i, T_INTERACTION] = interaction
    nt[0] += 1
    return table


@njit(cache=True)
def outside(x, y, z, lo, hi, margin):
    return (
        x < lo[0] - margin
        or y < lo[1] - margin
        or z < lo[2] - margin
        or x > hi[0] + margin
        or y > hi[1] + margin
        or z > hi[2] + margin
    )
