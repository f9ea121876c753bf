"""Bad input to the sparse engine raises a clear EngineError / ConfigError."""

from __future__ import annotations

import pytest
import torch

from analysis_lib.core.errors import AnalysisError, ConfigError, EngineError
from analysis_lib.sparse import (
    SparseTensor,
    cat,
    from_dense,
    kernel_offsets,
    linear,
    strided_conv,
    submanifold_conv,
    to_dense,
    transposed_conv,
)
from analysis_lib.sparse import nn as snn

COORDS = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 2, 3, 4]])


def sample(channels: int = 2) -> SparseTensor:
    return SparseTensor(COORDS, torch.ones(3, channels))


CONSTRUCTOR_CASES = {
    "float_coords": (COORDS.float(), torch.ones(3, 2), "int32 or int64"),
    "coords_1d": (COORDS[:, 0], torch.ones(3, 2), "shape"),
    "coords_4d": (torch.zeros(3, 5, dtype=torch.int64), torch.ones(3, 2), r"\(3, 5\)"),
    "negative": (torch.tensor([[0, 1, -1, 0]]), torch.ones(1, 2), r"\[0, 1, -1, 0\]"),
    "duplicate": (
        torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 2, 3]]),
        torch.ones(3, 2),
        r"duplicate site \[0, 1, 2, 3\]",
    ),
    "length_mismatch": (COORDS, torch.ones(4, 2), "4 rows but coords has 3"),
    "int_feats": (COORDS, torch.ones(3, 2, dtype=torch.int64), "floating"),
    "feats_1d": (COORDS, torch.ones(3), "feats must have shape"),
}


@pytest.mark.parametrize("name", sorted(CONSTRUCTOR_CASES))
def test_constructor_rejects(name: str) -> None:
    coords, feats, message = CONSTRUCTOR_CASES[name]
    with pytest.raises(EngineError, match=message):
        SparseTensor(coords, feats)


def test_engine_errors_are_value_errors() -> None:
    assert issubclass(EngineError, ValueError) and issubclass(EngineError, AnalysisError)


def test_int32_coords_accepted() -> None:
    assert SparseTensor(COORDS.int(), torch.ones(3, 1)).coords.dtype == torch.int64


def test_bad_stride() -> None:
    with pytest.raises(EngineError, match="stride"):
        SparseTensor(COORDS, torch.ones(3, 1), stride=0)


OP_CASES = {
    "subm_channels": (lambda: submanifold_conv(sample(2), torch.ones(27, 3, 4)), "C_in=3"),
    "subm_offsets": (lambda: submanifold_conv(sample(2), torch.ones(8, 2, 4)), "8 offsets"),
    "subm_rank": (lambda: submanifold_conv(sample(2), torch.ones(27, 2)), r"\(27, 2\)"),
    "strided_channels": (lambda: strided_conv(sample(2), torch.ones(8, 5, 4)), "C_in=5"),
    "strided_offsets": (lambda: strided_conv(sample(2), torch.ones(4, 2, 4)), r"\(8, C_in"),
    "transposed_fine_missing": (
        lambda: transposed_conv(
            SparseTensor(COORDS, torch.ones(3, 2), stride=2), torch.ones(8, 2, 2)
        ),
        "stride 1",
    ),
    "transposed_odd_stride": (
        lambda: transposed_conv(sample(2), torch.ones(8, 2, 2)),
        "even input stride",
    ),
    "linear_channels": (lambda: linear(sample(2), torch.ones(3, 4)), r"\(2, C_out\)"),
    "module_channels": (lambda: snn.SubmanifoldConv(3, 4)(sample(2)), "2 channels"),
    "cat_sites": (
        lambda: cat([sample(), SparseTensor(COORDS[:2], torch.ones(2, 2))]),
        r"tensors\[1\] has 2 sites",
    ),
    "cat_empty": (lambda: cat([]), "at least one"),
    "with_feats_rows": (lambda: sample().with_feats(torch.ones(2, 2)), r"\(3, C\)"),
    "to_dense_small": (lambda: to_dense(sample(), (2, 2, 2)), "spatial_shape"),
    "from_dense_outside": (
        lambda: from_dense(torch.ones(1, 2, 3, 3), torch.tensor([[0, 3, 0]])),
        "outside",
    ),
    "from_dense_rank": (lambda: from_dense(torch.ones(2, 3)), r"shape \(2, 3\)"),
}


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_op_rejects(name: str) -> None:
    call, message = OP_CASES[name]
    with pytest.raises(EngineError, match=message):
        call()


def test_cat_equal_coords_from_other_cache() -> None:
    a, b = sample(1), sample(2)
    assert cat([a, b]).feats.shape == (3, 3)


CONFIG_CASES = {
    "subm_even": lambda: snn.SubmanifoldConv(1, 1, kernel_size=2),
    "conv_kernel3": lambda: snn.Conv(1, 1, kernel_size=3),
    "transpose_stride1": lambda: snn.ConvTranspose(1, 1, stride=1),
    "dim4": lambda: snn.SubmanifoldConv(1, 1, dim=4),
    "channels0": lambda: snn.Linear(0, 1),
    "offsets_even": lambda: kernel_offsets(4, 3),
    "offsets_dim1": lambda: kernel_offsets(3, 1),
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_config_rejects(name: str) -> None:
    with pytest.raises(ConfigError):
        CONFIG_CASES[name]()
