"""Each chapter's measured results, kept as JSON beside the executed notebooks so that the
findings page judges the study's claims on exactly the numbers the chapters show."""

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from analysis_lib.core import env
from analysis_lib.core.errors import DataError
from analysis_lib.core.files import write_text
from analysis_lib.core.paths import ROOT

#: Where the chapters' results go; ``ANALYSIS_LIB_RESULTS`` overrides it.
DEFAULT_FOLDER = ROOT / "book" / "executed" / "results"


def folder() -> Path:
    """The results folder in force."""
    return Path(env.setting(env.RESULTS) or DEFAULT_FOLDER)


def _plain(value: object) -> object:
    """JSON-ready copy: result objects (dataclasses) to their fields, numpy scalars, arrays
    and pandas series to Python, NaN to None, keys to strings."""
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
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record(chapter: str, where: Path | None = None, **values: object) -> Path:
    """Write ``values`` as the results of ``chapter`` (replacing earlier ones, atomically)."""
    return write_text((where or folder()) / f"{chapter}.json",
                      json.dumps(_plain(values), indent=1))


def load_all(where: Path | None = None) -> dict[str, dict]:
    """Every chapter's recorded results, by chapter name."""
    found = {}
    for path in sorted((where or folder()).glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err}); re-run that chapter") from None
    return found
