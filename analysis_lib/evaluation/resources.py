"""Memory and wall time of a U-ResNet's inference and of one training step.

Each measurement runs in a fresh child process, so that running out of memory ends that
measurement (a :class:`Measurement` marked ``out_of_memory``, its numbers NaN), not the caller.
CUDA: ``torch.cuda.max_memory_allocated`` after a reset, synchronized timing, warm-up excluded.
CPU: the child runs only that work; its peak resident set size during the work
(Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``) is reported both absolute
and minus the child's resident size just before the model runs (after imports, with the model and
the batch in memory). Wall time is the median of the repeats.
"""

import dataclasses
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Empty
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd
import torch

from analysis_lib.core.errors import AnalysisError, ConfigError
from analysis_lib.core.processes import preloaded_context
from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.models import UResNet
from analysis_lib.sparse import kmap
from analysis_lib.training.batching import Batch, first_events

MODES = ("inference", "train")


class Table2Setting(Protocol):
    """One column of Table II as measured: the network's backend on the first ``batch``
    events of data set ``data``, the training step too unless ``train`` is false, ``repeats``
    timed runs (None: the table's)."""

    backend: str
    data: str
    batch: int
    train: bool
    repeats: int | None
GB = 1024**3
T = TypeVar("T")


class ResourceError(AnalysisError, RuntimeError):
    """A measurement could not complete (the measuring process died, e.g. out of memory)."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build: the U-ResNet's arguments."""

    dim: int
    depth: int
    filters: int
    backend: str
    reps: int = 2
    growth: str | None = None

    def build(self) -> UResNet:
        """The network, freshly initialised."""
        return UResNet(self.dim, self.depth, self.filters, self.reps, self.backend, self.growth)


@dataclass(frozen=True)
class Measurement:
    """Result of :func:`measure` (bytes and seconds)."""

    mode: str
    device: str
    n_voxels: int
    wall_s_median: float
    wall_s_all: tuple[float, ...]
    memory_bytes: float
    memory_delta_bytes: float
    out_of_memory: bool = False

    @classmethod
    def exhausted(cls, mode: str, device: str, n_voxels: int) -> "Measurement":
        """The row of a measurement that ran out of memory: NaN numbers, marked."""
        nan = float("nan")
        return cls(mode, device, n_voxels, nan, (), nan, nan, out_of_memory=True)


