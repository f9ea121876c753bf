"""One module per chapter of the book: each computes its chapter's tables from the profile's
runs, returns them as one frozen dataclass (recorded beside the executed notebooks by
:func:`analysis_lib.study.results.record`), and judges the study's claims that the chapter
tests, reading only that dataclass. The notebooks call these modules and draw; the findings
page (:mod:`analysis_lib.report.findings`) imports the judges."""
