"""Rows 3–11 of the validation checklist (physics-spec v1, §7): single particles transported
from a fixed seed and measured against the spec's bands (row 8 also reads an event sample's
labels). :mod:`analysis_lib.sim.validation` runs them with the rows that need whole events.
"""

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import curve_fit
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import gammaln

from analysis_lib.core.labels import VoxelClass
from analysis_lib.sim import constants as c
from analysis_lib.sim import ledger as lg
from analysis_lib.sim import transport as tr
from analysis_lib.sim.checks import HOLDS, Check, Measured
from analysis_lib.sim.config import PhysicsConfig
from analysis_lib.sim.simulate import simulate_primaries
from analysis_lib.sim.tables import TABLES, Row, lookup

_FAR = 1e5  # cm: a box edge nothing reaches


def _shoot(
    kind: int,
    ke_mev: float | Sequence[float],
    n: int,
    seed: int,
    cfg: PhysicsConfig,
    box_cm: float = _FAR,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Transport ``n`` single particles from the centre of a cube of side ``box_cm`` along +x."""
    rng = np.random.default_rng(seed)
    q = cfg.engine_settings()
    lo, hi = np.full(3, -box_cm / 2), np.full(3, box_cm / 2)
    energies = np.broadcast_to(np.asarray(ke_mev, float), (n,))
    out = []
    for ke in energies:
        primary = np.array([[kind, 0, 0, 0, 1, 0, 0, ke, 0]], float)
        out.append(tr.transport(primary, TABLES, q, lo, hi, rng))
    return out


def _no_hadronic(cfg: PhysicsConfig) -> PhysicsConfig:
    return cfg.with_overrides(proton_inelastic_length_cm=1e12, pion_inelastic_length_cm=1e12)


def row_mip_slab(cfg: PhysicsConfig, n: int = 200, seed: int = 3) -> Check:
    """Row 3: energy lost by 0.3–1 GeV muons per 1 cm slab (continuous loss and all δ-rays)."""
    rng = np.random.default_rng(seed)
    slabs = []
    for dep, table in _shoot(lg.MUON_MINUS, rng.uniform(300, 1000, n), n, seed, cfg, box_cm=60):
        roots = table[dep[:, lg.D_OWNER].astype(int), lg.T_ROOT]
        dep = dep[roots == 0]
        # bin every deposit of the muon and its descendants by the emission depth of its owner
        owner = dep[:, lg.D_OWNER].astype(int)
        depth = np.where(owner == 0, dep[:, lg.D_X], table[owner, lg.T_X0])
        inside = (depth >= 0) & (depth < 25)
        slabs.append(
            np.bincount(depth[inside].astype(int), weights=dep[inside, lg.D_E], minlength=25)[:25]
        )
    per_cm = np.concatenate(slabs)
    hist, edges = np.histogram(per_cm, bins=np.arange(1.0, 3.0, 0.02))
    smooth = gaussian_filter1d(hist.astype(float), 2)
    mpv = float(edges[np.argmax(smooth)] + 0.01)
    mean = float(per_cm.mean())
    return Check(
        3,
        "MIP energy per 1 cm slab (μ, 0.3–1 GeV), MeV/cm",
        "MPV 1.73±0.10; mean 2.0–2.3",
        (Measured("MPV", mpv, 1.63, 1.83, ".2f"), Measured("mean", mean, 2.0, 2.3, ".2f")),
        {"energy_per_cm": per_cm, "mpv": mpv, "mean": mean},
    )


def _bragg_points(
    kind: int, ke: float, n: int, seed: int, cfg: PhysicsConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Mean dE/dx (MeV/cm) of a stopping track's own deposits in 1 cm bins of residual range."""
    edges = np.arange(1.0, 31.0)
    sums = np.zeros(len(edges) - 1)
    for dep, table in _shoot(kind, ke, n, seed, _no_hadronic(cfg)):
        own = dep[dep[:, lg.D_OWNER] == 0]
        end = table[0, [lg.T_X1, lg.T_Y1, lg.T_Z1]]
        residual = np.linalg.norm(own[:, :3] - end, axis=1)
        sums += np.histogram(residual, bins=edges, weights=own[:, lg.D_E])[0]
    return 0.5 * (edges[1:] + edges[:-1]), sums / n


def row_bragg(cfg: PhysicsConfig, n: int = 40, seed: int = 4) -> Check:
    """Row 4: dE/dx = A·R^b fit of stopping protons; muon A at b = −0.42 (R = 1–30 cm)."""
    r, dedx = _bragg_points(lg.PROTON, 260.0, n, seed, cfg)
    b, log_a = np.polyfit(np.log(r), np.log(dedx), 1)
    r_mu, dedx_mu = _bragg_points(lg.MUON_MINUS, 150.0, n, seed + 1, cfg)
    a_mu = float(np.exp(np.mean(np.log(dedx_mu) + 0.42 * np.log(r_mu))))
    a = float(np.exp(log_a))
    return Check(
        4,
        "Bragg fit dE/dx = A·R^b, R = 1–30 cm",
        "p: b = −0.42±0.03, A = 17.4±1.0 MeV/cm; μ: A = 7.7±0.7",
        (Measured("p: b", float(b), -0.45, -0.39, ".3f"), Measured("p: A", a, 16.4, 18.4, ".2f"),
         Measured("μ: A", a_mu, 7.0, 8.4, ".2f")),
        {"residual_range_cm": r, "proton_dedx": dedx, "muon_dedx": dedx_mu,
         "proton_fit": (a, b), "muon_a": a_mu},
    )


def row_track_length(cfg: PhysicsConfig, n: int = 30, seed: int = 5) -> Check:
    """Row 5: mean path length of stopping μ and p against the spec's CSDA table."""
    worst = 0.0
    parts = []
    for kind, pdg, energies in (
        (lg.MUON_MINUS, c.PDG_MUON_MINUS, (50, 100, 300, 1000)),
        (lg.PROTON, c.PDG_PROTON, (50, 100, 200, 400)),
    ):
        table_ke, table_r = c.RANGE_TABLE_KE_MEV[pdg], c.RANGE_TABLE_CM[pdg]
        for ke in energies:
            runs = _shoot(kind, float(ke), n, seed, _no_hadronic(cfg))
            length = np.mean([t[0, lg.T_LENGTH] for _, t in runs])
            expected = float(table_r[np.searchsorted(table_ke, ke)])
            worst = max(worst, abs(length / expected - 1))
        parts.append(f"{'μ' if kind == lg.MUON_MINUS else 'p'} {energies[0]}–{energies[-1]} MeV")
    return Check(
        5,
        "stopping-track length vs T0 (" + ", ".join(parts) + ")",
        "within 3% of the CSDA table",
        (Measured("worst deviation", worst, 0.0, 0.03, ".1%"),),
    )


def _michels(kind: int, n: int, seed: int, cfg: PhysicsConfig):
    """Rows of Michel electrons and all runs for ``n`` stopping muons of 100 MeV."""
    runs = _shoot(kind, 100.0, n, seed, cfg)
    rows = [
        (dep, t, np.flatnonzero((t[:, lg.T_SEM] == lg.MICHEL) & (t[:, lg.T_PARENT] >= 0)))
        for dep, t in runs
    ]
    return rows


def row_michel_spectrum(cfg: PhysicsConfig, n: int = 2000, seed: int = 6) -> Check:
    """Row 6: Michel total-energy spectrum and yields per stopping μ+ and μ−."""
    plus = _michels(lg.MUON_PLUS, n, seed, cfg)
    minus = _michels(lg.MUON_MINUS, n, seed + 1, cfg)
    energies = np.array([t[i, lg.T_KE] + c.ELECTRON_MASS_MEV for _, t, idx in plus for i in idx])
    yield_plus = sum(len(i) for *_, i in plus) / n
    yield_minus = sum(len(i) for *_, i in minus) / n
    mean, top = float(energies.mean()), float(energies.max())
    return Check(
        6,
        "Michel true energy; yield per stopping μ+ / μ−",
        "endpoint 52.8 MeV, mean 37.0±0.5; 1.00 / 0.26±0.02",
        (Measured("max", top, 52.0, c.MICHEL_ENDPOINT_MEV, ".1f"),
         Measured("mean", mean, 36.5, 37.5, ".2f"),
         Measured("μ+ yield", yield_plus, *HOLDS, ".2f"),
         Measured("μ− yield", yield_minus, 0.24, 0.28, ".3f")),
        {"michel_total_energy_mev": energies},
    )


def row_michel_primary_share(cfg: PhysicsConfig, n: int = 300, seed: int = 7) -> Check:
    """Row 7: share of a Michel family's deposit on its own ionization; contiguity of the
    Michel-labelled voxels with the muon's end in the voxelized image."""
    shares, touching = [], []
    size = 128
    centre = size * c.VOXEL_CM / 2
    rng = np.random.default_rng(seed)
    for _ in range(n):
        primary = np.array([[lg.MUON_PLUS, centre, centre, centre, 1, 0, 0, 30.0, 0]], float)
        event = simulate_primaries(rng, primary, size, cfg, keep_deposits=True)
        dep, table = event.deposits, event.table
        michel = np.flatnonzero(table[:, lg.T_SEM] == lg.MICHEL)[0]
        fam = dep[dep[:, lg.D_OWNER] == michel]
        shares.append(fam[fam[:, lg.D_PRIM] == 1, lg.D_E].sum() / fam[:, lg.D_E].sum())
        v = event.voxels
        mine = v.coords[(v.owner == michel) & (v.prim_ion == 1)]
        muon = v.coords[v.owner == 0]
        if len(mine) and len(muon):
            gap = np.abs(mine[:, None, :] - muon[None, :, :]).max(axis=2).min()
            touching.append(gap <= 1)
    share = float(np.mean(shares))
    contiguous = float(np.mean(touching))
    return Check(
        7,
        "Michel primary-ionization share of deposit; Michel voxels at the μ end",
        "0.71±0.04; contiguous",
        (Measured("primary share", share, 0.67, 0.75, ".3f"),
         Measured("touching the μ", contiguous, 0.95, 1.0, ".1%")),
    )


def row_delta_multiplicity(
    cfg: PhysicsConfig, labels: Sequence[np.ndarray], n: int = 8000, seed: int = 8
) -> Check:
    """Row 8: δ-rays per cm above 1/3/5 MeV along 1 GeV muons; delta/MIP voxel ratio."""
    cfg = _no_hadronic(cfg).with_overrides(tracking_margin_cm=0.0, rain_margin_cm=0.0)
    runs = _shoot(lg.MUON_MINUS, 1000.0, n, seed, cfg, box_cm=40.0)
    energies = np.concatenate(
        [
            t[(t[:, lg.T_PARENT] == 0) & (t[:, lg.T_PROCESS] == lg.P_MUIONI), lg.T_KE]
            for _, t in runs
        ]
    )
    path_cm = sum(t[0, lg.T_LENGTH] for _, t in runs)
    per_cm = [float(np.sum(energies >= k)) / path_cm for k in (1.0, 3.0, 5.0)]
    expected = (0.092, 0.028, 0.016)
    counts = np.bincount(np.concatenate(labels), minlength=5)
    ratio = counts[VoxelClass.DELTA] / counts[VoxelClass.MIP]
    return Check(
        8,
        "δ-rays per cm of a 1 GeV μ above 1/3/5 MeV; delta/MIP voxel ratio",
        "0.092/0.028/0.016 ±10% (finite T_max); 2–7%",
        (*(Measured(f"> {k} MeV", v, 0.9 * e, 1.1 * e, ".3f")
           for k, v, e in zip((1, 3, 5), per_cm, expected, strict=True)),
         Measured("delta/MIP", float(ratio), 0.02, 0.07, ".1%")),
    )


def row_photon_gap(cfg: PhysicsConfig, n: int = 10000, seed: int = 9) -> Check:
    """Row 9: distance from a photon's start to its first deposit, against λ(E)."""
    worst = 0.0
    for energy in (1.0, 10.0, 100.0):
        first = [
            np.linalg.norm(t[0, [lg.T_X1, lg.T_Y1, lg.T_Z1]])
            for _, t in _shoot(lg.PHOTON, energy, n, seed, cfg)
        ]
        worst = max(worst, abs(np.mean(first) / float(lookup(Row.LAMBDA_PHOTON, energy)) - 1))
    return Check(
        9,
        "γ first-deposit distance (1, 10, 100 MeV)",
        "mean λ(E) ±5%",
        (Measured("worst deviation", float(worst), 0.0, 0.05, ".1%"),),
    )


def _fragments(coords: np.ndarray) -> int:
    """Number of 26-connected components of a voxel set."""
    if len(coords) == 0:
        return 0
    keys = {tuple(p): i for i, p in enumerate(coords.tolist())}
    rows, cols = [], []
    for i, p in enumerate(coords.tolist()):
        for d in np.ndindex(3, 3, 3):
            j = keys.get((p[0] + d[0] - 1, p[1] + d[1] - 1, p[2] + d[2] - 1))
            if j is not None:
                rows.append(i)
                cols.append(j)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(coords),) * 2)
    return connected_components(graph, directed=False)[0]


