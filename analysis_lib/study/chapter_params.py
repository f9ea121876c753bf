"""Each chapter's parameters, one frozen dataclass per notebook (``notebooks.<name>`` of a
profile), built and checked by :func:`analysis_lib.core.fields.build` when the profile loads: a
misspelt key, a missing one, a run the profile does not train or a data set the manifest does
not hold fails there, in one line naming it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analysis_lib.core.errors import ConfigError
from analysis_lib.core.fields import DataSetName, RunName


@dataclass(frozen=True)
class Scoring:
    """One held-out evaluation a chapter reads: network ``run`` on data set ``test_set``, with
    its labels relabeled or not (:meth:`~analysis_lib.study.experiments.Experiment.evaluation`).
    Listed by each chapter's :meth:`scorings` so that the profile's training workers compute
    and cache them beside the trainings, where a core would otherwise wait."""

    run: str
    test_set: str
    relabeled: bool = False


@dataclass(frozen=True)
class Table2Column:
    """One setting of Table II: the network's ``backend`` on the first ``batch`` events of data
    set ``data``; the training step too unless ``train`` is false; the accuracy of the summary
    named ``trained`` (if any); ``repeats`` timed runs (None: the table's)."""

    backend: str
    data: DataSetName
    batch: int
    train: bool = True
    trained: str | None = None
    repeats: int | None = None


@dataclass(frozen=True)
class SettingRun:
    """A network of Table II's accuracy-by-setting rows and the held-out set it is scored on."""

    run: RunName
    test_set: DataSetName


@dataclass(frozen=True)
class Dataset:
    sample: DataSetName
    size_sets: tuple[DataSetName, ...]
    sample_2d: DataSetName


@dataclass(frozen=True)
class SimulatorValidation:
    n_events: int
    size: int
    scale: float


@dataclass(frozen=True)
class SparseVsDense:
    device: str
    sparse_run: RunName
    dense_run: RunName | None
    test_set: DataSetName
    table2_columns: tuple[Table2Column, ...]
    repeats: int
    batch_sizes_2d: Mapping[str, tuple[int, ...]]
    sample_2d: DataSetName
    curve_runs: Mapping[str, RunName]
    curve_test_set: DataSetName
    setting_runs: tuple[SettingRun, ...]

    def scorings(self) -> tuple[Scoring, ...]:
        nets = [self.sparse_run] + ([self.dense_run] if self.dense_run else [])
        return (tuple(Scoring(run, self.test_set) for run in nets)
                + tuple(Scoring(run, self.curve_test_set) for run in self.curve_runs.values())
                + tuple(Scoring(s.run, s.test_set) for s in self.setting_runs))


@dataclass(frozen=True)
class Michel:
    michel_run: RunName
    data_set: DataSetName


@dataclass(frozen=True)
class LearningDynamics:
    curve_runs: Mapping[str, RunName]


@dataclass(frozen=True)
class Architecture:
    scan_runs: Mapping[int, Mapping[int, RunName]]
    test_set: DataSetName
    resource_set: DataSetName
    resource_batch: int
    device: str
    repeats: int

    def scorings(self) -> tuple[Scoring, ...]:
        return tuple(Scoring(run, self.test_set) for by_filters in self.scan_runs.values()
                     for run in by_filters.values())


@dataclass(frozen=True)
class ImageSizes:
    train_runs: Mapping[int, RunName]
    test_sets: Mapping[int, DataSetName]

    def scorings(self) -> tuple[Scoring, ...]:
        return tuple(Scoring(run, test_set) for test_set in self.test_sets.values()
                     for run in self.train_runs.values())


@dataclass(frozen=True)
class Mistakes:
    run_name: RunName
    test_set: DataSetName


#: Table V's columns: (network flavour of ``Relabeling.table5_runs``, test labels relabeled).
TABLE5_COLUMNS = {"train regular / test regular": ("regular", False),
                  "train regular / test relabeled": ("regular", True),
                  "train relabeled / test relabeled": ("relabeled", True),
                  "train relabeled + weights / test relabeled": ("relabeled + weights", True)}


@dataclass(frozen=True)
class Relabeling:
    table5_runs: Mapping[str, RunName]
    test_set: DataSetName

    def __post_init__(self) -> None:
        flavours = sorted({flavour for flavour, _ in TABLE5_COLUMNS.values()})
        if sorted(self.table5_runs) != flavours:
            raise ConfigError(f"relabeling.table5_runs: expected a run for each of {flavours}, "
                              f"got {sorted(self.table5_runs)}")

    def scorings(self) -> tuple[Scoring, ...]:
        return tuple(Scoring(self.table5_runs[flavour], self.test_set, relabeled)
                     for flavour, relabeled in TABLE5_COLUMNS.values())


@dataclass(frozen=True)
class Findings:
    """The findings page reads the other chapters' recorded results; it takes no parameters.
    So do the book's first page (``overview``) and its Methods page, which reads the profile."""


def scorings(params: object) -> tuple[Scoring, ...]:
    """The evaluations a chapter's parameters list (none for a chapter that reads none)."""
    listed = getattr(params, "scorings", None)
    return listed() if listed is not None else ()


#: Each notebook's parameter type, by notebook name.
CHAPTERS: dict[str, type] = {
    "dataset": Dataset, "simulator_validation": SimulatorValidation,
    "sparse_vs_dense": SparseVsDense, "michel": Michel, "learning_dynamics": LearningDynamics,
    "architecture": Architecture, "image_sizes": ImageSizes, "mistakes": Mistakes,
    "relabeling": Relabeling, "findings": Findings, "overview": Findings, "methods": Findings,
}
