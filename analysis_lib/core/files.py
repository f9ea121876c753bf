"""Files written so that nothing is lost, and the one file-hash helper.

Every writer of a result (simulated data, checkpoints, evaluations, chapter results) writes
into a temporary file of its own beside the target, flushes it to disk and renames it into
place: a crash leaves the previous file, and two writers never share a half-written file.
Where an existing file must not be replaced, the rename is a hard link, which fails if the
target appeared meanwhile, so a concurrent writer gets an error and the first result stays.
A writer of a whole folder (a training) holds the folder's lock while it runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from analysis_lib.core.errors import StorageError


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, in hex. Hashed once per process while the file keeps its
    size and modification time: the runs of a chapter share data files of gigabytes at the
    study's scale, and a run's cache key and its training both need the hash."""
    stat = os.stat(path)
    return _sha256_of(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def storage_error(err: OSError, path: str | os.PathLike) -> StorageError:
    """A one-line :class:`StorageError` for an ``OSError`` met while writing ``path``."""
    advice = {errno.ENOSPC: "free some space or write elsewhere",
              errno.EDQUOT: "free some space or write elsewhere",
              errno.EACCES: "choose a folder you can write to",
              errno.EPERM: "choose a folder you can write to",
              errno.EROFS: "choose a folder on a writable file system"}
    hint = advice.get(err.errno, "check the path")
    return StorageError(f"cannot write {path}: {err.strerror or err}; {hint}")


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Refuse ``path`` when it is a folder, or a file and ``overwrite`` is not given."""
    if path.is_dir():
        raise StorageError(f"{path} is a folder; name a file to write")
    if path.exists() and not overwrite:
        raise StorageError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path of this writer's own beside ``path``; once the block succeeds,
    the file written there is flushed to disk and becomes ``path``.

    Without ``overwrite`` an existing ``path`` is refused before the block runs and again at
    the rename, so of two writers racing for a new file the second fails and the first's file
    stays. On any error the temporary file is removed and ``path`` is untouched; ``OSError``
    (disk full, read-only folder) becomes a one-line :class:`StorageError`.
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except StorageError:
        raise
    except OSError as err:
        raise storage_error(err, path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path``, failing if ``path`` exists (no check-then-act race)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise StorageError(f"{path} was written by another process meanwhile; its file is "
                           f"kept (pass --overwrite to replace it)") from None


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


LOCK_NAME = ".lock"


@contextlib.contextmanager
def held_lock(path: Path, busy: Callable[[str], str], wait: bool = False) -> Iterator[Path]:
    """Hold the lock file ``path`` for the block. Held by another process: a one-line
    :class:`StorageError` (``busy`` of the holder), or with ``wait`` a line saying whom it
    waits for, then the wait. The kernel releases the lock when its holder exits, so a
    crashed holder never leaves it locked."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as err:
        raise storage_error(err, path.parent) from None
    with open(path, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if not wait:
                raise StorageError(busy(holder)) from None
            print(f"waiting for {holder} to finish", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(f"process {os.getpid()}, started {time.strftime('%H:%M:%S')}")
        handle.flush()
        yield path


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock (created with the folder) for the block, or raise a one-line
    :class:`StorageError` naming the process that holds it."""
    folder = Path(folder)
    with held_lock(folder / LOCK_NAME, lambda holder: f"{folder} is in use by {holder}; wait "
                   f"for it to finish or choose another folder"):
        yield folder


def git_commit(repo: str | Path = ".") -> str:
    """Short commit hash of the working tree (with ``+dirty`` if it has changes), or ``unknown``."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")
