"""A training run's folder: its checkpoints, its JSON-lines log, and the proof that a resumed
run is the run that wrote them.

A checkpoint holds the weights, the optimizer and random state, the iteration, the training
configuration and the sha256 of the training data, so that ``--resume`` can refuse to continue
another run. Checkpoints load with ``weights_only=True`` (a checkpoint from elsewhere cannot
run code); an unreadable newest checkpoint (a crash while copying, a full disk) falls back to
the one before it, with a warning. Each checkpoint's sha256 is recorded beside it when it is
written (``checkpoint_N.pt.sha256``), so that a file damaged later is found before use:
:func:`intact` compares the two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from analysis_lib.core.errors import DataError, StorageError, TrainingError
from analysis_lib.core.files import atomic_output, file_sha256, storage_error, write_text

if TYPE_CHECKING:
    from analysis_lib.training.config import TrainConfig

PREFIX = "checkpoint_"
LOG_NAME = "metrics.jsonl"
#: Configuration fields a resumed run may change: how far it goes and what it saves on the
#: way (a longer run is refused too if it changes the learning rate of iterations done).
RESUMABLE_FIELDS = ("iterations", "checkpoint_every", "probe_event", "probe_iterations")


def checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """The checkpoints of a run folder, by iteration; files not named by one are ignored."""
    found = [p for p in Path(out_dir).glob(f"{PREFIX}*.pt")
             if p.stem.removeprefix(PREFIX).isdigit()]
    return sorted(found, key=lambda p: int(p.stem.removeprefix(PREFIX)))


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest iteration in ``out_dir``, if any."""
    found = checkpoints(out_dir)
    return found[-1] if found else None


def digest_path(path: str | os.PathLike) -> Path:
    """Where a checkpoint's sha256 is recorded."""
    return Path(f"{path}.sha256")


def save(path: Path, state: dict) -> None:
    """Write a checkpoint atomically (a crash or a full disk leaves the previous ones), then
    its sha256 beside it."""
    digest_path(path).unlink(missing_ok=True)
    with atomic_output(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:  # torch's writer reports a full disk as a RuntimeError
            raise StorageError(f"cannot write {path}: {str(err).splitlines()[0]}; free some "
                               f"space or write elsewhere") from None
    _record_digest(path)


def _record_digest(path: Path) -> None:
    """Write a checkpoint's sha256 beside it."""
    write_text(digest_path(path), file_sha256(path) + "\n")


def intact(path: str | os.PathLike) -> bool:
    """Whether a checkpoint exists and holds the bytes it was written with: its sha256 equals
    the one recorded beside it; where none was recorded (a crash between the two writes, an
    older run), whether it reads back, which then records it."""
    path = Path(path)
    if not path.is_file():
        return False
    recorded = digest_path(path)
    if recorded.is_file():
        return recorded.read_text().strip() == file_sha256(path)
    try:
        load(path)
    except DataError:
        return False
    _record_digest(path)
    return True


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a damaged checkpoint ``*.pt.damaged`` (kept to look at, never read as a
    checkpoint again) and drop its recorded sha256; returns the new name."""
    aside = Path(f"{path}.damaged")
    os.replace(path, aside)
    digest_path(path).unlink(missing_ok=True)
    return aside


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """A checkpoint's state; an unreadable file is a one-line :class:`DataError`."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such checkpoint") from None
    except Exception as err:  # torch raises RuntimeError, pickle, EOF and OS errors alike
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from None


def load_latest(out_dir: str | os.PathLike, device: str | torch.device = "cpu"
                ) -> tuple[Path, dict] | None:
    """The newest intact checkpoint of a folder and its state; ``None`` if it has none. A
    damaged one is set aside (:func:`set_aside`) with a warning."""
    for path in reversed(checkpoints(out_dir)):
        try:
            if not intact(path):
                raise DataError(f"{path}: damaged (its sha256 is not the one recorded when it "
                                f"was written); set aside as {set_aside(path).name}")
            return path, load(path, device)
        except DataError as err:
            warnings.warn(f"{err}; trying the checkpoint before it", stacklevel=2)
    return None


def check_same_run(saved: TrainConfig, saved_data_sha256: str | None, cfg: TrainConfig,
                   data_sha256: str, iteration: int) -> None:
    """Refuse to resume, at ``iteration``, a run whose checkpoint says it computed something
    else: the fields that differ are named (data compared by content, not by path)."""
    if iteration > cfg.iterations:
        raise TrainingError(f"cannot resume: the run is at iteration {iteration}, beyond "
                            f"iterations={cfg.iterations}")
    differ = [f.name for f in dataclasses.fields(cfg)
              if f.name not in (*RESUMABLE_FIELDS, "data")
              and getattr(saved, f.name) != getattr(cfg, f.name)]
    if saved_data_sha256 is not None and saved_data_sha256 != data_sha256:
        differ.insert(0, "data (another file content)")
    if "iterations" not in differ and any(
            saved.learning_rate_at(i) != cfg.learning_rate_at(i) for i in range(1, iteration + 1)):
        differ.append("iterations (they change the learning rate of the iterations done)")
    if differ:
        raise TrainingError(f"cannot resume: the checkpoint at iteration {iteration} was "
                            f"trained with other {', '.join(differ)}; train into a new folder")


def log_rows(out_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's log; a partial last line (a run killed while writing) is dropped."""
    path = Path(out_dir) / LOG_NAME
    lines = path.read_text().splitlines() if path.exists() else []
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise DataError(f"{path}: line {number} is not JSON; the log is damaged") from None
    return rows


def last_row(out_dir: str | os.PathLike) -> dict | None:
    """The last whole row of a run's log, read from its end (a log being written: its last
    line may be partial, and is then skipped); None without one."""
    path = Path(out_dir) / LOG_NAME
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            return json.loads(line)
    return None


def append_row(fd: int, row: dict, path: Path) -> None:
    """Append one JSON row to the log open (for appending) as file descriptor ``fd``, unbuffered;
    where the disk refuses it (full, gone read-only) the part written is cut off again, so the
    log holds whole rows only, and the error is one line."""
    data = memoryview((json.dumps(row) + "\n").encode())
    at = os.lseek(fd, 0, os.SEEK_END)
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as err:
        with contextlib.suppress(OSError):  # if even this fails, log_rows drops the partial row
            os.ftruncate(fd, at)
        raise storage_error(err, path) from None


def truncate_log(out_dir: str | os.PathLike, iteration: int) -> None:
    """Keep the log rows up to ``iteration`` (a run killed after a checkpoint wrote more)."""
    kept = [row for row in log_rows(out_dir) if row["iteration"] <= iteration]
    with atomic_output(Path(out_dir) / LOG_NAME) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
