"""Michel electron reconstruction on a semantic segmentation (the study's Sec. VII).

A candidate is a DBSCAN cluster of Michel voxels that touches the end of a DBSCAN cluster of
MIP voxels (a stopping muon). Candidates are matched to the true Michel clusters of the event,
and the study's identification and clustering efficiency and purity follow from the matches.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from sklearn.cluster import DBSCAN

from analysis_lib.core.errors import DataError
from analysis_lib.core.labels import CLASS_NAMES, NUM_CLASSES, VoxelClass
from analysis_lib.data import Event, open_dataset
from analysis_lib.data.relabel import relabel

#: Largest gap (px) between the nearest voxels of a Michel and a MIP cluster that counts as
#: attached. The study's text says "less than 1 px" (no two voxels are closer than 1 px), its
#: code used 2√2: touching voxels are 1, √2 or √3 apart, and 2√2 also bridges one voxel that
#: the network gave another class at the junction, which a stopping muon's Bragg peak often has.
ATTACH_DISTANCE = 2 * math.sqrt(2)
#: Candidates below this many voxels fail the study's analysis cut.
ANALYSIS_CUT = 10


def _dbscan(points: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN cluster ids (-1: noise) of ``points`` (N, D); an empty set gives no ids."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    return DBSCAN(eps=eps, min_samples=min_samples).fit_predict(points.astype(np.float64))


def _check_input(coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords, labels = np.asarray(coords), np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise DataError(f"coords must be (N, 2) or (N, 3) voxel indices, got shape {coords.shape}")
    if labels.shape != (coords.shape[0],):
        raise DataError(f"labels must be ({coords.shape[0]},) to match coords, got {labels.shape}")
    return coords, labels


def find_michels(
    coords: np.ndarray,
    labels: np.ndarray,
    *,
    eps: float = 2.8,
    min_samples_michel: int = 5,
    min_samples_mip: int = 10,
    attach_distance: float = ATTACH_DISTANCE,
    edge_radius: float = 15.0,
) -> list[np.ndarray]:
    """Michel candidates of one event: one array of indices into ``coords`` per candidate.

    Parameters
    ----------
    coords : (N, D) voxel indices, D = 2 or 3.
    labels : (N,) class per voxel (predicted or true), the study's ids.
    eps, min_samples_michel, min_samples_mip
        DBSCAN radius (px) and core-point counts for the Michel and the MIP voxels.
    attach_distance
        Largest distance (px) between the nearest voxels of a Michel and a MIP cluster.
    edge_radius
        MIP voxels within this distance (px) of the contact point are masked; the contact is
        at the MIP cluster's edge when DBSCAN finds at most one cluster in the rest. (The
        study asks for exactly one; a muon that entered the image less than ``edge_radius``
        before stopping leaves none, and its Michel is just as much at its end.)
    """
    coords, labels = _check_input(coords, labels)
    michel = np.flatnonzero(labels == VoxelClass.MICHEL)
    mip = np.flatnonzero(labels == VoxelClass.MIP)
    michel_ids = _dbscan(coords[michel], eps, min_samples_michel)
    mip_ids = _dbscan(coords[mip], eps, min_samples_mip)
    clustered = mip_ids >= 0
    if not clustered.any() or not (michel_ids >= 0).any():
        return []
    mip_points = coords[mip[clustered]].astype(np.float64)
    mip_ids = mip_ids[clustered]
    tree = cKDTree(mip_points)
    candidates = []
    for cluster in range(michel_ids.max() + 1):
        members = michel[michel_ids == cluster]
        distance, nearest = tree.query(coords[members].astype(np.float64))
        closest = int(np.argmin(distance))
        if distance[closest] > attach_distance:
            continue
        contact = nearest[closest]
        track = mip_points[mip_ids == mip_ids[contact]]
        rest = track[np.linalg.norm(track - mip_points[contact], axis=1) > edge_radius]
        pieces = set(_dbscan(rest, eps, min_samples_mip).tolist()) - {-1}
        if len(pieces) <= 1:
            candidates.append(members)
    return candidates


def true_michels(event: Event, relabeled: bool = True) -> list[np.ndarray]:
    """True Michel clusters of an event: indices into ``event.coords``, one array per electron.

    The voxels labelled Michel (with ``relabeled``, only those of the electron's primary
    ionization) grouped by the particle that deposited them (``particle_index``), or by the
    cluster product of files that have no per-voxel particle index.
    """
    if event.label is None:
        raise DataError(f"event {event.index} has no labels: no Michel truth")
    labels = relabel(event.label, event.prim_ion) if relabeled else event.label
    michel = labels == VoxelClass.MICHEL
    if event.particle_index is not None:
        owner = event.particle_index
    elif event.clusters is not None:
        owner = np.full(len(event.coords), -1, dtype=np.int64)
        for c, members in enumerate(event.clusters):
            owner[members] = c
    else:
        raise DataError("Michel truth needs a per-voxel particle index or a cluster product")
    voxels = np.flatnonzero(michel)
    return [voxels[owner[voxels] == o] for o in np.unique(owner[voxels])]


def _true_kinetic_energy(event: Event, members: np.ndarray) -> float:
    """Kinetic energy (MeV) of the electron that deposited ``members``, NaN if unknown."""
    if event.particles is None or event.particle_index is None:
        return math.nan
    row = event.particles[event.particle_index[members[0]]]
    total = float(row["energy_init"])
    momentum_sq = float(row["px"]) ** 2 + float(row["py"]) ** 2 + float(row["pz"]) ** 2
    return total - math.sqrt(max(total**2 - momentum_sq, 0.0))


def match_event(event: Event, pred: np.ndarray, relabeled: bool = True,
                **find_options: float) -> tuple[list[dict], list[dict]]:
    """Candidates of ``pred`` on ``event`` matched to its true Michels.

    Returns one row per candidate (voxels, energy, the matched true cluster's voxels and the
    overlap; ``true_id`` -1 when it overlaps none; ``labeled`` False for an event without
    labels, whose candidates match nothing) and one row per true Michel (voxels, energy,
    kinetic energy of the electron).
    """
    labeled = event.label is not None
    truths = true_michels(event, relabeled) if labeled else []
    owner = np.full(len(event.coords), -1, dtype=np.int64)
    for t, members in enumerate(truths):
        owner[members] = t
    truth_rows = [{"event": event.index, "true_id": t, "true_voxels": len(members),
                   "true_energy": float(event.energy[members].sum()),
                   "true_kinetic_energy": _true_kinetic_energy(event, members)}
                  for t, members in enumerate(truths)]
    rows = []
    for members in find_michels(event.coords, pred, **find_options):
        hits = np.bincount(owner[members] + 1, minlength=len(truths) + 1)[1:]
        best = int(np.argmax(hits)) if hits.any() else -1
        rows.append({"event": event.index, "labeled": labeled, "voxels": len(members),
                     "energy": float(event.energy[members].sum()), "true_id": best,
                     "overlap": int(hits[best]) if best >= 0 else 0,
                     "true_voxels": len(truths[best]) if best >= 0 else 0})
    return rows, truth_rows


def relabeled_truth(path: str | os.PathLike) -> Iterator[tuple[Event, np.ndarray]]:
    """``(event, relabeled true labels)`` of every event of a file: the input that gives the
    reconstruction's ceiling, a perfect segmentation. The events keep their regular labels."""
    with open_dataset(path) as events:
        for event in events:
            yield event, relabel(event.label, event.prim_ion)


