"""The library's own exceptions: one base class, one subclass per domain."""

import difflib
import warnings
from collections.abc import Iterable, Sequence


def did_you_mean(key: str, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the option nearest a misspelt ``key``, else ``""``."""
    near = difflib.get_close_matches(str(key), list(options), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


class AnalysisError(Exception):
    """Base class of every error this library raises on purpose."""


class DataError(AnalysisError, ValueError):
    """A data file, product or array is missing, malformed or inconsistent."""


class ConfigError(AnalysisError, ValueError):
    """A setting, argument or profile parameter is out of range or unknown."""


class EngineError(AnalysisError, ValueError):
    """The sparse engine was given inconsistent tensors, coordinates or weights."""


class StorageError(AnalysisError, OSError):
    """A file cannot be written (disk full, read-only folder) or would replace another."""


class TrainingError(AnalysisError, RuntimeError):
    """A training cannot go on: it diverged, or its run folder holds another run."""


def refuse_unknown(keys: Iterable[str], allowed: Sequence[str], what: str) -> None:
    """A :class:`ConfigError` ``"<what> 'key'; did you mean 'x'?"`` (or naming the ``allowed``
    settings) for the first of ``keys`` not among ``allowed``: a misspelt setting must not
    silently fall back to its default."""
    for key in keys:
        if key not in allowed:
            hint = did_you_mean(key, allowed) or f"; settings are {list(allowed)}"
            raise ConfigError(f"{what} {key!r}{hint}")


def one_line_warnings() -> None:
    """Print warnings as ``warning: <message>``, one line, without the warning's source line
    (for the command line and its worker processes)."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
