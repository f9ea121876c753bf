"""Each chapter's measured results, kept as JSON beside the executed notebooks so that the
findings page judges the study's claims on exactly the numbers the chapters show.

A chapter records one frozen dataclass (its module in :mod:`analysis_lib.chapters` defines it)
and :func:`read` builds the same class back, checked field by field: a record written under
other field names than its reader expects is an error naming the field, never a silent gap.
NaN is written as JSON's ``NaN`` (Python's reading of it), so that a float stays a float.
"""

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from analysis_lib.core import env
from analysis_lib.core.errors import ConfigError, DataError
from analysis_lib.core.fields import build
from analysis_lib.core.files import write_text
from analysis_lib.core.paths import ROOT

T = TypeVar("T")

#: Where the chapters' results go; ``ANALYSIS_LIB_RESULTS`` overrides it.
DEFAULT_FOLDER = ROOT / "book" / "executed" / "results"


def folder() -> Path:
    """The results folder in force."""
    return Path(env.setting(env.RESULTS) or DEFAULT_FOLDER)


def _plain(value: object) -> object:
    """JSON-ready copy: result objects (dataclasses) to their fields, numpy scalars, arrays
    and pandas series to Python, keys to strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | pd.Series):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return value


def record(chapter: str, result: object, where: Path | None = None) -> Path:
    """Write ``result`` (a dataclass) as the results of ``chapter`` (replacing earlier ones,
    atomically)."""
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        raise TypeError(f"{chapter}: a chapter records a dataclass, got {type(result).__name__}")
    return write_text((where or folder()) / f"{chapter}.json",
                      json.dumps(_plain(result), indent=1))


def read(cls: type[T], chapter: str, recorded: Mapping) -> T:
    """``cls`` built from ``chapter``'s ``recorded`` mapping; a DataError naming the field where
    the record and the class disagree (a renamed, missing or mistyped field)."""
    try:
        return build(cls, recorded, f"{chapter} results")
    except ConfigError as err:
        raise DataError(f"{err}: the record does not match {cls.__qualname__}; re-run the "
                        f"{chapter} chapter") from None


def load_all(where: Path | None = None) -> dict[str, dict]:
    """Every chapter's recorded results, by chapter name."""
    found = {}
    for path in sorted((where or folder()).glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err}); re-run that chapter") from None
    return found
