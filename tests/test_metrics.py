"""The study's metrics on hand-computed cases."""

import numpy as np
import pytest

from analysis_lib.metrics import (
    SampleMetrics,
    boundary_distance,
    classwise_accuracy,
    confusion_matrix,
    misclassified_by_distance,
    near_and_far_mistakes,
    nonzero_accuracy,
    predicted_class_softmax,
    running_mean,
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
    assert s["n_events"] == 2
    assert s["nonzero_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s["nonzero_accuracy_std"] == pytest.approx(np.std([2 / 3, 1 / 2]))
    assert s["classwise_accuracy"] == [pytest.approx(0.5), pytest.approx(0.5), 1.0]
    assert s["classwise_events"] == [2, 1, 1]
    assert s["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    # standard errors: std over the events / sqrt(events), per class over the events with it
    assert s["nonzero_accuracy_sem"] == pytest.approx(np.std([2 / 3, 1 / 2]) / np.sqrt(2))
    assert s["nonzero_accuracy_per_event"] == [pytest.approx(2 / 3), 0.5]
    assert s["classwise_accuracy_sem"] == [pytest.approx(0.5 / np.sqrt(2)), 0.0, 0.0]


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
