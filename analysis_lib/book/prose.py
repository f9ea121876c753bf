"""Result-like numbers typed into prose. A number a run produced must reach the book's text from
the recorded results (a generated cell or a generated section), never by hand, or the next
retraining leaves it stale. This finds the ones typed by hand.

What counts as result-like (:data:`RESULT_PATTERNS`): a percentage, a value with ``±``, a ratio
written with ``×``, a fraction with two or more decimals (``0.959``), a duration, a rate or a
memory size. Not looked at: code (fenced blocks, notebook code cells, inline code), math, the
YAML header, sections between ``<!-- … :start -->`` and ``<!-- … :end -->`` markers (written by
a command), targets and criteria (a number after ``≤``, ``≥``, ``<`` or ``>``), and the study's
own published numbers (:mod:`analysis_lib.core.paper`), which a page may quote beside ours.
"""

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from analysis_lib.core import paper

#: Name → regular expression of each kind of result-like number.
RESULT_PATTERNS = {
    "percentage": r"\d+(?:\.\d+)?\s?%",
    "value ± error": r"\d(?:[\d.,]*\d)?\s?±\s?\d(?:[\d.,]*\d)?",
    "ratio": r"\d+(?:\.\d+)?\s?×",
    "fraction": r"(?<![\d.])0\.\d{2,}",
    "duration": r"(?<![\w.])\d+(?:\.\d+)?\s?(?:s|ms|min|minutes|seconds|hours)\b",
    "rate or size": r"\d+(?:\.\d+)?\s?(?:GFLOP/s|it/s|GB|MB|GiB|MiB)\b",
}
#: A number right after one of these is a target or a criterion ("≤ 30 minutes"), not a result.
THRESHOLDS = ("≤", "≥", "<", ">")
_ANY = re.compile("|".join(f"(?P<k{i}>{p})" for i, p in enumerate(RESULT_PATTERNS.values())))
_KINDS = list(RESULT_PATTERNS)

_SKIPPED = [
    re.compile(r"^---\n.*?\n---\n", re.S),                  # YAML header
    re.compile(r"^(`{3,}|~{3,}).*?^\1\s*$", re.S | re.M),   # fenced blocks, code cells
    re.compile(r"<!-- *([\w-]+):start *-->.*?<!-- *\1:end *-->", re.S),
    re.compile(r"`[^`\n]+`"),                               # inline code
    re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S),            # math
    re.compile(r"\]\([^)]*\)"),                             # link targets
]


@dataclass(frozen=True)
class TypedNumber:
    """A result-like number in a file's prose."""

    path: str
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind} {self.text!r}"


@functools.cache
def _published() -> frozenset[float]:
    """The study's numbers, as fractions and as printed (0.939 and 93.9)."""
    values: set[float] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values.update({round(float(value), 6), round(float(value) * 100, 6)})

    for name in dir(paper):
        if name.isupper():
            walk(getattr(paper, name))
    return frozenset(values)


def _numbers_in(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


def _blank(match: re.Match) -> str:
    """The match replaced by spaces, its newlines kept (line numbers stay right)."""
    return re.sub(r"[^\n]", " ", match.group(0))


def typed_numbers(text: str, path: str = "") -> list[TypedNumber]:
    """The result-like numbers in ``text``'s prose that are not the study's own."""
    for skipped in _SKIPPED:
        text = skipped.sub(_blank, text)
    published = _published()
    found = []
    for match in _ANY.finditer(text):
        kind = _KINDS[int(match.lastgroup[1:])]
        if all(round(n, 6) in published for n in _numbers_in(match.group(0))):
            continue
        if text[:match.start()].rstrip().endswith(THRESHOLDS):
            continue
        found.append(TypedNumber(path, text.count("\n", 0, match.start()) + 1, kind,
                                 match.group(0)))
    return found


def typed_numbers_in(paths: list[Path], root: Path) -> list[TypedNumber]:
    """:func:`typed_numbers` over several files, paths reported relative to ``root``."""
    return [n for path in paths
            for n in typed_numbers(path.read_text(), path.relative_to(root).as_posix())]
