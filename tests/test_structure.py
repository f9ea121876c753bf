"""Project structure: layering of the packages, pins in sync, profiles match the notebooks."""

import ast
import dataclasses
import os
import re
from pathlib import Path

import jupytext
import pytest
import tomllib
import yaml

from analysis_lib.core import paper
from analysis_lib.core.errors import ConfigError
from analysis_lib.core.paths import BOOK
from analysis_lib.data.manifest import load_manifest
from analysis_lib.study.chapter_params import Relabeling, scorings
from analysis_lib.study.experiments import profile_runs
from analysis_lib.study.plan import plan_runs, print_plan, step_seconds
from analysis_lib.study.profiles import PROFILES, Training, load_profile
from analysis_lib.study.reproduce import RUN_ALONE, execution_order, notebook_order, train_runs

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "analysis_lib"


#: The floors of the package, lowest first: a module imports only from its own floor or
#: lower ones. On the first floor the simulator writes the data's files, but the readers know
#: no simulator and the engine neither.
LAYERS = {"core": 0, "sim": 1, "data": 1, "sparse": 1, "models": 2, "training": 3,
          "evaluation": 4, "study": 5, "chapters": 6, "report": 7, "book": 8, "cli": 9,
          "__main__": 10, "__init__": 0}
APART = {("data", "sim"), ("sim", "sparse"), ("sparse", "sim"), ("data", "sparse"),
         ("sparse", "data")}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules a file imports, anywhere in it (function-local imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n in modules}


def _floor(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_every_module_imports_only_its_floor_or_lower():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        mine = _floor(name)
        assert mine in LAYERS, f"{name}: its package is on no floor of LAYERS"
        for other in _imported(path, modules):
            theirs = _floor(other)
            if LAYERS[theirs] > LAYERS[mine] or (mine, theirs) in APART:
                bad.append(f"{name} imports {other}")
    assert bad == []


@pytest.mark.parametrize("package", ["sim", "data"])
def test_the_simulator_and_readers_need_no_torch(package):
    """They run where torch is not installed (a data-only environment, the simulator's
    numba workers)."""
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            assert not any(n == "torch" or n.startswith("torch.") for n in names), path


def test_the_tests_mirror_the_package():
    """Each folder of tests/ is named after the package it tests."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert folders <= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}


def test_every_declared_marker_is_applied():
    """``--strict-markers`` refuses an undeclared marker; this refuses a declared one that
    marks nothing (``pytest -m "not slow"`` must mean something)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]["markers"]
    text = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for marker in (line.split(":")[0] for line in declared):
        assert f"pytest.mark.{marker}" in text, marker


