"""data_manifest.yaml: loading, hash checks, building missing sets, recording hashes."""

import hashlib

import pytest

from analysis_lib.core.errors import ConfigError, DataError
from analysis_lib.data.manifest import load_manifest, make_missing, record_hashes, verify

MANIFEST = """\
data_dir: data            # relative to the manifest file
simulated:
  - name: ci_3d_64
    filename: sim_3d_64px_seed1.h5
    generator_version: "1"
    seed: 1
    n_events: 200
    size: 64
    dim: 3
    profiles: [ci]
    sha256: {sha}   # filled by record_hashes
  - name: paper_3d_192
    filename: sim_3d_192px_seed2.h5
    generator_version: "1"
    seed: 2
    n_events: 1000
    size: 192
    dim: 3
    profiles: [paper]
    sha256: null
public:
  - name: dlprod_192px_00
    doi: 10.17605/OSF.IO/VRUZP
    url: null
    size_bytes: null
    sha256: null
"""


def write_manifest(tmp_path, sha="null", text=MANIFEST):
    path = tmp_path / "data_manifest.yaml"
    path.write_text(text.format(sha=sha))
    return path


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def test_load(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path))
    assert manifest.data_dir == (tmp_path / "data").resolve()
    (ci,) = manifest.sets_for("ci")
    assert (ci.name, ci.seed, ci.n_events, ci.size, ci.dim) == ("ci_3d_64", 1, 200, 64, 3)
    assert ci.profiles == ("ci",) and ci.generator_version == "1" and ci.sha256 is None
    assert manifest.path_of("ci_3d_64") == manifest.data_dir / "sim_3d_64px_seed1.h5"
    assert manifest.public[0].doi == "10.17605/OSF.IO/VRUZP"
    assert manifest.path_of("dlprod_192px_00").name == "dlprod_192px_00.h5"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    seed: 1\n", "    seed: 1\n    sead: 2\n", "unknown key 'sead'"),
        ("    seed: 1\n", "", "missing key 'seed'"),
        ("data_dir: data", "data_dir: data\nextra: 1", "unknown key 'extra'"),
        ('generator_version: "1"', "generator_version: 1", "generator_version.*quote it"),
        ("    size: 64\n", "    size: big\n", "'size' has invalid value 'big'"),
    ],
)
def test_bad_keys(tmp_path, old, new, message):
    path = write_manifest(tmp_path, text=MANIFEST.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ConfigError, match="no such manifest"):
        load_manifest(tmp_path / "nope.yaml")


def test_unknown_name(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path))
    with pytest.raises(ConfigError, match="known names: ci_3d_64, paper_3d_192"):
        manifest.path_of("ci_3d_128")


def test_verify_ok_missing_and_unrecorded(tmp_path):
    content = b"simulated events"
    manifest = load_manifest(write_manifest(tmp_path, sha=sha256(content)))
    assert verify(manifest) == [
        ("ci_3d_64", "missing"),
        ("paper_3d_192", "missing"),
        ("dlprod_192px_00", "missing"),
    ]
    manifest.data_dir.mkdir()
    manifest.path_of("ci_3d_64").write_bytes(content)
    manifest.path_of("paper_3d_192").write_bytes(b"other")
    assert verify(manifest, ["ci_3d_64", "paper_3d_192"]) == [
        ("ci_3d_64", "ok"),
        ("paper_3d_192", "no hash recorded"),
    ]


def test_verify_mismatch_raises_and_keeps_file(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path, sha=sha256(b"expected")))
    manifest.data_dir.mkdir()
    path = manifest.path_of("ci_3d_64")
    path.write_bytes(b"user's own file")
    with pytest.raises(DataError) as info:
        verify(manifest)
    message = str(info.value)
    assert sha256(b"expected") in message and sha256(b"user's own file") in message
    assert str(path) in message and "delete it" in message
    assert "`python -m analysis_lib data record ci_3d_64`" in message
    assert path.read_bytes() == b"user's own file"


def test_cli_verify_fails_on_missing_files_and_record_accepts_a_new_hash(tmp_path, capsys):
    from analysis_lib.cli import main

    path = write_manifest(tmp_path, sha=sha256(b"expected"))
    assert main(["data", "verify", "--manifest", str(path)]) == 2
    assert "1 of 1 data sets are missing; `python -m analysis_lib data make --profile ci`" \
        in capsys.readouterr().err
    manifest = load_manifest(path)
    manifest.data_dir.mkdir()
    manifest.path_of("ci_3d_64").write_bytes(b"rebuilt")
    assert main(["data", "record", "ci_3d_64", "--manifest", str(path)]) == 0
    assert main(["data", "verify", "--manifest", str(path)]) == 0
    assert "ci_3d_64                 ok" in capsys.readouterr().out


def test_make_missing_builds_only_missing_files(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path))
    calls = []

    def build(sim, path):
        calls.append(sim.name)
        path.write_bytes(sim.name.encode())
        return path

    assert make_missing(manifest, "ci", build) == [manifest.path_of("ci_3d_64")]
    assert make_missing(manifest, "ci", build) == []
    assert calls == ["ci_3d_64"]
    assert manifest.path_of("ci_3d_64").read_bytes() == b"ci_3d_64"


def test_a_build_can_leave_the_missing_sets_to_the_training_workers(tmp_path, capsys):
    from analysis_lib.study.reproduce import make_data

    path = write_manifest(tmp_path)
    assert make_data("ci", path, later=True) == ["ci_3d_64"]
    assert not load_manifest(path).path_of("ci_3d_64").exists()
    assert capsys.readouterr().out == ""


def test_make_missing_checks_recorded_hash_of_built_file(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path, sha=sha256(b"reference")))

    def build(sim, path):
        path.write_bytes(b"changed generator")
        return path

    with pytest.raises(DataError, match="does not match"):
        make_missing(manifest, "ci", build)


def test_make_missing_never_rebuilds_a_mismatching_file(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path, sha=sha256(b"reference")))
    manifest.data_dir.mkdir()
    manifest.path_of("ci_3d_64").write_bytes(b"user data")

    def build(sim, path):
        raise AssertionError("must not rebuild")

    with pytest.raises(DataError, match="left untouched"):
        make_missing(manifest, "ci", build)
    assert manifest.path_of("ci_3d_64").read_bytes() == b"user data"


def test_make_missing_unknown_profile(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path))
    with pytest.raises(ConfigError, match="known profiles: ci, paper"):
        make_missing(manifest, "gpu", lambda sim, path: path)


def test_record_hashes_keeps_comments(tmp_path):
    path = write_manifest(tmp_path)
    manifest = load_manifest(path)
    manifest.data_dir.mkdir()
    manifest.path_of("ci_3d_64").write_bytes(b"built")
    assert record_hashes(path) == {"ci_3d_64": sha256(b"built")}
    text = path.read_text()
    assert f"    sha256: {sha256(b'built')}   # filled by record_hashes\n" in text
    assert "data_dir: data            # relative to the manifest file" in text
    reloaded = load_manifest(path)
    assert reloaded.simulated[0].sha256 == sha256(b"built")
    assert reloaded.simulated[1].sha256 is None
    assert verify(reloaded, ["ci_3d_64"]) == [("ci_3d_64", "ok")]


def test_record_hashes_needs_the_file(tmp_path):
    path = write_manifest(tmp_path)
    with pytest.raises(DataError, match="build it first"):
        record_hashes(path, ["ci_3d_64"])