def _longitudinal_t_max(depth_x0: np.ndarray, profile: np.ndarray) -> float:
    """t_max = (a − 1)/b of the Longo gamma function dE/dt ∝ (bt)^(a−1) e^(−bt) fitted to a
    mean longitudinal profile."""

    def longo(t, e0, a, b):
        return e0 * b * np.exp((a - 1) * np.log(np.maximum(b * t, 1e-12)) - b * t - gammaln(a))

    (_, a, b), _ = curve_fit(
        longo,
        depth_x0,
        profile,
        p0=(profile.sum(), 3.0, 0.5),
        bounds=((0, 1.0, 0.05), (np.inf, 20.0, 2.0)),
    )
    return float((a - 1) / b)


def row_shower_profile(cfg: PhysicsConfig, n: int = 30, seed: int = 10) -> Check:
    """Row 10: shower maximum against Longo, containment in an R_M cylinder, fragments."""
    rng = np.random.default_rng(seed)
    size = 512
    start = np.array([10.0, size * c.VOXEL_CM / 2, size * c.VOXEL_CM / 2])
    edges = np.arange(0.0, 15.0, 0.25)
    centres = 0.5 * (edges[1:] + edges[:-1])
    t_max, contained, fragments, expected = [], [], [], []
    for energy in (300.0, 1000.0):
        profile = np.zeros(len(centres))
        for _ in range(n):
            primary = np.array([[lg.ELECTRON, *start, 1, 0, 0, energy, 0]], float)
            ev = simulate_primaries(rng, primary, size, cfg, keep_deposits=True)
            dep = ev.deposits
            depth = (dep[:, 0] - start[0]) / c.RADIATION_LENGTH_CM
            radius = np.linalg.norm(dep[:, 1:3] - start[1:], axis=1)
            profile += np.histogram(depth, bins=edges, weights=dep[:, lg.D_E])[0]
            contained.append(
                dep[radius <= c.MOLIERE_RADIUS_CM, lg.D_E].sum() / dep[:, lg.D_E].sum()
            )
            fragments.append(_fragments(ev.voxels.coords))
        t_max.append(_longitudinal_t_max(centres, profile / n))
        expected.append(np.log(energy / c.CRITICAL_ENERGY_MEV) - 0.5)
    return Check(
        10,
        "e⁻ shower t_max (0.3, 1 GeV), energy within R_M, fragments per shower",
        f"t_max {expected[0]:.2f}, {expected[1]:.2f} X0 ±0.5; 85–90%; >1",
        (*(Measured(f"t_max {e:.0f} MeV (X0)", float(t), x - 0.5, x + 0.5, ".2f")
           for e, t, x in zip((300, 1000), t_max, expected, strict=True)),
         Measured("within R_M", float(np.mean(contained)), 0.85, 0.90, ".1%"),
         Measured("fragments", float(np.mean(fragments)), math.nextafter(1.0, 2.0), math.inf,
                  ".1f")),
    )


