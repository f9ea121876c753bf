"""The book's first page and Methods page compute their numbers from results and the profile;
the README's build section from the build's record; and no result number is typed by hand into
the book's prose or the README."""

from pathlib import Path

import numpy as np
import pytest

from analysis_lib.book import pages, prose
from analysis_lib.core import paper
from analysis_lib.core.paths import BOOK, ROOT
from analysis_lib.report.findings import CLAIMS, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, Verdict
from analysis_lib.study import build_times
from analysis_lib.study.build_times import BuildTimes
from analysis_lib.study.profiles import load_profile


def test_findings_sentence_counts_each_verdict():
    statuses = [REPRODUCED, REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED]
    verdicts = [Verdict(claim, status, "") for claim, status in zip(CLAIMS[:5], statuses,
                                                                    strict=True)]
    sentence = pages.findings_sentence(verdicts, "ci")
    assert "Of the study's 5 claims" in sentence and "`ci`" in sentence
    assert f"**3 {REPRODUCED}**" in sentence
    assert f"**1 {NOT_REPRODUCED}**" in sentence and f"**1 {NOT_TESTABLE}**" in sentence


def test_headline_ratios_read_the_sparse_vs_dense_record_in_size_order():
    assert pages.headline_ratios({}) is None
    recorded = {"sparse_vs_dense": {"device": "cpu", "ratios": [
        {"size": 128, "batch": 4, "memory": 160.0, "time": 1200.0},
        {"size": 64, "batch": 4, "memory": 32.0, "time": 140.0}]}}
    ratios = pages.headline_ratios(recorded)
    assert ratios.sizes == (64, 128) and ratios.memory == (32.0, 160.0)
    assert ratios.time == (140.0, 1200.0) and ratios.device == "cpu"
    assert (ratios.study_memory, ratios.study_time) == paper.RATIOS_3D


def test_michel_spectrum_reads_the_michel_record():
    assert pages.michel_spectrum({"michel": {}}) is None
    spectrum = pages.michel_spectrum({"michel": {"spectrum": {
        "cut": 10, "candidates": [12, 40], "true": [9, 41, 50]}}})
    assert spectrum.cut == 10
    np.testing.assert_array_equal(spectrum.true, [9, 41, 50])


@pytest.mark.parametrize("name", ["ci", "paper"])
def test_recipe_table_states_each_run_as_its_profile_writes_it(name):
    profile = load_profile(name)
    table = pages.recipe_frame(profile)
    assert list(table.index) == list(profile.runs)
    for run, spec in profile.runs.items():
        row = table.loc[run]
        assert row["fine-tunes"] == (spec.init or "—")
        for key, column in (("iterations", "iterations"), ("batch_size", "batch")):
            if key in spec.settings:
                assert row[column] == spec.settings[key]
        if spec.settings.get("augment"):
            assert "grid symmetries" in row["also"]
        if spec.settings.get("relabel"):
            assert "relabeled" in row["also"]


def test_a_schedule_reads_as_its_settings_say():
    ci = pages.recipe_frame(load_profile("ci"))
    main = load_profile("ci").runs["main"].settings
    assert ci.loc["main", "learning rate"] == (
        f"{main['learning_rate']:g}, ÷10 after {main['decay_from']:.0%}")
    assert ci.loc["curve_sparse_2d", "learning rate"].endswith("constant")


def test_build_times_round_trip_and_read_as_minutes(tmp_path):
    times = BuildTimes("ci", "abc1234", "Some CPU", 2, "AVX512_BF16", 60.0, 900.0,
                       {"michel": 120.0, "findings": 6.0, "mistakes": 30.0, "x": 1.0}, 90.0,
                       1200.0)
    times.record(tmp_path)
    from analysis_lib.study import results

    loaded = BuildTimes.load(results.load_all(tmp_path))
    assert loaded == times
    text = build_times.markdown(times)
    assert "**20.0 minutes**" in text and "2 cores of Some CPU" in text
    assert "training (with the data sets made beside it) 15.0 min" in text
    assert "HTML 1.5 min" in text
    assert "notebooks 2.6 min" in text and "data 1.0 min" in text
    assert "michel 2.0 min, mistakes 30 s, findings 6 s." in text
    assert BuildTimes.load({}) is None


@pytest.mark.parametrize("text, kinds", [
    ("scores 0.959 ± 0.006 on held-out events", ["value ± error"]),
    ("a step 1.45× faster", ["ratio"]),
    ("the book took 20.3 minutes and 112 s", ["duration", "duration"]),
    ("ID efficiency 85.5 %", ["percentage"]),
    ("accuracy 0.942 after", ["fraction"]),
    ("runs at 146 GFLOP/s", ["rate or size"]),
    ("the study's 93.9 % and 364×", []),           # published numbers may be quoted
    ("`make book` ≤ 30 minutes", []),             # a target, not a result
    ("code `0.959` and $0.5 \\times 2$", []),
    ("```bash\nsleep 30 s\n```\n", []),
    ("<!-- findings:start -->\n95.9 %\n<!-- findings:end -->", []),
    ("3 mm voxels, 48 symmetries, 2,000 events, batch 16", []),
])
def test_typed_numbers_finds_result_like_numbers(text, kinds):
    assert [n.kind for n in prose.typed_numbers(text)] == kinds


def test_typed_numbers_reports_the_line():
    found = prose.typed_numbers("---\nx: 1 %\n---\nline\n\nhere 12.5 % of it\n", "p.md")
    assert [(n.line, n.text) for n in found] == [(6, "12.5 %")]
    assert str(found[0]) == "p.md:6: percentage '12.5 %'"


def test_no_result_number_typed_into_the_book_or_readme():
    paths = [ROOT / "README.md", *sorted((BOOK / "notebooks").glob("*.md")),
             *sorted(BOOK.glob("*.md"))]
    found = prose.typed_numbers_in(paths, ROOT)
    assert not found, "numbers a run produced, typed by hand (generate them from the " \
        "results):\n" + "\n".join(map(str, found))


def test_the_scan_covers_every_page_of_the_book():
    toc = (BOOK / "_toc.yml").read_text()
    pages_in_toc = {Path(line.split(":")[-1].strip()).name for line in toc.splitlines()
                    if "executed/" in line}
    assert pages_in_toc <= {p.stem for p in (BOOK / "notebooks").glob("*.md")}
