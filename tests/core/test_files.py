"""Writers that cannot lose a result: atomic, refusing, one-line errors."""

import hashlib

import pytest

from analysis_lib.cli import main
from analysis_lib.core.errors import ConfigError, StorageError
from analysis_lib.core.files import atomic_output, file_sha256, write_text
from analysis_lib.sim import simulate


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"larcv" * 100_000)
    assert file_sha256(path) == hashlib.sha256(b"larcv" * 100_000).hexdigest()


def test_a_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "r.json", "old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_of_two_writers_of_a_new_file_the_second_fails_and_the_first_stays(tmp_path):
    target = tmp_path / "events.h5"
    with (pytest.raises(StorageError, match="^[^ ]*events.h5 was written by another process"),
          atomic_output(target, overwrite=False) as second):
        second.write_text("second")
        with atomic_output(target, overwrite=False) as first:
            first.write_text("first")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["events.h5"]


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    target = write_text(tmp_path / "x.txt", "a")
    with pytest.raises(StorageError, match="exists; pass --overwrite"):
        write_text(target, "b", overwrite=False)
    write_text(target, "b")
    assert target.read_text() == "b"
    with pytest.raises(StorageError, match="is a folder"):
        write_text(tmp_path, "c")


def test_an_unwritable_place_is_one_storage_error(tmp_path):
    blocker = write_text(tmp_path / "file", "")
    with pytest.raises(StorageError, match="cannot write .*; check the path"):
        write_text(blocker / "inside.json", "{}")


def test_simulate_refuses_an_existing_output_before_simulating(tmp_path, capsys):
    out = tmp_path / "e.h5"
    simulate(out, 1, 16, 0, workers=1, progress=False)
    digest = file_sha256(out)
    assert main(["simulate", "--out", str(out), "--events", "1", "--size", "16",
                 "--seed", "1", "--workers", "1"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert file_sha256(out) == digest
    assert main(["simulate", "--out", str(out), "--events", "1", "--size", "16",
                 "--seed", "1", "--workers", "1", "--overwrite"]) == 0
    assert file_sha256(out) != digest


def test_simulate_refuses_zero_events(tmp_path):
    with pytest.raises(ConfigError, match="n_events=0 must be >= 1"):
        simulate(tmp_path / "e.h5", 0, 16, 0)


def test_simulate_refuses_to_start_on_a_disk_too_full_for_its_file(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(
        10**9, 10**9 - 10**5, 10**5))
    with pytest.raises(StorageError, match="GiB free; 100 events of 512 px need about"):
        simulate(tmp_path / "new" / "e.h5", 100, 512, 0)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", [
    ["simulate", "--out", "{out}/e.h5", "--events", "1", "--size", "16", "--seed", "1",
     "--workers", "1"],
    ["train", "--data", "{data}", "--out", "{out}/run", "--depth", "3", "--filters", "4",
     "--batch-size", "2", "--iterations", "1"],
])
def test_a_read_only_folder_is_one_line_naming_it(command, tiny_sample, tmp_path, capsys,
                                                  monkeypatch):
    """Writing under a read-only folder (simulated: as root, chmod does not stop a writer)."""
    import errno
    import os

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    args = [a.format(out=tmp_path / "ro", data=tiny_sample) for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.replace("\r", "\n").splitlines() if "error" in line]
    assert line.startswith(f"error: cannot write {tmp_path / 'ro'}")
    assert line.endswith("Read-only file system; choose a folder on a writable file system")


def test_file_sha256_follows_a_rewritten_file(tmp_path):
    import os

    path = tmp_path / "d.bin"
    path.write_bytes(b"a" * 1000)
    first = file_sha256(path)
    assert file_sha256(path) == first
    path.write_bytes(b"b" * 1000)  # same size: the modification time tells
    os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 1))
    assert file_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest() != first
