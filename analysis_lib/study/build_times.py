"""How long the last full build of the book took, and on what machine: recorded by ``reproduce``
beside the chapters' results, written into the README by ``findings --update-readme`` (its
section between ``<!-- build:start -->`` and ``<!-- build:end -->``), so that the README's
timings come from a build, not from a keyboard."""

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from analysis_lib.study import results

#: The results entry that holds the record (beside the chapters').
RECORD = "build"


@dataclass(frozen=True)
class BuildTimes:
    """A full build's phases in seconds (``book_s`` None when the HTML was not built) and the
    machine it ran on."""

    profile: str
    commit: str
    cpu: str
    cores: int
    instruction_set: str
    data_s: float
    training_s: float
    notebooks_s: Mapping[str, float]
    book_s: float | None
    total_s: float

    def record(self, where: Path | None = None) -> Path:
        return results.record(RECORD, self, where)

    @classmethod
    def load(cls, recorded: dict[str, dict]) -> "BuildTimes | None":
        """The record among ``recorded`` (results by chapter), or None."""
        entry = recorded.get(RECORD)
        return results.read(cls, RECORD, entry) if entry else None


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(times: BuildTimes) -> str:
    """The README's build section: one sentence of phases, one of the slowest notebooks."""
    phases = [f"data {_duration(times.data_s)}",
              f"training (with the data sets made beside it) {_duration(times.training_s)}",
              f"notebooks {_duration(sum(times.notebooks_s.values()))}"]
    if times.book_s is not None:
        phases.append(f"HTML {_duration(times.book_s)}")
    slowest = sorted(times.notebooks_s.items(), key=lambda kv: -kv[1])[:3]
    return (f"The last full build of the `{times.profile}` profile (commit {times.commit}) took "
            f"**{times.total_s / 60:.1f} minutes** after set-up on {times.cores} cores of "
            f"{times.cpu} (C kernels: {times.instruction_set}): {', '.join(phases)}. "
            f"Slowest notebooks: "
            + ", ".join(f"{name} {_duration(seconds)}" for name, seconds in slowest) + ".")
