"""torch.nn modules of the sparse engine; each takes and returns a :class:`SparseTensor`."""

from __future__ import annotations

import math

import torch
from torch import nn

from analysis_lib.core.errors import ConfigError
from analysis_lib.sparse import functional, native
from analysis_lib.sparse.tensor import SparseTensor

__all__ = [
    "BatchNorm",
    "Concat",
    "Conv",
    "ConvTranspose",
    "Dropout",
    "LeakyReLU",
    "Linear",
    "ReLU",
    "SubmanifoldConv",
]


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


class _KernelConv(nn.Module):
    """Parameters shared by the sparse convolutions: weight (V, C_in, C_out), bias (C_out,)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dim: int, bias: bool
    ) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ConfigError(f"dim must be 2 or 3, got {dim!r}")
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        self.dim = dim
        volume = kernel_size**dim
        self.weight = nn.Parameter(torch.empty(volume, in_channels, out_channels))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal weights over the fan-in ``V * C_in``; zero bias."""
        std = math.sqrt(2.0 / (self.weight.shape[0] * self.in_channels))
        nn.init.normal_(self.weight, 0.0, std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"dim={self.dim}, bias={self.bias is not None}"
        )


class SubmanifoldConv(_KernelConv):
    """Submanifold convolution (odd kernel, output sites = input sites).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd edge of the cubic kernel.
    dim : int
        2 or 3.
    bias : bool
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dim: int = 3,
        bias: bool = False,
    ) -> None:
        if not isinstance(kernel_size, int) or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd, got {kernel_size!r}")
        super().__init__(in_channels, out_channels, kernel_size, dim, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return functional.submanifold_conv(x, self.weight, self.bias)


def _check_two(kernel_size: int, stride: int) -> None:
    if kernel_size != 2 or stride != 2:
        raise ConfigError(
            f"only kernel_size=2, stride=2 is supported, got kernel_size={kernel_size!r}, "
            f"stride={stride!r}"
        )


class _StridedKernel(_KernelConv):
    """Parameters of the kernel-2 stride-2 convolutions (the only strided ones supported)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 2,
        dim: int = 3,
        bias: bool = False,
    ) -> None:
        _check_two(kernel_size, stride)
        super().__init__(in_channels, out_channels, kernel_size, dim, bias)
        self.stride = stride

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, stride={self.stride}"


class Conv(_StridedKernel):
    """Strided convolution, kernel 2 stride 2, onto the sites ``unique(floor(p/2))``."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return functional.strided_conv(x, self.weight, self.bias)


class ConvTranspose(_StridedKernel):
    """Transposed convolution, kernel 2 stride 2, back onto the cached finer sites."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return functional.transposed_conv(x, self.weight, self.bias)


class Linear(nn.Module):
    """1x1 convolution: ``feats @ weight + bias`` with weight (C_in, C_out)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal weights over the fan-in ``C_in``; zero bias."""
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / self.in_channels))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}"


class _OnFeats:
    """Mixin: the torch module that follows in the MRO acts on ``x.feats`` of a SparseTensor."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return functional.apply_feats(x, super().forward)  # type: ignore[misc]


class BatchNorm(nn.BatchNorm1d):
    """Batch normalisation of the features over all active sites of the batch; with ``relu``,
    followed by a ReLU. In training on fp32 CPU features the two run fused in C
    (:func:`functional.norm_relu`): apart, they read and write the features six times and
    took a tenth of a U-ResNet training step."""

    def __init__(self, num_features: int, *args: object, relu: bool = False,
                 **kwargs: object) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.relu = relu

    def forward(self, x: SparseTensor) -> SparseTensor:
        return functional.apply_feats(x, self._normalize)

    def _normalize(self, feats: torch.Tensor) -> torch.Tensor:
        if not (self.relu and self.training and self.track_running_stats and self.affine
                and feats.shape[0] > 1 and native.usable(feats, self.weight, self.bias)):
            out = super().forward(feats)
            return torch.relu(out) if self.relu else out
        y, mean, var = functional.norm_relu(feats, self.weight, self.bias, self.eps)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                        else self.momentum)
            n = feats.shape[0]
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_(var * (n / (n - 1)), momentum)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "")


class ReLU(_OnFeats, nn.ReLU):
    """ReLU on the features."""


class LeakyReLU(_OnFeats, nn.LeakyReLU):
    """Leaky ReLU on the features."""


class Dropout(_OnFeats, nn.Dropout):
    """Dropout on the features."""


class Concat(nn.Module):
    """Concatenate tensors on one site set along channels."""

    def forward(self, *tensors: SparseTensor) -> SparseTensor:
        return functional.cat(tensors)