def test_no_import_cycle():
    modules = _modules()
    graph = {name: {m for m in _imported(path, modules) if m != name and not
                    name.startswith(m + ".")}  # a module may import its own package
             for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_a_small_top_level_and_short_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def _requirement_pins(items: list[str]) -> dict[str, str]:
    pins = {}
    for item in items:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*([=<>!~].*)", item.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2).replace(" ", "")
    return pins


def test_environment_yml_mirrors_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = _requirement_pins(project["dependencies"] + extras["dev"] + extras["lab"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _requirement_pins(pip_section) == wanted


def _chapter_attributes(name: str) -> set[str]:
    """The attributes a notebook and its chapter module read from their ``ch`` object (the
    notebook's ``ch = chapter(...)``, the module's ``compute(ch)``)."""
    notebook = jupytext.read(BOOK / "notebooks" / f"{name}.md")
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    module = PACKAGE / "chapters" / f"{name}.py"
    if module.exists():
        sources.append(module.read_text())
    used = set()
    for source in sources:
        used |= {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)
                 and isinstance(n.value, ast.Name) and n.value.id == "ch"}
    return used - {"data", "runs", "trained", "data_set_of", "profile", "name"}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_gives_every_chapter_exactly_the_parameters_it_reads(profile):
    params = load_profile(profile).notebooks
    for name in notebook_order():
        fields = {f.name for f in dataclasses.fields(params[name])}
        assert fields == _chapter_attributes(name), name


#: Names whose method calls draw (matplotlib's figure, axes and pyplot).
_DRAWING = {"ax", "axes", "axis", "fig", "plt"}


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _shows(loop: ast.AST) -> bool:
    """Whether a loop draws or prints (a loop that only computes belongs in the library)."""
    for node in ast.walk(loop):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in ("print", "display"):
                return True
            if isinstance(node.func, ast.Attribute) and _root_name(node.func) in _DRAWING:
                return True
    return False


def _computing_code(source: str) -> list[str]:
    """Function or class definitions, lambdas, and loops that neither draw nor print."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda) or (
                isinstance(node, ast.For | ast.While) and not _shows(node)):
            found.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return found


def test_structure_rule_catches_a_computing_loop_and_a_function():
    assert _computing_code("rows = []\nfor x in xs:\n    rows.append(f(x))") == [
        "line 2: for x in xs:"]
    assert len(_computing_code("def f(x):\n    return x\ng = lambda v: v")) == 2
    assert _computing_code("for ax in axes:\n    ax.set_xlabel('x')") == []
    assert _computing_code("for name in names:\n    print(name)") == []


def test_notebooks_call_the_library_and_draw():
    for name in notebook_order():
        notebook = jupytext.read(BOOK / "notebooks" / f"{name}.md")
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert _computing_code(cell.source) == [], f"{name}: move this into the library"


def test_notebooks_take_only_the_profile_from_papermill():
    for name in notebook_order():
        notebook = jupytext.read(BOOK / "notebooks" / f"{name}.md")
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        assert cell.source.strip() == 'profile = "ci"', name


def test_a_chapter_resolves_its_inputs_from_any_folder(tmp_path, monkeypatch):
    from analysis_lib.study.profiles import chapter

    monkeypatch.chdir(tmp_path)
    ch = chapter("michel")
    assert ch.michel_run in ch.runs
    assert ch.data.path_of(ch.data_set).is_absolute()
    with pytest.raises(AttributeError, match="no parameter 'michel_rum'; did you mean "
                                             "'michel_run'"):
        _ = ch.michel_rum


@pytest.mark.slow
def test_a_chapter_runs_top_to_bottom_in_a_plain_kernel_from_its_own_folder(tmp_path,
                                                                           monkeypatch):
    """The Findings page as JupyterLab runs it: converted by jupytext, no injected cell, the
    notebook's folder as working folder (with no recorded results every claim is untestable)."""
    import jupytext
    from nbclient import NotebookClient

    monkeypatch.setenv("ANALYSIS_LIB_RESULTS", str(tmp_path))
    notebook = jupytext.read(BOOK / "notebooks" / "findings.md")
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(BOOK / "notebooks")}}).execute()
    printed = "".join(out.get("text", "") for cell in notebook.cells
                      if cell.cell_type == "code" for out in cell.get("outputs", []))
    assert "ci profile: 0 reproduced, 0 not reproduced, 12 not testable of 12 claims" in printed


def test_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown profile 'laptop'"):
        load_profile("laptop")


@pytest.mark.parametrize("profile", PROFILES)
def test_dry_run_lists_every_run_with_gpu_hours(profile, capsys):
    plan = print_plan(profile)
    out = capsys.readouterr().out
    assert [row["run"] for row in plan] == list(load_profile(profile).runs)
    for row in plan:
        assert row["run"] in out
        assert row["GPU-hours"] > 0


def test_cost_model_gives_back_each_training_time_of_the_studys_table2():
    """The dry run's step times reproduce the study's V100 column by column, under the reading
    of its batch row that analysis_lib.core.paper states (512 and 768 px at batch 64)."""
    train_s = paper.TABLE2_ROWS.index("GPU wall time train (s)")
    for column, values in paper.TABLE2.items():
        backend, size, batch = re.fullmatch(r"(\w+) · (\d+) px · batch (\d+)", column).groups()
        step, basis = step_seconds(backend, 3, int(size), int(batch))
        assert step == pytest.approx(values[train_s], rel=0.02), column
        assert basis == "study's Table II"


def test_dry_run_needs_no_data(tmp_path):
    import shutil

    manifest = shutil.copy(load_profile("ci").manifest_path, tmp_path / "data_manifest.yaml")
    plan = plan_runs(load_profile("ci"), Path(manifest))  # tmp_path/data does not exist
    assert {row["init"] for row in plan} == {"", "main", "relabeled"}


def test_overview_and_findings_come_first_in_the_book_and_run_last():
    assert notebook_order()[:2] == ["overview", "findings"]
    order = execution_order()
    assert order[-2:] == ["findings", "overview"] and sorted(order) == sorted(notebook_order())


def test_the_timing_chapters_run_first():
    order = execution_order()
    assert set(order[: len(RUN_ALONE)]) == set(RUN_ALONE)
    # the chapter that trains the runs whose wall time the book reports (training.alone, see
    # test_ci_profile_trains_side_by_side_except_the_timed_runs) is one that runs alone
    assert "sparse_vs_dense" in RUN_ALONE


