"""Results of the simulator's validation: one measured number and its band, one checklist row.

A row passes when every number it measured lies in its band; the numbers stay numbers, so tests
and figures read them, and :attr:`Check.value` is only their text for the table.
"""

from dataclasses import dataclass, field

#: A yes/no condition as a measured number: 1 when it holds, and its band.
HOLDS = (1.0, 1.0)


@dataclass(frozen=True)
class Measured:
    """One measured number of a check and the closed band ``[low, high]`` it must lie in."""

    name: str
    value: float
    low: float
    high: float
    fmt: str = ".3g"

    @property
    def ok(self) -> bool:
        return bool(self.low <= self.value <= self.high)

    def __str__(self) -> str:
        return f"{self.name} {self.value:{self.fmt}}"


@dataclass(frozen=True)
class Check:
    """One row of the validation table: passes when every measured number is in its band."""

    number: int
    statistic: str
    target: str
    measured: tuple[Measured, ...]
    #: arrays behind the values, for figures (empty for rows that need none)
    curves: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def passed(self) -> bool:
        return all(m.ok for m in self.measured)

    @property
    def value(self) -> str:
        """The measured numbers as one line of text."""
        return "; ".join(str(m) for m in self.measured)

    def __getitem__(self, name: str) -> float:
        """The measured number called ``name``."""
        for m in self.measured:
            if m.name == name:
                return m.value
        raise KeyError(f"row {self.number} measures {[m.name for m in self.measured]}, "
                       f"not {name!r}")
