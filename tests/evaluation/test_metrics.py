"""The study's metrics on hand-computed cases."""

import dataclasses
import json

import numpy as np
import pytest

from analysis_lib.core.errors import DataError
from analysis_lib.core.labels import CLASS_NAMES
from analysis_lib.evaluation.metrics import (
    Evaluation,
    SampleMetrics,
    boundary_distance,
    classwise_accuracy,
    confusion_matrix,
    misclassified_by_distance,
    misclassified_fraction_table,
    mistake_pairs,
    near_and_far_mistakes,
    near_and_far_table,
    nonzero_accuracy,
    predicted_class_softmax,
    probe_summary,
    running_mean,
    shower_score_spread,
)


def test_nonzero_accuracy():
    assert nonzero_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75


def test_classwise_accuracy_is_nan_for_absent_classes():
    got = classwise_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]))
    np.testing.assert_array_equal(got[:3], [1.0, 0.5, 1.0])
    assert np.isnan(got[3]) and np.isnan(got[4])


def test_confusion_rows_are_true_classes():
    cm = confusion_matrix(np.array([0, 2, 2]), np.array([0, 1, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]


def test_softmax_of_predicted_class():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    np.testing.assert_array_equal(predicted_class_softmax(probs, probs.argmax(1), 0), [0.7, 0.6])


def test_sample_summary_averages_classwise_over_events_where_present():
    m = SampleMetrics(num_classes=3)
    m.update(np.array([0, 0, 1]), np.array([0, 1, 1]))  # acc 2/3; class0 1, class1 0.5
    m.update(np.array([2, 2]), np.array([2, 0]))  # acc 1/2; class0 0, class2 1
    s = m.summary()
    assert s.n_events == 2 and s.n_unlabeled == 0 and s.test_set is None
    assert s.nonzero_accuracy == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s.nonzero_accuracy_std == pytest.approx(np.std([2 / 3, 1 / 2]))
    assert s.classwise_accuracy == (pytest.approx(0.5), pytest.approx(0.5), 1.0)
    assert s.classwise_events == (2, 1, 1)
    assert s.confusion_matrix == ((1, 0, 1), (1, 1, 0), (0, 0, 1))
    # standard errors: std over the events / sqrt(events), per class over the events with it
    assert s.nonzero_accuracy_sem == pytest.approx(np.std([2 / 3, 1 / 2]) / np.sqrt(2))
    assert s.nonzero_accuracy_per_event == (pytest.approx(2 / 3), 0.5)
    assert s.classwise_accuracy_sem == (pytest.approx(0.5 / np.sqrt(2)), 0.0, 0.0)
    assert list(s.to_frame().index) == ["class 0", "class 1", "class 2", "nonzero"]


def test_evaluation_reads_back_from_json_and_tabulates():
    m = SampleMetrics()
    m.update(np.array([0, 1, 1, 4]), np.array([0, 1, 2, 4]))
    s = m.summary().on("test set")
    back = Evaluation.from_record(json.loads(json.dumps(dataclasses.asdict(s))))
    assert back == s and back.test_set == "test set"
    frame = s.to_frame()
    assert list(frame.index) == [*CLASS_NAMES, "nonzero"]
    assert frame.loc["EM shower", "accuracy"] == 0.0 and frame.loc["nonzero", "accuracy"] == 0.75
    assert np.isnan(frame.loc["Delta ray", "accuracy"]) and frame.loc["Delta ray", "events"] == 0
    with pytest.raises(DataError, match=r"unknown fields \['accuracy'\]"):
        Evaluation.from_record({**dataclasses.asdict(s), "accuracy": 1.0})
    with pytest.raises(DataError, match=r"missing fields \['n_events'\]"):
        Evaluation.from_record({k: v for k, v in dataclasses.asdict(s).items() if k != "n_events"})


def test_empty_sample_has_no_accuracy():
    s = SampleMetrics().summary()
    assert s.n_events == 0 and s.nonzero_accuracy is None
    assert s.classwise_accuracy == (None,) * 5


def test_running_mean_skips_nan():
    got = running_mean(np.array([1.0, np.nan, 3.0, 5.0]), 2)
    np.testing.assert_allclose(got, [1.0, 3.0, 4.0])
    assert np.isnan(running_mean(np.array([np.nan, np.nan]), 2)[0])
    assert running_mean(np.ones(3), 5).shape == (0,)


def test_boundary_distance_and_near_far_counts():
    coords = np.array([[0, 5], [5, 5], [9, 2], [4, 4]])
    distance = boundary_distance(coords, 10)
    np.testing.assert_array_equal(distance, [0, 4, 0, 4])
    labels, wrong = np.array([0, 0, 1, 0]), np.array([True, False, False, True])
    rows = near_and_far_mistakes(distance, labels, wrong, near=2, far=3, num_classes=2)
    assert rows[0] == {"near_total": 1, "near_wrong": 1, "far_total": 2, "far_wrong": 1}
    assert rows[1] == {"near_total": 1, "near_wrong": 0, "far_total": 0, "far_wrong": 0}
    total, mistaken = misclassified_by_distance(distance, labels, wrong, np.array([0, 2, 5]), 2)
    np.testing.assert_array_equal(total, [[1, 2], [1, 0]])
    np.testing.assert_array_equal(mistaken, [[1, 1], [0, 0]])


def test_near_and_far_table_gives_fractions_and_counts_per_class():
    rows = [{"near_total": 4, "near_wrong": 1, "far_total": 10, "far_wrong": 0}] + [
        {"near_total": 0, "near_wrong": 0, "far_total": 5, "far_wrong": 5}] * 4
    table = near_and_far_table(rows, near=2, far=3)
    assert list(table.columns) == ["misclassified, d < 2", "misclassified, d ≥ 3",
                                   "voxels, d < 2", "voxels, d ≥ 3"]
    assert table.loc["HIP"].tolist() == [0.25, 0.0, 4, 10]
    assert table.loc["Michel e-"].tolist() == [0.0, 1.0, 0, 5]


def test_misclassified_fraction_table_rows_are_distance_bins():
    table = misclassified_fraction_table(np.arange(10.0).reshape(5, 2) / 10, np.array([0, 4, 8]))
    assert list(table.index) == ["0-4", "4-8"]
    assert table["MIP"].tolist() == [0.2, 0.3]


def test_shower_score_spread_is_over_voxels_predicted_shower():
    probs = np.array([[0.1, 0.1, 0.6, 0.1, 0.1], [0.0, 0.2, 0.8, 0.0, 0.0],
                      [0.9, 0.0, 0.1, 0.0, 0.0]])
    pred = probs.argmax(1)
    assert shower_score_spread(probs, pred) == pytest.approx(0.1)  # std of 0.6 and 0.8
    assert np.isnan(shower_score_spread(probs[1:], pred[1:]))


def test_probe_summary_one_row_per_network_and_iteration():
    shot = {"probs": np.array([[0.1, 0.1, 0.6, 0.1, 0.1], [0.0, 0.2, 0.8, 0.0, 0.0]]),
            "label": np.array([2, 1])}
    table = probe_summary({"sparse": {10: shot, 40: shot}, "dense": {10: shot}})
    assert list(table.index) == [("sparse", 10), ("sparse", 40), ("dense", 10)]
    assert table.loc[("dense", 10), "probe accuracy"] == 0.5
    assert table.loc[("sparse", 40), "std of shower score (predicted shower)"] == (
        pytest.approx(0.1))


def test_mistake_pairs_counts_confusions_most_common_first():
    label = np.array([1, 1, 1, 4, 2, 0])
    pred = np.array([2, 2, 1, 3, 2, 2])
    assert mistake_pairs(pred, label, top=2) == "MIP → EM shower (2), Michel e- → Delta ray (1)"
    assert mistake_pairs(label, label) == ""
