"""Each chapter's parameters, one frozen dataclass per notebook (``notebooks.<name>`` of a
profile), built and checked by :func:`analysis_lib.fields.build` when the profile loads: a
misspelt key, a missing one, a run the profile does not train or a data set the manifest does
not hold fails there, in one line naming it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analysis_lib.fields import DataSetName, RunName


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


@dataclass(frozen=True)
class ImageSizes:
    train_runs: Mapping[int, RunName]
    test_sets: Mapping[int, DataSetName]


@dataclass(frozen=True)
class Mistakes:
    run_name: RunName
    test_set: DataSetName


@dataclass(frozen=True)
class Relabeling:
    table5_runs: Mapping[str, RunName]
    test_set: DataSetName


@dataclass(frozen=True)
class Findings:
    """The findings page reads the other chapters' recorded results; it takes no parameters."""


#: Each notebook's parameter type, by notebook name.
CHAPTERS: dict[str, type] = {
    "dataset": Dataset, "simulator_validation": SimulatorValidation,
    "sparse_vs_dense": SparseVsDense, "michel": Michel, "learning_dynamics": LearningDynamics,
    "architecture": Architecture, "image_sizes": ImageSizes, "mistakes": Mistakes,
    "relabeling": Relabeling, "findings": Findings,
}
