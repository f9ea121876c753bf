"""Every environment variable the project reads, named and read here alone (the distributed
launcher's own variables aside), so that a user finds them in one place."""

import os

#: Where trained runs are cached (default: ``artifacts/`` of the checkout).
ARTIFACTS = "ANALYSIS_LIB_ARTIFACTS"
#: Where the chapters record their results (default: ``book/executed/results``).
RESULTS = "ANALYSIS_LIB_RESULTS"
#: The profile ``jupyter-book build book`` executes stale chapters with (default ``ci``).
PROFILE = "ANALYSIS_LIB_PROFILE"
#: Set by ``reproduce`` around its own ``jupyter-book build``: the chapters are fresh.
BOOK_EXECUTED = "ANALYSIS_LIB_BOOK_EXECUTED"
#: The sparse engine's C kernels: ``1`` (the CPU's best build), ``fp32``, ``avx2`` or ``0``.
NATIVE = "ANALYSIS_LIB_NATIVE"


def setting(name: str, default: str | None = None) -> str | None:
    """The variable's value, or ``default`` where it is unset or empty."""
    return os.environ.get(name) or default