def reconstruct(predictions: Iterable[tuple[Event, np.ndarray]], relabeled: bool = True,
                **find_options: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Candidates and true Michels over a sample of ``(event, predicted classes)`` pairs."""
    candidates, truths = [], []
    for event, pred in predictions:
        rows, truth_rows = match_event(event, pred, relabeled, **find_options)
        candidates += rows
        truths += truth_rows
    columns = ["event", "labeled", "voxels", "energy", "true_id", "overlap", "true_voxels"]
    return pd.DataFrame(candidates, columns=columns), pd.DataFrame(
        truths, columns=["event", "true_id", "true_voxels", "true_energy", "true_kinetic_energy"])


@dataclass(frozen=True)
class MichelSummary:
    """The study's Table VI metrics of one sample; NaN where undefined (no candidate, or no
    true Michel electron)."""

    sample_size: int
    candidates: int
    true_michels: int
    id_purity: float
    id_efficiency: float
    cluster_efficiency: float
    cluster_purity: float
    both_above_95: float

    def column(self) -> list[float]:
        """The values in the order of :data:`TABLE6_ROWS` (the order of the fields)."""
        return list(dataclasses.astuple(self))


#: Table VI's rows, in the study's order: the names of :class:`MichelSummary`'s fields.
TABLE6_ROWS = ("sample size", "candidates", "true Michels", "ID purity", "ID efficiency",
               "cluster efficiency", "cluster purity", "both above 95 %")


#: Distance bins (px) of :func:`track_end_profile`.
END_DISTANCE_EDGES = (0, 5, 10, 20, 40, 80, math.inf)


def track_end_profile(predictions: Iterable[tuple[Event, np.ndarray]], pdg: int = 13,
                      edges: tuple[float, ...] = END_DISTANCE_EDGES) -> pd.DataFrame:
    """How a segmentation labels the true-MIP voxels of particles ``pdg`` (default muons) that
    stop inside a 3D image, by distance (px) to where they stop: a row per distance bin with
    the voxel count and the share predicted as each class. A Michel electron starts at its
    muon's end; where the network calls that end HIP (a stopping muon's Bragg peak looks like a
    proton's) the electron touches no MIP cluster and is no candidate. Events without a
    particle table contribute nothing."""
    counts = np.zeros((len(edges) - 1, NUM_CLASSES), np.int64)
    for event, pred in predictions:
        if (event.particles is None or event.particle_index is None or event.label is None
                or event.coords.shape[1] != 3):
            continue
        size = np.asarray(event.meta.size_px)
        for row, particle in enumerate(event.particles):
            if abs(int(particle["pdg"])) != pdg:
                continue
            end = ((np.asarray(tuple(particle["end_pt"])[:3]) - np.asarray(event.meta.origin_cm))
                   / np.asarray(event.meta.voxel_cm))
            if not ((end >= 0) & (end < size)).all():
                continue
            mine = np.flatnonzero((event.particle_index == row) & (event.label == VoxelClass.MIP))
            distance = np.linalg.norm(event.coords[mine] - end, axis=1)
            bins = np.digitize(distance, edges[1:-1])
            np.add.at(counts, (bins, pred[mine]), 1)
    total = counts.sum(1)
    shares = counts / np.maximum(total, 1)[:, None]
    labels = [f"{a:g}-{b:g}" if math.isfinite(b) else f"≥ {a:g}"
              for a, b in zip(edges[:-1], edges[1:], strict=True)]
    frame = pd.DataFrame(shares, columns=list(CLASS_NAMES), index=labels)
    frame.insert(0, "voxels", total)
    return frame.rename_axis("distance to the end (px)")


def attach_scan(labelled: list[tuple[Event, np.ndarray]], truths: pd.DataFrame,
                distances: Iterable[float]) -> pd.DataFrame:
    """ID efficiency and purity of the candidates found on ``labelled`` (event, classes)
    pairs at each attach distance (px): a row per distance."""
    rows = []
    for distance in distances:
        found, _ = reconstruct(labelled, attach_distance=distance)
        summary = summarize(found, truths)
        rows.append({"attach distance (px)": distance, "ID efficiency": summary.id_efficiency,
                     "ID purity": summary.id_purity})
    return pd.DataFrame(rows).set_index("attach distance (px)")


def summarize(candidates: pd.DataFrame, truths: pd.DataFrame,
              min_voxels: int = 0) -> MichelSummary:
    """The study's Table VI metrics, keeping candidates of at least ``min_voxels`` voxels.

    ID efficiency counts the distinct true Michels that some candidate matches (so it cannot
    exceed 1 when two candidates split one electron); ID purity the matched candidates over all
    candidates. Cluster efficiency N_i/N_i^true and purity N_i/N_i^pred are averaged over the
    matched candidates. Only candidates of labelled events count for the purities
    (``candidates`` counts them all).
    """
    found_all = candidates[candidates["voxels"] >= min_voxels]
    kept = found_all[found_all["labeled"].astype(bool)]
    matched = kept[kept["true_id"] >= 0]
    efficiency = matched["overlap"] / matched["true_voxels"]
    purity = matched["overlap"] / matched["voxels"]
    found = len(matched[["event", "true_id"]].drop_duplicates())
    return MichelSummary(
        sample_size=len(matched),
        candidates=len(found_all),
        true_michels=len(truths),
        id_purity=len(matched) / len(kept) if len(kept) else math.nan,
        id_efficiency=found / len(truths) if len(truths) else math.nan,
        cluster_efficiency=float(efficiency.mean()) if len(matched) else math.nan,
        cluster_purity=float(purity.mean()) if len(matched) else math.nan,
        both_above_95=float(((efficiency > 0.95) & (purity > 0.95)).mean())
        if len(matched) else math.nan,
    )
