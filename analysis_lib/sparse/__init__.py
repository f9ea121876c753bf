"""Submanifold sparse convolution engine with SparseConvNet semantics, CPU and CUDA.

A :class:`SparseTensor` holds features on active sites; the ops in
:mod:`analysis_lib.sparse.functional` (their products in :mod:`~analysis_lib.sparse.kernels`)
and the modules in :mod:`analysis_lib.sparse.nn` equal dense convolution read at the sites
(:mod:`~analysis_lib.sparse.dense` converts), while costing only the active pairs.
"""

from analysis_lib.sparse import functional, nn
from analysis_lib.sparse.dense import from_dense, to_dense
from analysis_lib.sparse.downsample import DownsampleMap, build_downsample_map
from analysis_lib.sparse.functional import (
    apply_feats,
    cat,
    linear,
    strided_conv,
    submanifold_conv,
    transposed_conv,
)
from analysis_lib.sparse.kmap import (
    NeighbourMap,
    SiteSet,
    build_neighbour_map,
    kernel_offsets,
    make_site_set,
)
from analysis_lib.sparse.tensor import CoordinateCache, SparseTensor

__all__ = [
    "CoordinateCache",
    "DownsampleMap",
    "NeighbourMap",
    "SiteSet",
    "SparseTensor",
    "apply_feats",
    "build_downsample_map",
    "build_neighbour_map",
    "cat",
    "from_dense",
    "functional",
    "kernel_offsets",
    "linear",
    "make_site_set",
    "nn",
    "strided_conv",
    "submanifold_conv",
    "to_dense",
    "transposed_conv",
]
