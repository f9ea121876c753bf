"""Frozen dataclasses built from YAML or JSON mappings, checked against their type hints.

A misspelt key must not fall back to a default, a missing one must be named, and a value of the
wrong type must fail where it is read, with the path to it (``michel.michel_run``), rather than
deep inside a chapter. Names of runs and data sets are checked against those that exist.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NewType

from analysis_lib.core.errors import ConfigError, did_you_mean, refuse_unknown

#: A network of the profile (a key of ``shared.runs``).
RunName = NewType("RunName", str)
#: A data set of the manifest.
DataSetName = NewType("DataSetName", str)


@dataclass(frozen=True)
class Names:
    """The run and data-set names a value may take (None: any string)."""

    runs: tuple[str, ...] | None = None
    data_sets: tuple[str, ...] | None = None


def check_keys(cls: type, raw: Mapping, what: str, error: type[Exception] = ConfigError) -> None:
    """An ``error`` for the first key of ``raw`` that is no field of ``cls`` (with the nearest
    field) or for the required fields it lacks."""
    if not isinstance(raw, Mapping):
        raise error(f"{what}: expected a mapping, got {raw!r}")
    fields = dataclasses.fields(cls)
    try:
        refuse_unknown(raw, [f.name for f in fields], f"{what}: unknown key")
    except ConfigError as exc:
        raise error(str(exc)) from None
    missing = [f.name for f in fields if f.name not in raw
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{what} sets no {', '.join(missing)}")


def build(cls: type, raw: Mapping, what: str, names: Names = Names()) -> typing.Any:
    """A ``cls`` from ``raw``: keys checked, each value converted to its field's type (lists to
    tuples, nested mappings to dataclasses, ints to floats) or a ConfigError naming it."""
    check_keys(cls, raw, what)
    hints = typing.get_type_hints(cls)
    return cls(**{k: _convert(v, hints[k], f"{what}.{k}", names) for k, v in raw.items()})


def _convert(value: object, hint: object, where: str, names: Names) -> object:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, where, names)
    if hint is RunName or hint is DataSetName:
        known = names.runs if hint is RunName else names.data_sets
        kind = "run" if hint is RunName else "data set"
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a {kind} name, got {value!r}")
        if known is not None and value not in known:
            raise ConfigError(f"{where}: no {kind} {value!r}{did_you_mean(value, known)}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where, names)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]", names) for i, v in enumerate(value))
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert(k, args[0], f"{where} key", names):
                _convert(v, args[1], f"{where}[{k!r}]", names) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
