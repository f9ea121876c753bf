"""Submanifold convolution on x86-64 CPUs, compiled from ``native.c``: fp32 products with AVX2
or AVX-512, bf16 products accumulated in fp32 with AVX-512 BF16.

im2col multiplies every neighbour slot, absent ones as zeros, and writes the gathered matrix
to memory before a BLAS call; at a U-ResNet's shapes (N x 27*C by C, C = 16..80) that BLAS
runs far from peak, and half (first level) to three quarters (deeper) of the slots are
absent. The C kernels multiply the present pairs only, offset by offset into output rows held
in cache, from register tiles (``native.c``). Measured on a 2-core AVX2 EPYC, one thread, at
the 128 px network's first level (16 channels): forward 1.0 ms against 3.4-5 ms for im2col,
input and weight gradient 2.1 ms against 5.6-7.9 ms; a training step 2.3-2.9x faster
(``benchmarks/train_step.py``).

The library is compiled with the system C compiler on first use (about a second) into the
user's cache folder (the temporary folder where that is not writable), named by the hash of
its source and flags, for the widest vectors the CPU runs: 16 lanes where torch finds
AVX-512, else 8 (both sum every element in the same order and give the same bits). Where the
CPU's flags name AVX-512 BF16 the build also holds bf16 products (vdpbf16ps: 32 products per
instruction against 16 fp32 ones), which bf16 tensors reach, as under
``torch.autocast("cpu", dtype=torch.bfloat16)``; they return fp32, the sums' precision.

``ANALYSIS_LIB_NATIVE`` overrides the choice: ``fp32`` (the fp32 kernels only, as on a CPU
without bf16), ``avx2`` (the 8-lane fp32 build), ``0`` (no kernels: im2col products). Where
there is no x86-64 CPU with AVX2 or no compiler, :func:`available` is False and the engine
keeps its im2col path; a compiler that fails is reported once as a warning.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from analysis_lib.core import env
from analysis_lib.core.errors import EngineError

SOURCE = Path(__file__).with_name("native.c")
FLAGS = ("-O3", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC")
#: The instruction-set flags of each build, by torch's name for the CPU's capability.
ISA_FLAGS = {"AVX2": ("-mavx2", "-mfma"), "AVX512": ("-mavx512f", "-mavx2", "-mfma"),
             "AVX512_BF16": ("-mavx512f", "-mavx2", "-mfma", "-mavx512bf16", "-mavx512bw")}
#: The values of ANALYSIS_LIB_NATIVE: the default, and the overrides.
SETTINGS = ("1", "fp32", "avx2", "0")
# Below this many multiply-adds a product runs on one thread: a thread hand-off costs more.
_PARALLEL_WORK = 1 << 21


@dataclass(frozen=True)
class PairLists:
    """The present (out, in) pairs of a kernel map by offset: those of offset k are
    ``out[ptr[k]:ptr[k+1]]`` and ``inp[...]`` (int32), sorted by out."""

    ptr: Tensor
    out: Tensor
    inp: Tensor

    @property
    def volume(self) -> int:
        """Number of kernel offsets K."""
        return self.ptr.shape[0] - 1


def _cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "analysis_lib"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _compile(target: Path, flags: tuple[str, ...]) -> None:
    """Compile :data:`SOURCE` into ``target``, atomically (training workers may race)."""
    compiler = _compiler()
    if compiler is None:
        raise OSError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        done = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(built)],
                              capture_output=True, text=True)
        if done.returncode:
            raise OSError(f"{compiler} failed: {done.stderr.strip()[:300]}")
        os.replace(built, target)


def instruction_set() -> str | None:
    """The build this CPU runs (:data:`ISA_FLAGS`): ``"AVX512_BF16"`` where the CPU's flags
    name AVX-512 BF16, else ``"AVX512"`` or ``"AVX2"`` as torch finds the CPU; narrower where
    ``ANALYSIS_LIB_NATIVE`` asks (``fp32``, ``avx2``); None on other CPUs and where it is
    ``0``."""
    setting = env.setting(env.NATIVE, "1")
    if setting not in SETTINGS:
        raise EngineError(f"ANALYSIS_LIB_NATIVE={setting!r} is none of {', '.join(SETTINGS)}")
    capability = torch.backends.cpu.get_cpu_capability()
    if setting == "0" or platform.machine() not in ("x86_64", "AMD64") or \
            capability not in ISA_FLAGS:
        return None
    if setting == "avx2":
        return "AVX2"
    if setting == "1" and capability == "AVX512" and torch.cpu._is_avx512_bf16_supported():
        return "AVX512_BF16"
    return capability


def _library() -> ctypes.CDLL | None:
    """The compiled kernels for this CPU, or None where this CPU or machine cannot run them or
    they are switched off."""
    isa = instruction_set()
    return None if isa is None else _build(isa)


@functools.cache
def _build(isa: str) -> ctypes.CDLL | None:
    """The kernels compiled for ``isa`` (once per process, once per machine on disk)."""
    flags = (*FLAGS, *ISA_FLAGS[isa])
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:16]
    name = f"sparse-native-{digest}.so"
    lib, errors = None, []
    for folder in (_cache_folder(), Path(tempfile.gettempdir()) / f"analysis_lib-{os.getuid()}"):
        try:
            if not (folder / name).is_file():
                _compile(folder / name, flags)
            lib = ctypes.CDLL(str(folder / name))
            break
        except OSError as err:  # an unwritable cache folder: the temporary one next
            errors.append(f"{folder}: {err}")
    if lib is None:
        warnings.warn(f"the sparse engine's C kernels are not available ({'; '.join(errors)}); "
                      f"it uses im2col products instead", RuntimeWarning, stacklevel=3)
        return None
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.neighbour_lists.argtypes = [ptr, i64, i32, ptr, ptr, ptr]
    lib.sparse_conv.argtypes = [ptr] * 6 + [i64, i32, i32, i32, i32]
    lib.sparse_conv_weight_grad.argtypes = [ptr] * 6 + [i32, i32, i32, i32]
    lib.mirror_transpose.argtypes = [ptr, ptr, i32, i32, i32]
    if isa == "AVX512_BF16":
        lib.sparse_conv_bf16.argtypes = lib.sparse_conv.argtypes
        lib.sparse_conv_weight_grad_bf16.argtypes = lib.sparse_conv_weight_grad.argtypes
        lib.pack_weights_bf16.argtypes = [ptr, i32, i32, i32, i32, i32, ptr]
    lib.norm_relu_forward.argtypes = [ptr, i64, i32, ptr, ptr, ctypes.c_float] + [ptr] * 5 + [i32]
    lib.norm_relu_backward.argtypes = [ptr, ptr, ptr, i64, i32] + [ptr] * 7 + [i32]
    return lib


def planned() -> bool:
    """Whether the C kernels are meant to serve this machine, decided without building them
    (an instruction set and a C compiler): what a run's key and its precision read, so that
    computing a key compiles nothing."""
    return instruction_set() is not None and _compiler() is not None


def available() -> bool:
    """Whether the C kernels serve fp32 products on this machine (:func:`instruction_set`,
    and the library loaded)."""
    return _library() is not None


def bf16_available() -> bool:
    """Whether the C kernels serve bf16 products too (the AVX-512 BF16 build loaded)."""
    return instruction_set() == "AVX512_BF16" and available()


def usable(*tensors: Tensor) -> bool:
    """Whether the fp32 C kernels take these tensors: fp32 on the CPU and :func:`available`."""
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return False
    return tensors[0].shape[0] < 2**31 and available()


def takes_product(*tensors: Tensor) -> bool:
    """Whether the C kernels take a product of these tensors: :func:`usable`, or bf16 on the
    CPU where :func:`bf16_available`."""
    if all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors):
        return tensors[0].shape[0] < 2**31 and bf16_available()
    return usable(*tensors)


def pair_lists(columns: Tensor) -> PairLists:
    """:class:`PairLists` of a kernel map's ``columns`` (N, K), N marking an absent site."""
    n, volume = columns.shape
    columns = columns.contiguous()
    present = int((columns != n).sum())
    ptr = torch.empty(volume + 1, dtype=torch.int64)
    out = torch.empty(present, dtype=torch.int32)
    inp = torch.empty(present, dtype=torch.int32)
    _library().neighbour_lists(columns.data_ptr(), n, volume, ptr.data_ptr(), out.data_ptr(),
                               inp.data_ptr())
    return PairLists(ptr, out, inp)


