"""The command line: subcommands run, library errors are one line and exit status 2."""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from analysis_lib.cli import main
from analysis_lib.data import open_dataset
from analysis_lib.sim import GENERATOR_VERSION


def test_simulate_writes_a_readable_file(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    status = main(["simulate", "--out", str(out), "--events", "2", "--size", "64", "--seed",
                   "3", "--workers", "1", "--set", "smear_sigma_mm=3.0"])
    assert status == 0
    assert str(out) in capsys.readouterr().out
    assert len(open_dataset(out)) == 2


def test_unknown_physics_override_is_one_line_and_status_2(tmp_path, capsys):
    status = main(["simulate", "--out", str(tmp_path / "x.h5"), "--events", "1", "--size", "64",
                   "--seed", "1", "--set", "not_a_setting=1"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: unknown physics override(s) ['not_a_setting']")
    assert err.count("\n") == 1


def test_data_verify_reports_missing_files(tmp_path, capsys):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"data_dir: d\nsimulated:\n  - name: s\n    filename: s.h5\n"
        f"    generator_version: '{GENERATOR_VERSION}'\n"
        "    seed: 1\n    n_events: 1\n    size: 64\n    dim: 3\n    profiles: [ci]\n"
        "    sha256: null\npublic: []\n")
    assert main(["data", "verify", "--manifest", str(manifest)]) == 2
    assert "missing" in capsys.readouterr().out


def test_data_make_builds_then_verifies(tmp_path, capsys):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"data_dir: d\nsimulated:\n  - name: s\n    filename: s.h5\n"
        f"    generator_version: '{GENERATOR_VERSION}'\n"
        "    seed: 1\n    n_events: 2\n    size: 64\n    dim: 3\n    profiles: [ci]\n"
        "    sha256: null\npublic: []\n")
    assert main(["data", "make", "--manifest", str(manifest), "--record"]) == 0
    out = capsys.readouterr().out
    assert "recorded s:" in out and "ok" in out
    assert np.all(open_dataset(tmp_path / "d" / "s.h5")[0].energy > 0)


def _hold(lock: Path) -> subprocess.Popen:
    """Another process holding ``lock`` as a running build holds the build lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path\n"
         "from analysis_lib.core.files import held_lock\n"
         f"with held_lock(Path({str(lock)!r}), str):\n print('held', flush=True); "
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_build_of_the_checkout_is_refused_or_waits(tmp_path, monkeypatch, capsys):
    """Two builds in one checkout would time each other and share half-written networks: the
    second is refused in one line naming the first, or with --wait starts once it ends."""
    from analysis_lib.study import reproduce

    monkeypatch.setattr(reproduce, "BUILD_LOCK", tmp_path / ".reproduce.lock")
    steps = []
    for step in ("make_data", "train_runs", "execute_notebooks", "build_book"):
        monkeypatch.setattr(reproduce, step, lambda *a, step=step, **k: steps.append(step))
    holder = _hold(reproduce.BUILD_LOCK)
    try:
        assert main(["reproduce", "--profile", "ci"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: another build of this checkout is running (process "
                       f"{holder.pid}, started {err.split('started ')[1][:8]}); wait for it to "
                       f"finish, or pass --wait to queue behind it")
        assert steps == []
        threading.Timer(0.5, holder.communicate, [""]).start()
        assert main(["reproduce", "--profile", "ci", "--wait"]) == 0
    finally:
        holder.kill()
    assert f"waiting for process {holder.pid}" in capsys.readouterr().out
    assert steps == ["make_data", "train_runs", "execute_notebooks", "build_book"]
