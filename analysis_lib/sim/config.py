"""Simulation settings: one frozen dataclass, overridable by keyword with validation."""

import dataclasses
from dataclasses import dataclass, fields

import numpy as np

from analysis_lib.core.errors import ConfigError
from analysis_lib.sim import constants as c
from analysis_lib.sim import ledger as lg

GENERATOR_VERSION = "3"


@dataclass(frozen=True)
class PhysicsConfig:
    """Every tunable of the simulator (physics-spec v1 defaults; lengths in cm, energies in MeV).

    Event composition follows spec §5: a multi-particle vertex (MPV) inside the image plus
    "rain" (MPR) particles with independent vertices in a volume larger than the image.
    """

    smear_sigma_mm: float = 1.27
    threshold_mev: float = 0.01
    heavy_step_cm: float = 0.1
    electron_step_cm: float = c.ELECTRON_STEP_CM
    deposit_spacing_cm: float = c.DEPOSIT_SPACING_CM
    proton_inelastic_length_cm: float = c.NUCLEAR_INTERACTION_LENGTH_CM
    pion_inelastic_length_cm: float = 70.0
    muon_capture_probability: float = c.MUON_CAPTURE_PROBABILITY
    tracking_margin_cm: float = 40.0
    electron_tracking_cut_mev: float = c.ELECTRON_TRACKING_CUT_MEV
    brems_photon_cut_mev: float = c.BREMS_PHOTON_CUT_MEV
    delta_merge_voxels: int = 10
    mpv_min_particles: int = 1
    mpv_max_particles: int = 6
    #: relative weights of lepton (e-, mu-, mu+) : gamma : pi+- : proton in the vertex
    mpv_weights: tuple[float, float, float, float] = (3.0, 1.0, 1.0, 3.0)
    mpv_lepton_ke_mev: tuple[float, float] = (50.0, 800.0)
    mpv_other_ke_mev: tuple[float, float] = (50.0, 400.0)
    rain_min_particles: int = 5
    rain_max_particles: int = 15
    #: relative weights of e- : mu- : mu+ : proton among rain particles
    rain_weights: tuple[float, float, float, float] = (1.2, 0.85, 0.85, 1.6)
    rain_ke_mev: tuple[float, float] = (50.0, 1000.0)
    rain_proton_ke_mev: tuple[float, float] = (50.0, 400.0)
    rain_margin_cm: float = 30.0

    def __post_init__(self) -> None:
        positive = (
            "heavy_step_cm",
            "electron_step_cm",
            "deposit_spacing_cm",
            "proton_inelastic_length_cm",
            "pion_inelastic_length_cm",
            "electron_tracking_cut_mev",
            "brems_photon_cut_mev",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be > 0")
        for name in ("smear_sigma_mm", "threshold_mev", "tracking_margin_cm", "rain_margin_cm"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 0")
        if not 0.0 <= self.muon_capture_probability <= 1.0:
            raise ConfigError(
                f"muon_capture_probability={self.muon_capture_probability} must lie in [0, 1]"
            )
        if self.rain_margin_cm > self.tracking_margin_cm:
            raise ConfigError(
                f"rain_margin_cm={self.rain_margin_cm} exceeds tracking_margin_cm="
                f"{self.tracking_margin_cm}: rain would be dropped before it starts"
            )
        for lo, hi in (
            ("mpv_min_particles", "mpv_max_particles"),
            ("rain_min_particles", "rain_max_particles"),
        ):
            if not 0 <= getattr(self, lo) <= getattr(self, hi):
                raise ConfigError(
                    f"need 0 <= {lo} <= {hi}, got {getattr(self, lo)}, {getattr(self, hi)}"
                )

    def with_overrides(self, **overrides: object) -> "PhysicsConfig":
        """A copy with some settings changed; an unknown name is a ConfigError listing the valid."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown physics override(s) {unknown}; valid: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def engine_settings(self) -> np.ndarray:
        """The settings vector of :func:`analysis_lib.sim.transport.transport`."""
        q = np.empty(lg.SETTINGS_WIDTH)
        q[lg.Q_STEP_HEAVY] = self.heavy_step_cm
        q[lg.Q_STEP_E] = self.electron_step_cm
        q[lg.Q_SPACING] = self.deposit_spacing_cm
        q[lg.Q_LAMBDA_P] = self.proton_inelastic_length_cm
        q[lg.Q_LAMBDA_PI] = self.pion_inelastic_length_cm
        q[lg.Q_CAPTURE] = self.muon_capture_probability
        q[lg.Q_MARGIN] = self.tracking_margin_cm
        q[lg.Q_ECUT] = self.electron_tracking_cut_mev
        q[lg.Q_KCUT] = self.brems_photon_cut_mev
        return q