def _mip_voxels_per_cm(cfg: PhysicsConfig, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    size = 64
    centre = size * c.VOXEL_CM / 2
    per_cm = []
    for _ in range(n):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        primary = np.array([[lg.MUON_MINUS, centre, centre, centre, *d, 1000.0, 0]], float)
        ev = simulate_primaries(rng, primary, size, cfg)
        exit_cm = np.min(
            np.where(
                d > 0, (2 * centre - centre) / np.maximum(d, 1e-12), centre / np.maximum(-d, 1e-12)
            )
        )
        # stop short of the faces so voxels cut by the border do not bias the count
        coords_cm = (ev.voxels.coords + 0.5) * c.VOXEL_CM - centre
        along = coords_cm @ d
        own = (ev.voxels.owner == 0) & (along > 1.0) & (along < exit_cm - 1.0)
        per_cm.append(own.sum() / (exit_cm - 2.0))
    return float(np.mean(per_cm))


def row_mip_width(cfg: PhysicsConfig, n: int = 40, seed: int = 11) -> Check:
    """Row 11: voxels per cm of a random-direction muon at σ = 1.27 mm and σ = 3 mm."""
    narrow = _mip_voxels_per_cm(cfg.with_overrides(smear_sigma_mm=1.27), n, seed)
    wide = _mip_voxels_per_cm(cfg.with_overrides(smear_sigma_mm=3.0), n, seed)
    return Check(
        11,
        "MIP voxels per cm (σ = 1.27 mm; σ = 3 mm)",
        "20±3; ≈50",
        (Measured("σ = 1.27 mm", narrow, 17, 23, ".1f"), Measured("σ = 3 mm", wide, 40, 60, ".1f")),
    )
