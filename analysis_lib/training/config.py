"""What defines a training run: :class:`TrainConfig`, validated on construction, its schedule,
optimizer and network. A run's folder is named by its hash, so every field is part of it."""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from analysis_lib.core.errors import ConfigError, refuse_unknown
from analysis_lib.models import UResNet

SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("adam", "adamw")


_INT_FIELDS = ("dim", "projection", "depth", "filters", "reps", "batch_size", "iterations",
               "checkpoint_every", "seed")
_FLOAT_FIELDS = ("learning_rate", "decay_from", "warmup", "weight_decay", "rare_oversampling")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (its hash names the run's folder).

    ``schedule="step"`` is the study's constant rate, dropped tenfold after the fraction
    ``decay_from`` of the iterations (which settles a short training's final weights);
    ``schedule="cosine"`` warms up linearly over the fraction ``warmup`` of the iterations and
    then follows a half cosine down to zero.
    ``optimizer`` is the study's ``"adam"`` or ``"adamw"`` (decoupled ``weight_decay``).
    Events that hold a delta-ray or Michel voxel are drawn ``rare_oversampling`` times as
    often as the others. With ``augment`` every drawn event is turned by a random symmetry
    of the voxel grid (axis permutations and mirrorings: 48 in 3D, 8 in 2D), exact
    symmetries of an isotropic sample, so a run that passes over its events many times sees
    them in new orientations. ``init`` is a checkpoint whose weights the network starts from
    (fine-tuning). At each of ``probe_iterations`` the softmax scores of training event
    ``probe_event`` are saved to ``probe_<iteration>.npz``, to watch how the network learns
    one image.
    """

    data: str
    dim: int = 3
    projection: int = 0
    backend: str = "sparse"
    depth: int = 5
    filters: int = 16
    reps: int = 2
    growth: str | None = None
    batch_size: int = 4
    iterations: int = 1000
    learning_rate: float = 1e-3
    decay_from: float = 1.0
    schedule: str = "step"
    warmup: float = 0.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    class_weights: bool = False
    rare_oversampling: float = 1.0
    augment: bool = False
    relabel: bool = False
    checkpoint_every: int = 500
    seed: int = 0
    amp: bool = True
    init: str | None = None
    probe_event: int | None = None
    probe_iterations: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}={value!r} must be a whole number")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ConfigError(f"{name}={value!r} must be a finite number")
        for name in ("batch_size", "iterations", "checkpoint_every", "depth", "filters", "reps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be >= 0")
        if self.dim not in (2, 3) or self.projection not in (0, 1, 2):
            raise ConfigError(f"dim={self.dim}, projection={self.projection}: dim is 2 or 3, "
                              f"projection 0, 1 or 2")
        if not 0 < self.learning_rate <= 1:
            raise ConfigError(f"learning_rate={self.learning_rate} must be in (0, 1] (the "
                              f"study's Adam used 1e-3)")
        for name in ("decay_from", "warmup"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be a fraction in [0, 1]")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r}; choose one of {OPTIMIZERS}")
        if not 1.0 <= self.rare_oversampling < 1e3:
            raise ConfigError(f"rare_oversampling={self.rare_oversampling} must be in [1, 1000)")
        if not 0.0 <= self.weight_decay < 1.0:
            raise ConfigError(f"weight_decay={self.weight_decay} must be in [0, 1)")
        if self.probe_iterations and self.probe_event is None:
            raise ConfigError("probe_iterations needs a probe_event")
        object.__setattr__(self, "probe_iterations", tuple(self.probe_iterations))

    def learning_rate_at(self, iteration: int) -> float:
        """The rate of (1-based) ``iteration`` under the schedule."""
        if self.schedule == "step":
            decayed = iteration > self.decay_from * self.iterations
            return self.learning_rate * (0.1 if decayed else 1.0)
        ramp = self.warmup * self.iterations
        if iteration <= ramp:
            return self.learning_rate * iteration / ramp
        progress = (iteration - ramp) / max(self.iterations - ramp, 1)
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def make_optimizer(self, parameters) -> torch.optim.Optimizer:
        """The configured optimizer over ``parameters``, in its fused form (one kernel for all
        parameters: the U-ResNet's many small tensors make the per-tensor form cost about 8 % of
        a CPU step)."""
        kind = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return kind(parameters, lr=self.learning_rate, weight_decay=self.weight_decay,
                    fused=True)

    def model(self) -> UResNet:
        """A freshly initialised network of this configuration."""
        return UResNet(self.dim, self.depth, self.filters, self.reps, self.backend, self.growth)


@dataclass(frozen=True)
class RunSpec:
    """A profile's run as written (``shared.runs.<name>``): the data set by name, the run it
    fine-tunes by name (or None), and its other :class:`TrainConfig` settings."""

    data: str
    init: str | None = None
    settings: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, object]) -> "RunSpec":
        """Check a run's mapping: it names a data set, and every key is a :class:`TrainConfig`
        field (a misspelling would otherwise train with the default; the nearest is
        suggested)."""
        if "data" not in spec:
            raise ConfigError(f"run {name!r} names no data set (key 'data')")
        refuse_unknown(spec, [f.name for f in dataclasses.fields(TrainConfig)],
                       f"run {name!r}: unknown setting")
        settings = dict(spec)
        data, init = settings.pop("data"), settings.pop("init", None)
        return cls(str(data), init or None, settings)
