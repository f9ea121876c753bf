"""Michel reconstruction on hand-built events, and its metrics on hand-computed matches."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis_lib.cli import main
from analysis_lib.core.errors import DataError
from analysis_lib.core.labels import VoxelClass
from analysis_lib.data import Event, ImageMeta
from analysis_lib.evaluation.michel import (
    attach_scan,
    find_michels,
    match_event,
    relabeled_truth,
    summarize,
    track_end_profile,
    true_michels,
)

MIP, MICHEL, SHOWER = VoxelClass.MIP, VoxelClass.MICHEL, VoxelClass.SHOWER


def segment(start, direction, length: int) -> np.ndarray:
    """Voxels of a straight tube, 3 voxels thick like a smeared track, of ``length`` steps
    from ``start`` along an axis-aligned ``direction``."""
    direction = np.asarray(direction)
    steps = np.asarray(start)[None, :] + np.arange(length)[:, None] * direction[None, :]
    across = [a for a in range(len(direction)) if direction[a] == 0]
    shifts = np.array(np.meshgrid(*[[-1, 0, 1]] * len(across))).reshape(len(across), -1).T
    offsets = np.zeros((len(shifts), len(direction)), np.int64)
    offsets[:, across] = shifts
    return np.unique((steps[:, None, :] + offsets[None]).reshape(-1, len(direction)), axis=0)


def event_of(*parts: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    """(coords, labels) of labelled voxel groups."""
    coords = np.concatenate([c for c, _ in parts]).astype(np.int64)
    labels = np.concatenate([np.full(len(c), label) for c, label in parts])
    return coords, labels


def muon_with_michel(y: int, at: int = 59) -> list[tuple[np.ndarray, int]]:
    """A 60-voxel MIP track along x at height ``y``, a Michel leaving it at x = ``at``."""
    track = segment((0, y, 20), (1, 0, 0), 60)
    michel = segment((at, y + 2, 20), (0, 1, 0), 12)
    return [(track, MIP), (michel, MICHEL)]


def test_michel_at_the_end_of_a_track_is_one_candidate():
    coords, labels = event_of(*muon_with_michel(10))
    (found,) = find_michels(coords, labels)
    assert set(found) == set(np.flatnonzero(labels == MICHEL))


def test_michel_at_the_middle_of_a_track_is_none():
    coords, labels = event_of(*muon_with_michel(10, at=30))
    assert find_michels(coords, labels) == []


def test_detached_michel_is_none():
    track = segment((0, 10, 20), (1, 0, 0), 60)
    blob = segment((64, 14, 20), (0, 1, 0), 12)
    coords, labels = event_of((track, MIP), (blob, MICHEL))
    assert find_michels(coords, labels) == []


def test_two_muons_with_end_michels_give_two():
    coords, labels = event_of(*muon_with_michel(10), *muon_with_michel(60))
    found = find_michels(coords, labels)
    assert len(found) == 2
    assert sorted(len(f) for f in found) == [12 * 9, 12 * 9]


def test_attach_distance_is_a_parameter():
    track = segment((0, 10, 20), (1, 0, 0), 60)
    michel = segment((61, 10, 20), (1, 0, 0), 12)  # one empty plane after the track's end
    coords, labels = event_of((track, MIP), (michel, MICHEL))
    assert len(find_michels(coords, labels)) == 1
    assert find_michels(coords, labels, attach_distance=1.5) == []


def test_short_track_within_edge_radius_counts_as_an_end():
    track = segment((0, 10, 20), (1, 0, 0), 12)
    michel = segment((11, 12, 20), (0, 1, 0), 12)
    coords, labels = event_of((track, MIP), (michel, MICHEL))
    assert len(find_michels(coords, labels)) == 1


def test_works_in_2d():
    track = segment((0, 10), (1, 0), 60)
    michel = segment((59, 12), (0, 1), 12)
    coords, labels = event_of((track, MIP), (michel, MICHEL))
    assert len(find_michels(coords, labels)) == 1


@pytest.mark.parametrize(
    "parts",
    [
        [],
        [(segment((0, 0, 0), (1, 0, 0), 30), MICHEL)],
        [(segment((0, 0, 0), (1, 0, 0), 30), MIP)],
        [(segment((0, 0, 0), (1, 0, 0), 30), SHOWER)],
        [(segment((0, 0, 0), (1, 0, 0), 3), MIP), (segment((5, 5, 5), (1, 0, 0), 3), MICHEL)],
    ],
    ids=["empty", "no_mip", "no_michel", "one_class", "too_few_to_cluster"],
)
def test_degenerate_events_give_no_candidates(parts):
    coords, labels = event_of(*parts) if parts else (np.zeros((0, 3), int), np.zeros(0, int))
    assert find_michels(coords, labels) == []


@pytest.mark.parametrize(
    ("coords", "labels", "message"),
    [
        (np.zeros((4,), int), np.zeros(4, int), "coords must be"),
        (np.zeros((4, 5), int), np.zeros(4, int), "coords must be"),
        (np.zeros((4, 3), int), np.zeros(3, int), "labels must be"),
    ],
)
def test_bad_input_is_a_clear_error(coords, labels, message):
    with pytest.raises(DataError, match=message):
        find_michels(coords, labels)


def _event(coords, label, prim_ion, particle_index) -> Event:
    meta = ImageMeta((128, 128, 128), (0.3, 0.3, 0.3), (0.0, 0.0, 0.0))
    return Event(coords.astype(np.int64), np.ones(len(coords), np.float32), label, meta, 7,
                 prim_ion=prim_ion, particle_index=particle_index)


def test_truth_groups_by_particle_and_keeps_primary_ionization():
    coords, labels = event_of(*muon_with_michel(10), *muon_with_michel(60))
    prim_ion = np.ones(len(coords), np.int64)
    michel = np.flatnonzero(labels == MICHEL)
    half = len(michel) // 2
    prim_ion[michel[-3:]] = 0  # a bremsstrahlung tail of the second electron
    owner = np.zeros(len(coords), np.int64)
    owner[michel[:half]], owner[michel[half:]] = 1, 2
    event = _event(coords, labels, prim_ion, owner)
    regular = true_michels(event, relabeled=False)
    assert [len(t) for t in regular] == [half, half]
    assert [len(t) for t in true_michels(event)] == [half, half - 3]


def test_match_and_summary_by_hand():
    # Truth: one Michel, the first electron (12 steps of 9 voxels). The network calls its
    # last 4 steps MIP, and calls the second muon's shower (drawn like an electron) Michel.
    coords, labels = event_of(*muon_with_michel(10), *muon_with_michel(60))
    michel = np.flatnonzero(labels == MICHEL)
    first = michel[coords[michel, 1] < 60]
    truth_labels = labels.copy()
    truth_labels[michel[coords[michel, 1] >= 60]] = SHOWER
    pred = labels.copy()
    pred[first[coords[first, 1] >= 10 + 2 + 8]] = MIP
    owner = np.zeros(len(coords), np.int64)
    owner[first] = 1
    event = _event(coords, truth_labels, np.ones(len(coords), np.int64), owner)
    rows, truths = match_event(event, pred)
    assert len(truths) == 1 and truths[0]["true_voxels"] == 108
    rows = pd.DataFrame(rows).sort_values("voxels")
    assert rows["voxels"].tolist() == [72, 108]
    assert rows["true_id"].tolist() == [0, -1]
    summary = summarize(rows, pd.DataFrame(truths))
    assert summary.id_purity == pytest.approx(1 / 2)
    assert summary.id_efficiency == pytest.approx(1.0)
    assert summary.cluster_efficiency == pytest.approx(72 / 108)
    assert summary.cluster_purity == pytest.approx(1.0)
    assert summary.column()[:3] == [1, 2, 1]  # Table VI's order: sample, candidates, truths
    cut = summarize(rows, pd.DataFrame(truths), min_voxels=100)
    assert cut.candidates == 1 and cut.sample_size == 0
    assert cut.id_purity == 0.0 and cut.id_efficiency == 0.0
    assert math.isnan(cut.cluster_efficiency) and math.isnan(cut.both_above_95)


def test_attach_scan_measures_each_distance():
    # The Michel starts one empty plane after the track's end: 2 px from its last voxel.
    track = segment((0, 10, 20), (1, 0, 0), 60)
    michel = segment((61, 10, 20), (1, 0, 0), 12)
    coords, labels = event_of((track, MIP), (michel, MICHEL))
    event = _event(coords, labels, np.ones(len(coords), np.int64), (labels == MICHEL) * 1)
    _, truths = match_event(event, labels)
    scan = attach_scan([(event, labels)], pd.DataFrame(truths), [1.5, 2.83])
    assert scan.index.tolist() == [1.5, 2.83]
    assert scan["ID efficiency"].tolist() == [0.0, 1.0]
    assert math.isnan(scan.loc[1.5, "ID purity"]) and scan.loc[2.83, "ID purity"] == 1.0


def test_michel_command_on_true_labels(tiny_sample, capsys):
    assert main(["michel", "--data", str(tiny_sample), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"no cut", ">= 10 voxels"}
    true_count = sum(len(true_michels(e)) for e, _ in relabeled_truth(tiny_sample))
    assert result["no cut"]["true_michels"] == true_count
    no_cut = result["no cut"]
    assert no_cut["sample_size"] <= no_cut["candidates"]
    assert no_cut["candidates"] >= result[">= 10 voxels"]["candidates"]


def test_relabeled_truth_leaves_the_events_labels_regular(tmp_path):
    from analysis_lib.data import open_dataset
    from analysis_lib.data.relabel import relabel
    from analysis_lib.sim import simulate

    sample = simulate(tmp_path / "s.h5", 2, 128, seed=5, workers=1, progress=False)
    with open_dataset(sample) as events:
        regular = [e.label.copy() for e in events]
    changed = 0
    for (event, truth), label in zip(relabeled_truth(sample), regular, strict=True):
        assert np.array_equal(event.label, label)
        assert np.array_equal(truth, relabel(label, event.prim_ion))
        changed += int((truth != label).sum())
    assert changed > 0  # the sample has voxels that relabeling moves


def test_track_end_profile_by_distance_to_where_the_muon_stops():
    # A muon along x stops at voxel 49 (0.3 cm voxels); the network calls its last 10 voxels
    # HIP. A proton and a muon that leaves the image do not count.
    track = np.stack([np.arange(10, 50), np.full(40, 20), np.full(40, 20)], axis=1)
    exiting = np.stack([np.arange(0, 30), np.full(30, 40), np.full(30, 40)], axis=1)
    coords = np.concatenate([track, exiting])
    label = np.full(len(coords), MIP)
    owner = np.repeat([0, 2], [40, 30])
    pred = label.copy()
    pred[30:40] = VoxelClass.HIP
    pred[40:] = SHOWER
    particles = np.zeros(3, dtype=[("pdg", np.int32), ("end_pt", np.float64, (4,))])
    particles["pdg"] = [13, 2212, -13]
    particles["end_pt"][0, :3] = np.array([49, 20, 20]) * 0.3
    particles["end_pt"][2, :3] = np.array([-5, 40, 40]) * 0.3  # outside the image
    event = _event(coords, label, np.ones(len(coords), np.int64), owner)
    event.particles = particles
    profile = track_end_profile([(event, pred)])
    assert profile.index.tolist() == ["0-5", "5-10", "10-20", "20-40", "40-80", "≥ 80"]
    assert profile["voxels"].tolist() == [5, 5, 10, 20, 0, 0]
    assert profile["HIP"].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert profile.loc["10-20", "MIP"] == 1.0 and profile["EM shower"].sum() == 0.0
