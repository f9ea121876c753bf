"""The findings as tables: the Findings page's coloured frame and the README's Markdown section
between its markers (``python -m analysis_lib findings --update-readme README.md``, which also
writes the README's build section)."""

from pathlib import Path

import pandas as pd
from pandas.io.formats.style import Styler

from analysis_lib.core.errors import DataError
from analysis_lib.core.files import write_text
from analysis_lib.report.findings import NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, Verdict


def to_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """The findings table: one row per claim."""
    return pd.DataFrame([{"claim": v.claim.number, "source": v.claim.source,
                          "statement": v.claim.statement, "study": v.claim.study,
                          "criterion": v.claim.criterion, "ours": v.ours, "verdict": v.status}
                         for v in verdicts]).set_index("claim")


#: Background colour of each verdict's cell on the Findings page.
VERDICT_COLOURS = {REPRODUCED: "#d9f2d9", NOT_REPRODUCED: "#f8d7d7", NOT_TESTABLE: "#eeeeee"}


def styled(table: pd.DataFrame) -> Styler:
    """:func:`to_frame`'s table for display: left-aligned text, verdicts coloured."""
    return table.style.map(lambda v: f"background-color: {VERDICT_COLOURS.get(v, '')}",
                           subset=["verdict"]).set_properties(**{"text-align": "left"})


def counts(verdicts: list[Verdict]) -> dict[str, int]:
    """How many claims have each verdict."""
    return {s: sum(v.status == s for v in verdicts) for s in (REPRODUCED, NOT_REPRODUCED,
                                                              NOT_TESTABLE)}


def markdown(verdicts: list[Verdict]) -> str:
    """The findings as a Markdown table (the README's results section)."""
    lines = ["| # | claim | study | ours | verdict |", "|---|---|---|---|---|"]
    for v in verdicts:
        cells = (str(v.claim.number), f"{v.claim.statement} ({v.claim.source})", v.claim.study,
                 v.ours, f"**{v.status}**")
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    n = counts(verdicts)
    lines.append("")
    lines.append(", ".join(f"{k}: {v}" for k, v in n.items()))
    return "\n".join(lines)


def markers(section: str) -> tuple[str, str]:
    """The comments that open and close a generated section of a Markdown file."""
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


def write_between_markers(path: str | Path, text: str, section: str = "findings") -> None:
    """Replace what lies between the :func:`markers` of ``section`` in a file."""
    path = Path(path)
    content = path.read_text()
    start_marker, end_marker = markers(section)
    start, end = content.find(start_marker), content.find(end_marker)
    if start < 0 or end < start:
        raise DataError(f"{path}: no '{start_marker}' … '{end_marker}' section to update")
    write_text(path, content[: start + len(start_marker)] + "\n" + text + "\n" + content[end:])
