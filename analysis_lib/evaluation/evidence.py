"""How a difference counts in the findings: values with standard errors, the tests on them, and
the :class:`Part` of a claim that a chapter's judge returns.

A difference counts only where it exceeds its standard error: over events for accuracies (paired
when both networks scored the same events), and about std / sqrt(2 (n - 1)) for a spread over n
events.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis_lib.evaluation.metrics import Evaluation


@dataclass(frozen=True)
class Part:
    """One tested (or untestable) part of a claim: ``passed`` is None when not testable, with
    ``ours`` saying why; otherwise ``ours`` gives the numbers that decided it."""

    passed: bool | None
    ours: str


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error."""

    value: float
    se: float

    def __sub__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.value - other.value, math.hypot(self.se, other.se))

    def exceeds(self, other: "Estimate") -> bool:
        """Larger than ``other`` by more than the standard error of the difference."""
        diff = self - other
        return diff.value > diff.se

    def __str__(self) -> str:
        return f"{self.value:.3f} ± {self.se:.3f}"


def accuracy(summary: Evaluation) -> Estimate:
    """Mean nonzero accuracy over events and its standard error."""
    return Estimate(summary.nonzero_accuracy, summary.nonzero_accuracy_sem)


def classwise(summary: Evaluation, cls: int) -> Estimate:
    """Classwise accuracy of ``cls`` and its standard error (NaN when the class is absent)."""
    value, se = summary.classwise_accuracy[cls], summary.classwise_accuracy_sem[cls]
    return Estimate(math.nan if value is None else value, math.nan if se is None else se)


def paired_difference(a: Evaluation, b: Evaluation) -> Estimate | None:
    """Accuracy of ``a`` minus ``b`` with the paired standard error, when both scored the same
    events (the same test set and per-event count); None otherwise."""
    x, y = a.nonzero_accuracy_per_event, b.nonzero_accuracy_per_event
    if not x or not y or len(x) != len(y) or a.test_set != b.test_set:
        return None
    d = np.asarray(x) - np.asarray(y)
    return Estimate(float(d.mean()), float(d.std() / math.sqrt(len(d))))


def improves(a: Evaluation, b: Evaluation) -> tuple[bool, Estimate]:
    """Whether ``a``'s accuracy exceeds ``b``'s by more than the standard error of the
    difference (paired where possible), and the difference."""
    diff = paired_difference(a, b) or (accuracy(a) - accuracy(b))
    return diff.value > diff.se, diff


def spread_shrinks(a: Evaluation, b: Evaluation) -> bool:
    """Whether ``a``'s per-event std is below ``b``'s by more than the standard error of the
    difference (the std of n values has a standard error of about std / sqrt(2 (n - 1)))."""
    def std(s: Evaluation) -> Estimate:
        n, value = max(s.n_events, 2), s.nonzero_accuracy_std
        return Estimate(value, value / math.sqrt(2 * (n - 1)))
    return std(b).exceeds(std(a))


def linear_r2(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Slope and R² of the least-squares line through (x, y)."""
    fit = stats.linregress(np.asarray(x, float), np.asarray(y, float))
    return float(fit.slope), float(fit.rvalue**2)