@pytest.mark.parametrize(
    ("shared", "message"),
    [({"training": {"workers": 0}}, "workers must be a positive int"),
     ({"training": {"workers": "2"}}, "workers must be a positive int"),
     ({"training": {"workers": 2, "alone": ["nope"]}}, r"unknown run\(s\) \['nope'\]"),
     ({"training": {"worker": 2}}, "unknown shared.training setting 'worker'; did you mean "
                                   "'workers'"),
     ({"runs": {"main": {"data": "sim3d_64_ci", "iteratons": 10}}}, "run 'main': unknown setting "
                                                          "'iteratons'; did you mean 'iterations'"),
     ({"runs": {"main": {"depth": 5}}}, "run 'main' names no data set"),
     ({"runs": {"main": {"data": "sim3d_64_cj"}}}, "run 'main'.data: no data set 'sim3d_64_cj'; "
                                                  "did you mean 'sim3d_64_ci'"),
     ({"runs": {"main": {"data": "sim3d_64_ci", "init": "mian"}}}, "run 'main'.init: no run "
                                                                  "'mian'"),
     ({"runs": {"main": {"data": "sim3d_64_ci", "iterations": 0}}}, "run 'main': iterations=0 "
                                                                   "must be >= 1"),
     ({"run": {}}, "unknown shared setting 'run'; did you mean 'runs'"),
     ({"zzz": 1}, r"unknown shared setting 'zzz'; settings are \['manifest', 'runs', "
                  r"'training'\]")],
)
def test_bad_shared_settings_are_config_errors(tmp_path, shared, message):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "ci.yaml").write_text(yaml.safe_dump(
        {"shared": {"runs": {"a": {"data": "sim3d_64_ci"}}, **shared}, "notebooks": {}}))
    with pytest.raises(ConfigError, match=message):
        load_profile("ci", book=tmp_path)


@pytest.mark.parametrize(
    ("michel", "message"),
    [({"michel_run": "b", "data_set": "sim3d_64_ci"}, r"notebooks.michel.michel_run: no run 'b'"),
     ({"michel_run": "a"}, "notebooks.michel sets no data_set"),
     ({"michel_run": "a", "data_set": "sim3d_64_ci", "cut": 3}, "notebooks.michel: unknown key "
                                                               "'cut'"),
     ({"michel_run": ["a"], "data_set": "sim3d_64_ci"}, "michel_run: expected a run name")],
)
def test_bad_chapter_parameters_are_config_errors(tmp_path, michel, message):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "michel.md").write_text("# Michel\n")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "ci.yaml").write_text(yaml.safe_dump(
        {"shared": {"runs": {"a": {"data": "sim3d_64_ci"}}}, "notebooks": {"michel": michel}}))
    with pytest.raises(ConfigError, match=message):
        load_profile("ci", book=tmp_path)


@pytest.mark.parametrize("name", PROFILES)
def test_chapters_scorings_name_the_profiles_runs_and_sets(name):
    profile = load_profile(name)
    sets = set(load_manifest(profile.manifest_path).names())
    listed = [s for params in profile.notebooks.values() for s in scorings(params)]
    assert {s.run for s in listed} <= set(profile.runs)
    assert {s.test_set for s in listed} <= sets
    relabeling = profile.notebooks["relabeling"]
    assert sorted((s.run, s.relabeled) for s in relabeling.scorings()) == sorted(
        [(relabeling.table5_runs["regular"], False), (relabeling.table5_runs["regular"], True),
         (relabeling.table5_runs["relabeled"], True),
         (relabeling.table5_runs["relabeled + weights"], True)])


def test_table5_runs_name_each_flavour():
    with pytest.raises(ConfigError, match=r"table5_runs: expected a run for each of"):
        Relabeling({"regular": "a", "relabeled": "b"}, "test")


def test_ci_profile_trains_side_by_side_except_the_timed_runs():
    profile = load_profile("ci")
    assert profile.training.workers == 2
    curves = profile.notebooks["sparse_vs_dense"].curve_runs
    assert set(profile.training.alone) == set(curves.values())
    train_runs(dataclasses.replace(profile, training=Training(workers=1)))  # trains nothing


