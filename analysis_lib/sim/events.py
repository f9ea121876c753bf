"""Event composition (spec §5): a multi-particle vertex plus isolated "rain" particles."""

import numpy as np

from analysis_lib.sim import ledger as lg
from analysis_lib.sim import libm
from analysis_lib.sim.config import PhysicsConfig

PRIMARY_WIDTH = 9
_LEPTONS = (lg.ELECTRON, lg.MUON_MINUS, lg.MUON_PLUS)
_RAIN_KINDS = (lg.ELECTRON, lg.MUON_MINUS, lg.MUON_PLUS, lg.PROTON)


def _isotropic(rng: np.random.Generator, n: int) -> np.ndarray:
    cost = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    sint = np.sqrt(1.0 - cost**2)
    return np.stack([sint * libm.cos(phi), sint * libm.sin(phi), cost], axis=1)


def _vertex_species(rng: np.random.Generator, n: int, weights: tuple) -> list[int]:
    """Species of the vertex particles: lepton : γ : π± : p by weight, at most one lepton."""
    species = []
    w = np.asarray(weights, float)
    for _ in range(n):
        probs = w / w.sum()
        group = rng.choice(4, p=probs)
        if group == 0:
            species.append(_LEPTONS[rng.integers(3)])
            w = w.copy()
            w[0] = 0.0
        elif group == 1:
            species.append(lg.PHOTON)
        elif group == 2:
            species.append(lg.PION_PLUS if rng.random() < 0.5 else lg.PION_MINUS)
        else:
            species.append(lg.PROTON)
    return species


def sample_primaries(rng: np.random.Generator, size_cm: float, cfg: PhysicsConfig) -> np.ndarray:
    """Primary particles of one event as rows (kind, x, y, z, dx, dy, dz, KE, interaction id).

    Interaction 0 is the vertex (uniform in the image); rain particle k has interaction k + 1 and
    a vertex uniform in the image grown by ``cfg.rain_margin_cm`` on every side.
    """
    n_mpv = int(rng.integers(cfg.mpv_min_particles, cfg.mpv_max_particles + 1))
    kinds = _vertex_species(rng, n_mpv, cfg.mpv_weights)
    vertex = rng.uniform(0.0, size_cm, 3)
    rows = []
    for kind in kinds:
        lo, hi = cfg.mpv_lepton_ke_mev if kind in _LEPTONS else cfg.mpv_other_ke_mev
        rows.append((kind, *vertex, *_isotropic(rng, 1)[0], rng.uniform(lo, hi), 0))
    n_rain = int(rng.integers(cfg.rain_min_particles, cfg.rain_max_particles + 1))
    w = np.asarray(cfg.rain_weights, float)
    m = cfg.rain_margin_cm
    for k in range(n_rain):
        kind = _RAIN_KINDS[rng.choice(4, p=w / w.sum())]
        lo, hi = cfg.rain_proton_ke_mev if kind == lg.PROTON else cfg.rain_ke_mev
        start = rng.uniform(-m, size_cm + m, 3)
        rows.append((kind, *start, *_isotropic(rng, 1)[0], rng.uniform(lo, hi), k + 1))
    return np.array(rows, dtype=np.float64).reshape(-1, PRIMARY_WIDTH)
