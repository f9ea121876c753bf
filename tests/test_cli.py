"""The command line: subcommands run, library errors are one line and exit status 2."""

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