def _threads(work: int) -> int:
    """torch's thread count, or fewer where a product is too small to share."""
    return max(1, min(torch.get_num_threads(), work // _PARALLEL_WORK))


def _even_columns(x: Tensor) -> Tensor:
    """bf16 rows (N, C) with a zero column appended where C is odd: a word holds two."""
    return x if x.shape[1] % 2 == 0 else torch.nn.functional.pad(x, (0, 1))


def _packed(w: Tensor, transpose: bool, mirror: bool) -> Tensor:
    """bf16 weights (K, C_in, C_out) as native.c's pack_weights_bf16 lays them out: (K,
    ceil(rows / 2), cols) words of two bf16 numbers, fp32 in name only."""
    volume, c_in, c_out = w.shape
    rows, cols = (c_out, c_in) if transpose else (c_in, c_out)
    out = torch.empty(volume, (rows + 1) // 2, cols, dtype=torch.float32)
    _library().pack_weights_bf16(w.contiguous().data_ptr(), volume, c_in, c_out, transpose,
                                 mirror, out.data_ptr())
    return out


def _product(x: Tensor, lists: PairLists, w: Tensor, c_out: int, mirror: bool) -> Tensor:
    """``out[i] = sum over pairs (i, j) of offset k of x[j] @ W[k]``, fp32 (N, c_out), where W
    is ``w`` (K, C_in, c_out) or, with ``mirror``, the input gradient's weights of a ``w``
    (K, c_out, C_in): each offset's transposed and taken from its mirror offset (in C: torch's
    flip and strided copy of a (27, 80, 80) weight took 0.5 ms)."""
    x, w = x.contiguous(), w.contiguous()
    n = x.shape[0]
    out = torch.empty(n, c_out, dtype=torch.float32)
    if x.dtype == torch.bfloat16:
        weights, x = _packed(w, mirror, mirror), _even_columns(x).view(torch.float32)
        fn = _library().sparse_conv_bf16
    else:
        weights, fn = w, _library().sparse_conv
        if mirror:
            weights = w.new_empty(w.shape[0], w.shape[2], w.shape[1])
            _library().mirror_transpose(w.data_ptr(), weights.data_ptr(), *w.shape)
    words = x.shape[1]
    fn(x.data_ptr(), lists.ptr.data_ptr(), lists.out.data_ptr(), lists.inp.data_ptr(),
       weights.data_ptr(), out.data_ptr(), n, lists.volume, words, c_out,
       _threads(lists.out.shape[0] * words * c_out))
    return out


def conv(x: Tensor, lists: PairLists, w: Tensor) -> Tensor:
    """``out[i] = sum over pairs (i, j) of offset k of x[j] @ w[k]``: x (N, C_in) fp32 or
    bf16, w (K, C_in, C_out) of the same dtype; out (N, C_out) fp32."""
    return _product(x, lists, w, w.shape[2], mirror=False)


def conv_input_grad(g: Tensor, lists: PairLists, w: Tensor) -> Tensor:
    """Gradient of :func:`conv`'s ``x`` for output gradient ``g`` (N, C_out), fp32: the same
    product with each offset's weights transposed and taken from its mirror offset."""
    return _product(g, lists, w, w.shape[1], mirror=True)


def conv_weight_grad(x: Tensor, lists: PairLists, g: Tensor) -> Tensor:
    """Gradient of :func:`conv`'s ``w`` for output gradient ``g`` (N, C_out): (K, C_in,
    C_out) fp32. Threads split the offsets, each offset's pairs summed by one thread."""
    x, g = x.contiguous(), g.contiguous()
    volume, c_in, c_out = lists.volume, x.shape[1], g.shape[1]
    gw = torch.empty(volume, c_in, c_out, dtype=torch.float32)
    bf16 = x.dtype == torch.bfloat16
    fn = _library().sparse_conv_weight_grad_bf16 if bf16 else _library().sparse_conv_weight_grad
    fn(x.data_ptr(), lists.ptr.data_ptr(), lists.out.data_ptr(), lists.inp.data_ptr(),
       g.data_ptr(), gw.data_ptr(), volume, c_in, c_out,
       _threads(lists.out.shape[0] * c_in * c_out))
    return gw


_NORM_BLOCK = 2048  # rows per block of the per-channel sums (NORM_BLOCK in native.c)


def _sums_scratch(x: Tensor) -> Tensor:
    """Per-block partial sums of native.c's BatchNorm (kept in a variable for the call)."""
    return torch.empty((-(-x.shape[0] // _NORM_BLOCK), 2, x.shape[1]), dtype=torch.float64)


def norm_relu(x: Tensor, gamma: Tensor, beta: Tensor, eps: float
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training BatchNorm over the rows of x (N, C) followed by ReLU: ``(y, mean, var,
    invstd)``, var the biased batch variance."""
    x = x.contiguous()
    n, c = x.shape
    y = x.new_empty(n, c)
    mean, var, invstd = (x.new_empty(c) for _ in range(3))
    scratch = _sums_scratch(x)
    _library().norm_relu_forward(x.data_ptr(), n, c, gamma.contiguous().data_ptr(),
                                 beta.contiguous().data_ptr(), eps, y.data_ptr(),
                                 mean.data_ptr(), var.data_ptr(), invstd.data_ptr(),
                                 scratch.data_ptr(), _threads(n * c))
    return y, mean, var, invstd


def norm_relu_grad(x: Tensor, y: Tensor, gy: Tensor, mean: Tensor, invstd: Tensor,
                   gamma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(gx, ggamma, gbeta)`` of :func:`norm_relu` for the output gradient gy."""
    gy = gy.contiguous()
    n, c = x.shape
    gx = x.new_empty(n, c)
    ggamma, gbeta = x.new_empty(c), x.new_empty(c)
    scratch = _sums_scratch(x)
    _library().norm_relu_backward(x.data_ptr(), y.data_ptr(), gy.data_ptr(), n, c,
                                  mean.data_ptr(), invstd.data_ptr(),
                                  gamma.contiguous().data_ptr(), gx.data_ptr(),
                                  ggamma.data_ptr(), gbeta.data_ptr(),
                                  scratch.data_ptr(), _threads(n * c))
    return gx, ggamma, gbeta
