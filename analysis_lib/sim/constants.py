"""Liquid argon and particle constants, and the tabulated inputs of physics-spec v1.

Every number here is quoted from the physics specification (PDG, NIST PSTAR/ESTAR, Geant4 fits);
the tables are interpolated log-log by :mod:`analysis_lib.sim.tables`.
"""

import numpy as np

# --- liquid argon -----------------------------------------------------------------------------
DENSITY_G_CM3 = 1.396
Z_OVER_A = 0.45059
RADIATION_LENGTH_CM = 14.0
MOLIERE_RADIUS_CM = 9.04
CRITICAL_ENERGY_MEV = 32.84
NUCLEAR_INTERACTION_LENGTH_CM = 85.7
K_BETHE = 0.307075  # MeV cm^2 / mol
EXCITATION_ENERGY_MEV = 188.0e-6
DELTA_RAY_CONSTANT_MEV_CM = 0.1535 * Z_OVER_A * DENSITY_G_CM3  # C = 0.0966 MeV/cm
DELTA_CUT_MEV = 0.1  # W_cut: explicit delta rays above it, continuous restricted loss below
DELTA_TRACK_MIN_MEV = 1.0  # delta rays above this are tracked by the electron engine

# --- particles --------------------------------------------------------------------------------
ELECTRON_MASS_MEV = 0.51099895
MUON_MASS_MEV = 105.6583755
PION_MASS_MEV = 139.57039
PROTON_MASS_MEV = 938.27208816

PDG_ELECTRON, PDG_POSITRON, PDG_GAMMA = 11, -11, 22
PDG_MUON_MINUS, PDG_MUON_PLUS = 13, -13
PDG_PION_PLUS, PDG_PION_MINUS = 211, -211
PDG_PROTON = 2212

MASS_OF_PDG = {
    PDG_ELECTRON: ELECTRON_MASS_MEV,
    PDG_POSITRON: ELECTRON_MASS_MEV,
    PDG_GAMMA: 0.0,
    PDG_MUON_MINUS: MUON_MASS_MEV,
    PDG_MUON_PLUS: MUON_MASS_MEV,
    PDG_PION_PLUS: PION_MASS_MEV,
    PDG_PION_MINUS: PION_MASS_MEV,
    PDG_PROTON: PROTON_MASS_MEV,
}

# --- muon end of range (spec §2) ----------------------------------------------------------------
MUON_CAPTURE_PROBABILITY = 1.2727 / (1.2727 + 0.442)  # mu- in 40Ar: 0.742
MICHEL_ENDPOINT_MEV = 52.83
PION_DECAY_MUON_KE_MEV = 4.12

# --- CSDA ranges of heavy particles (cm), spec §2 table -----------------------------------------
RANGE_TABLE_KE_MEV = {
    PDG_PROTON: np.array([10, 20, 50, 100, 200, 300, 400, 500, 1000.0]),
    PDG_MUON_MINUS: np.array([10, 20, 50, 100, 200, 300, 500, 1000.0]),
    PDG_PION_PLUS: np.array([10, 20, 50, 100, 200, 300, 500, 1000.0]),
}
RANGE_TABLE_CM = {
    PDG_PROTON: np.array([0.135, 0.454, 2.30, 7.82, 25.98, 51.2, 81.5, 115.6, 319.0]),
    PDG_MUON_MINUS: np.array([0.71, 2.38, 10.8, 30.4, 76.1, 123.5, 217.3, 441.0]),
    PDG_PION_PLUS: np.array([0.57, 1.95, 9.2, 26.9, 70.6, 117.5, 212.3, 442.0]),
}

# --- electrons (spec §4) ------------------------------------------------------------------------
#: collision stopping power S_col (MeV/cm); below 0.1 MeV from ESTAR (Ar), above 100 MeV the
#: logarithmic rise continued.
ELECTRON_SCOL_KE_MEV = np.array([0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0, 1e4])
ELECTRON_SCOL_MEV_CM = np.array([20.2, 8.95, 4.07, 2.35, 1.91, 1.97, 2.17, 2.33, 2.48, 2.70, 2.90])
#: f(T) = S_rad(ESTAR) / (E/X0): the brems rate correction.
BREMS_F_KE_MEV = np.array([0.5, 1, 2, 5, 10, 20, 30, 50, 100, 200, 500, 1000, 1e4])
BREMS_F = np.array([0.31, 0.36, 0.44, 0.57, 0.67, 0.76, 0.80, 0.85, 0.90, 0.93, 0.96, 0.98, 1.0])
BREMS_PHOTON_CUT_MEV = 0.1
ELECTRON_STEP_CM = 0.1
ELECTRON_TRACKING_CUT_MEV = 1.0

# --- photons (spec §4) --------------------------------------------------------------------------
PHOTON_LAMBDA_E_MEV = np.array([0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 1e5])
PHOTON_LAMBDA_CM = np.array(
    [3.2, 5.4, 9.1, 12.5, 17.7, 25.6, 29.3, 29.3, 26.1, 23.5, 21.5, 19.6, 18.8, 18.0]
)
PAIR_FRACTION_E_MEV = np.array([1.022, 2.0, 5, 10, 20, 50, 100, 1000, 1e5])
PAIR_FRACTION = np.array([0.0, 0.03, 0.20, 0.43, 0.66, 0.86, 0.93, 0.99, 1.0])
PHOTON_POINT_DEPOSIT_MEV = 0.05

# --- voxelization (spec §6) ---------------------------------------------------------------------
VOXEL_CM = 0.3
DEPOSIT_SPACING_CM = 0.05