def run_step(model: UResNet, batch: Batch, mode: str, optimizer) -> None:
    """One measured unit of work: inference (``mode="inference"``, no gradients) or one
    training step with ``optimizer``."""
    if mode == "inference":
        with torch.no_grad():
            model(batch.coords, batch.feats, batch.spatial_size)
        return
    logits = model(batch.coords, batch.feats, batch.spatial_size)
    loss = torch.nn.functional.cross_entropy(logits, batch.labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _status_bytes(field: str) -> int:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise ConfigError(f"/proc/self/status has no {field}: CPU memory needs Linux")


def _reset_peak_rss() -> int:
    """Reset the peak resident size to the current one; return the current size (bytes)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_bytes("VmRSS")


def _measure_here(spec: ModelSpec, batch: Batch, mode: str, device: str, repeats: int,
                  warmup: int) -> Measurement:
    model = spec.build().to(device)
    model.train(mode == "train")
    batch = batch.to(device)
    optimizer = torch.optim.Adam(model.parameters()) if mode == "train" else None
    cuda = device.startswith("cuda")
    for _ in range(warmup):
        run_step(model, batch, mode, optimizer)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_step(model, batch, mode, optimizer)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_bytes("VmHWM")
    # without a warm-up the first repeat carries the one-time costs (allocations, kernel
    # set-up): the time is that of the others where there are any
    steady = times[1:] if warmup == 0 and len(times) > 1 else times
    return Measurement(mode, device, len(batch.coords), float(np.median(steady)), tuple(times),
                       int(peak), int(peak - baseline))


def _child(queue, spec, batch, mode, device, repeats, warmup) -> None:
    """Measure in this (child) process and report the result, or that memory ran out. On the
    CPU without warm-up: a warm-up would set the peak before the baseline."""
    torch.set_num_threads(torch.get_num_threads())
    kmap.load_compiled()  # the engine's compiled code is the program's memory, not the network's
    try:
        warm = warmup if device.startswith("cuda") else 0
        queue.put(asdict(_measure_here(spec, batch, mode, device, repeats, warm)))
    except (MemoryError, torch.OutOfMemoryError):
        queue.put({"out_of_memory": True})


def measure(spec: ModelSpec, batch: Batch, mode: str = "inference", device: str = "cpu",
            repeats: int = 3, warmup: int = 1) -> Measurement:
    """Memory and median wall time of ``mode`` on ``batch``, measured in a fresh child
    process (the parent's memory does not count). On the CPU there is no warm-up, since a
    warm-up would set the peak before the baseline; the first of the repeats then includes
    one-time costs, so the time is the median of the others (of the one repeat, if only one;
    every repeat's time is in ``wall_s_all``). Running out of memory (an out-of-memory error,
    or the child killed by SIGKILL: the kernel's out-of-memory killer) gives
    :meth:`Measurement.exhausted`; any other failure is a :class:`ResourceError`.
    """
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}; choose one of {MODES}")
    ctx = preloaded_context(__name__)  # each measurement in a fresh process
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue, spec, batch, mode, device, repeats, warmup))
    child.start()
    while True:
        try:
            result = queue.get(timeout=1.0)
            break
        except Empty:
            if not child.is_alive():
                if child.exitcode == -signal.SIGKILL:
                    return Measurement.exhausted(mode, device, len(batch.coords))
                raise ResourceError(
                    f"the measuring process ended with exit code {child.exitcode} before "
                    f"reporting ({spec.backend}, {mode}, {len(batch.coords)} voxels)"
                ) from None
    child.join()
    if result.get("out_of_memory"):
        return Measurement.exhausted(mode, device, len(batch.coords))
    result["wall_s_all"] = tuple(result["wall_s_all"])
    return Measurement(**result)


def measure_cases(cases: Iterable[tuple[Mapping[str, object], ModelSpec, Batch, str]],
                  device: str = "cpu", repeats: int = 3) -> pd.DataFrame:
    """One :func:`measure` per case ``(labels, spec, batch, mode)``: a row of the case's labels
    with memory (GB), median wall time (s) and whether memory ran out. ``cases`` may be a
    generator, so that only one case's batch is in memory at a time."""
    rows = []
    for labels, spec, batch, mode in cases:
        m = measure(spec, batch, mode, device, repeats)
        rows.append({**labels, "memory (GB)": m.memory_delta_bytes / GB,
                     "wall time (s)": m.wall_s_median, "out of memory": m.out_of_memory})
    return pd.DataFrame(rows)


#: :func:`measure_cases`'s measurement columns, by the field names of a result row holding them.
MEASURED_FIELDS = {"memory (GB)": "memory", "wall time (s)": "time",
                   "out of memory": "out_of_memory"}


def case_rows(cases: pd.DataFrame, row: Callable[..., T]) -> tuple[T, ...]:
    """:func:`measure_cases`'s rows as ``row(**labels, memory=, time=, out_of_memory=)``
    objects (Python scalars, so that they are recorded and read back as they are)."""
    return tuple(row(**{MEASURED_FIELDS.get(k, k): v for k, v in r.items()})
                 for r in cases.to_dict("records"))


def cases_frame(rows: Sequence[object]) -> pd.DataFrame:
    """:func:`case_rows`'s objects back as :func:`measure_cases`'s table."""
    return pd.DataFrame(rows).rename(columns={v: k for k, v in MEASURED_FIELDS.items()})


@dataclass(frozen=True)
class Table2:
    """The study's Table II as measured: ``frame`` has a column per setting (named
    ``"backend · size px · batch n"``) and a row per quantity; ``settings`` gives each column's
    (backend, image size, batch); ``out_of_memory`` names the columns whose measurement ran
    out of memory (their numbers NaN)."""

    frame: pd.DataFrame
    settings: dict[str, tuple[str, int, int]]
    out_of_memory: tuple[str, ...]


def measure_table2(columns: Sequence[Table2Setting], net: ModelSpec,
                   path_of: Callable[[str], Path],
                   accuracy: Mapping[str, Evaluation], device: str = "cpu", repeats: int = 2
                   ) -> Table2:
    """Measure Table II: for each column (a :class:`Table2Setting`, as the chapter's
    parameters give it) the inference and training step of ``net`` with the column's backend
    on the first ``batch`` events of the data set, with the nonzero accuracy of the named
    summary."""
    rows, settings, exhausted = {}, {}, []
    for col in columns:
        batch = first_events(str(path_of(col.data)), col.batch)
        size = batch.spatial_size
        spec = dataclasses.replace(net, backend=col.backend)
        name = f"{col.backend} · {size} px · batch {col.batch}"
        times = repeats if col.repeats is None else col.repeats
        test = measure(spec, batch, "inference", device, times)
        step = measure(spec, batch, "train", device, times) if col.train else None
        if test.out_of_memory or (step and step.out_of_memory):
            exhausted.append(name)
        summary = accuracy.get(col.trained)
        settings[name] = (col.backend, size, col.batch)
        rows[name] = {
            "voxels in batch": batch.coords.shape[0],
            "nonzero accuracy mean": summary and round(summary.nonzero_accuracy, 3),
            "nonzero accuracy std": summary and round(summary.nonzero_accuracy_std, 3),
            "memory test (GB)": test.memory_delta_bytes / GB,
            "memory train (GB)": step and step.memory_delta_bytes / GB,
            "memory test, process peak (GB)": test.memory_bytes / GB,
            "wall time test (s)": test.wall_s_median,
            "wall time train (s)": step and step.wall_s_median,
        }
    return Table2(pd.DataFrame(rows).astype(float), settings, tuple(exhausted))