def _one_notebook_book(book, name: str, cells: list[str]) -> None:
    """A book folder holding one text notebook: a parameters cell, then ``cells``."""
    (book / "notebooks").mkdir()
    (book / "_toc.yml").write_text(f"format: jb-book\nroot: executed/{name}\n")
    code = "".join(f"```{{code-cell}} ipython3\n{c}\n```\n\n" for c in
                   [":tags: [parameters]\n\nprofile = 'x'", *cells])
    (book / "notebooks" / f"{name}.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        + code)


def test_a_failing_notebook_is_named_with_its_source_cell(tmp_path):
    from analysis_lib.study.profiles import Profile
    from analysis_lib.study.reproduce import BuildError, execute_notebooks

    _one_notebook_book(tmp_path, "broken", ["x = 1", "y = 1 / 0"])
    with pytest.raises(BuildError, match=r"broken.md failed in code cell 3 \('y = 1 / 0'\): "
                                         r"ZeroDivisionError"):
        execute_notebooks(Profile("ci", "data_manifest.yaml", {}, Training(), {}), book=tmp_path)


@pytest.mark.slow
def test_untimed_notebooks_run_side_by_side_and_a_failure_is_named(tmp_path):
    from analysis_lib.study.profiles import Profile
    from analysis_lib.study.reproduce import BuildError, execute_notebooks

    # two notebooks that each wait until the other has started: they finish only side by side
    wait = ("import pathlib, time\nhere = pathlib.Path({!r})\n(here / '{}').touch()\n"
            "deadline = time.time() + 60\nwhile not (here / '{}').exists():\n"
            "    assert time.time() < deadline, 'ran alone'\n    time.sleep(0.05)")
    _one_notebook_book(tmp_path, "first", [wait.format(str(tmp_path), "a", "b")])
    (tmp_path / "notebooks" / "second.md").write_text(
        (tmp_path / "notebooks" / "first.md").read_text().replace("'a'", "'x'")
        .replace("'b'", "'a'").replace("'x'", "'b'"))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: executed/first\n"
                                       "chapters:\n- file: executed/second\n")
    execute_notebooks(Profile("ci", "data_manifest.yaml", {}, Training(workers=2), {}),
                      book=tmp_path)
    assert {p.name for p in (tmp_path / "executed").glob("*.ipynb")} == {"first.ipynb",
                                                                         "second.ipynb"}
    (tmp_path / "notebooks" / "second.md").write_text(
        (tmp_path / "notebooks" / "second.md").read_text().replace("import pathlib", "1 / 0"))
    with pytest.raises(BuildError, match=r"second.md failed in code cell 2"):
        execute_notebooks(Profile("ci", "data_manifest.yaml", {}, Training(workers=2), {}),
                          book=tmp_path)


def test_the_injected_parameters_cell_is_removed_from_the_rendered_chapter(tmp_path):
    import nbformat

    from analysis_lib.study.profiles import Profile
    from analysis_lib.study.reproduce import execute_notebooks

    _one_notebook_book(tmp_path, "fine", [])
    path = os.environ["PATH"]
    execute_notebooks(Profile("ci", "data_manifest.yaml", {}, Training(), {}), book=tmp_path)
    executed = tmp_path / "executed" / "fine.ipynb"
    cells = nbformat.read(executed, as_version=4).cells
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert str(tmp_path) not in executed.read_text()  # no folder of the building machine
    assert os.environ["PATH"] == path


@pytest.mark.parametrize("name", PROFILES)
def test_setting_runs_compared_differ_in_batch_or_image_size_alone(name):
    """Claim 4 compares two of Table II's setting runs where their image size (or batch) and
    iterations are equal; every such pair must differ in batch (or data set) and nothing else."""
    profile = load_profile(name)
    manifest = load_manifest(profile.manifest_path)
    runs = profile_runs(profile.runs, manifest.path_of)
    setting_runs = profile.notebooks["sparse_vs_dense"].setting_runs
    compared = 0
    for a, b in ((a.run, b.run) for a in setting_runs for b in setting_runs if a.run < b.run):
        x, y = runs[a].config, runs[b].config
        same_size = (manifest.entry(profile.runs[a].data).size
                     == manifest.entry(profile.runs[b].data).size)
        if x.iterations != y.iterations or same_size == (x.batch_size == y.batch_size):
            continue
        compared += 1
        allowed = ("checkpoint_every", "batch_size" if same_size else "data")
        assert x == dataclasses.replace(y, **{f: getattr(x, f) for f in allowed}), (a, b)
        assert runs[a].parent == runs[b].parent, (a, b)
    assert compared >= 2  # one pair for the batch, one for the image size


@pytest.mark.slow
def test_a_long_notebook_is_reported_while_it_executes(tmp_path, monkeypatch, capsys):
    """Every progress interval, the notebooks executing and for how long."""
    from analysis_lib.study import pool
    from analysis_lib.study.profiles import Profile
    from analysis_lib.study.reproduce import execute_notebooks

    monkeypatch.setattr(pool, "PROGRESS_EVERY_S", 0.5)
    _one_notebook_book(tmp_path, "slow", ["import time\ntime.sleep(3)"])
    execute_notebooks(Profile("ci", "data_manifest.yaml", {}, Training(), {}), book=tmp_path)
    beats = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("[reproduce] executing: slow (")]
    assert beats and all(re.fullmatch(r"\[reproduce\] executing: slow \(\d+ s\)", b) for b in beats)
