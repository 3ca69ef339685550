"""The compiled CPU kernels: build, cache, load and call.

Every op's CPU path is C in a `.c` file beside its Python (`scan/scan.c`, `rglru/rg_lru.c`,
`selective/selective_scan.c`, `conv/causal_conv.c`, `glu/glu.c`, `norm/rms_norm.c`,
`rope/rotary.c`), sharing the headers `vmath.h` (float math that vectorises), `jobs.h` (work
split over threads) and `bf16.h` (bfloat16 storage); they ship as package data.
At first use they are compiled into one shared library with the machine's C compiler and
cached (``$ZOO_KERNELS_CACHE``, else ``~/.cache/zoo_kernels``), keyed by a hash of the
sources, the flags, the compiler and the CPU. The library is loaded with ctypes (no torch
headers, so the build takes about a second), which releases the GIL while a kernel runs.

Each op declares its C function's signature as one table beside its C (`Signature`);
`function` binds it and passes tensors as pointers, None as NULL and tuples as int64 arrays;
`call` runs one over a (batch, time, channels) tensor with the dtype, thread and block
arguments every kernel takes.
A failed build (no compiler, an error) is reported once, in one line, as a warning, and the
ops take their PyTorch paths; so does ``ZOO_KERNELS_CPP=0``.
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
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

#: The C sources, relative to the package; compiled together into one library.
SOURCES = (
    "scan/scan.c",
    "rglru/rg_lru.c",
    "selective/selective_scan.c",
    "conv/causal_conv.c",
    "glu/glu.c",
    "norm/rms_norm.c",
    "rope/rotary.c",
)
HEADERS = ("vmath.h", "jobs.h", "bf16.h")

# -fopenmp-simd honours `omp simd` (vectorised reductions) without linking OpenMP.
# -fno-trapping-math changes no value, only what gcc assumes about FP exception traps: it may
# then evaluate both sides of a select, which the vector math needs to vectorise without
# AVX-512 masks (and is faster with them).
FALLBACK_FLAGS = ["-O3", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
NATIVE_FLAGS = FALLBACK_FLAGS[:1] + ["-march=native"] + FALLBACK_FLAGS[1:]
# -fopenmp: the jobs run on PyTorch's OpenMP threads (jobs.h says why); without it, on threads of their own.
FLAGS = NATIVE_FLAGS + ["-fopenmp"]
#: What is tried in turn until one compiles: a compiler without OpenMP, then one without -march=native.
FLAG_CHOICES = (FLAGS, NATIVE_FLAGS, FALLBACK_FLAGS)
#: Below this many elements one thread does the whole kernel (thread start-up costs ~20 us).
PARALLEL_MIN = 1 << 15

_lock = threading.Lock()
_lib = None
_error: str | None = None
_tried = False


def enabled() -> bool:
    """False when ZOO_KERNELS_CPP=0 (read at every call, like ZOO_KERNELS)."""
    return os.environ.get("ZOO_KERNELS_CPP", "1").strip().lower() not in ("0", "false", "no", "off")


def _cache_dir() -> Path:
    root = os.environ.get("ZOO_KERNELS_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "zoo_kernels"


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return "".join(line for line in fh if line.startswith(("model name", "flags")))[:4000]
    except OSError:
        return platform.processor()


def _compile(cc: str, flags, srcs, include: Path, dst: Path) -> str | None:
    proc = subprocess.run(
        [cc, *flags, f"-I{include}", "-o", str(dst), *map(str, srcs), "-lm"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or [f"{cc} exited with {proc.returncode}"])[-1]
    return None


def _build() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc/gcc/clang) on PATH")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except OSError as exc:
        raise RuntimeError(f"{cc} failed: {exc.strerror or exc}") from None
    package = resources.files(__package__)
    texts = {name: package.joinpath(name).read_text() for name in HEADERS + SOURCES}
    key = hashlib.sha256(
        "\0".join(
            [*(f"{n}\0{t}" for n, t in texts.items()), " ".join(FLAGS), version, platform.machine(), _cpu_id()]
        ).encode()
    ).hexdigest()[:16]
    cache = _cache_dir()
    so = cache / f"zoo_kernels_{key}.so"
    if not so.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            for name, text in texts.items():  # a copy: the package may be a zip or read-only
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / name).write_text(text)
            srcs, out = [Path(tmp) / n for n in SOURCES], Path(tmp) / "zoo_kernels.so"
            for flags in FLAG_CHOICES:  # e.g. a compiler without OpenMP, or without -march=native
                err = _compile(cc, flags, srcs, Path(tmp), out)
                if err is None:
                    break
            if err is not None:
                raise RuntimeError(f"{Path(cc).name} failed: {err}")
            os.replace(out, so)  # atomic: concurrent builders agree on the result
    return ctypes.CDLL(str(so))


def load():
    """The loaded library, building it on first use; None (with a one-line warning) if that fails."""
    global _lib, _error, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                _lib = _build()
            except Exception as exc:  # any failure means: use the PyTorch paths
                _error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                warnings.warn(
                    f"zoo-kernels: compiled CPU scan unavailable ({_error}); using the chunked PyTorch path",
                    RuntimeWarning,
                    stacklevel=3,
                )
            _tried = True
    return _lib


def available() -> bool:
    return enabled() and load() is not None


def why_unavailable() -> str:
    if not enabled():
        return "ZOO_KERNELS_CPP=0"
    load()
    return _error or ""


def usable(*tensors) -> bool:
    """CPU, one dtype (float32/float64), channels contiguous, time non-empty (None entries skipped)."""
    ts = [t for t in tensors if t is not None]
    first = ts[0]
    if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64):
        return False
    for t in ts:
        if t.device.type != "cpu" or t.dtype != first.dtype or (t.shape[-1] > 1 and t.stride(-1) != 1):
            return False
    return first.dim() == 3 and first.shape[1] > 0 and available()


def threads(numel: int) -> int:
    """Threads for a kernel over `numel` elements: torch's count, or 1 below PARALLEL_MIN."""
    return torch.get_num_threads() if numel >= PARALLEL_MIN else 1


def block(bsz: int, dim: int, threads: int) -> int:
    """Channel block: whole rows when the batch alone feeds every thread, else split (16-aligned)."""
    if threads <= 1 or bsz >= 2 * threads:
        return max(dim, 1)  # never 0: the kernels divide by it (no channels: no work items)
    pieces = -(-2 * threads // bsz)  # ceil(2 threads / batch) blocks per row
    per_piece = -(-dim // pieces)
    return max(16, -(-per_piece // 16) * 16)


# ---- signatures ------------------------------------------------------------------------------------

_CTYPES = {
    "int": ctypes.c_int,
    "i64": ctypes.c_int64,
    "double": ctypes.c_double,
    "ptr": ctypes.c_void_p,
    "i64*": ctypes.POINTER(ctypes.c_int64),
}


@dataclass(frozen=True)
class Signature:
    """A C function `int name(...)` returning 0 on success: `args` is its parameter list as
    "type name" pairs, types int, i64, double, ptr (any pointer) and i64* (an int64 array)."""

    name: str
    args: str

    def params(self) -> list[tuple[str, str]]:
        return [tuple(a.split()) for a in self.args.split(",")]


def _arg(kind: str, value):
    if value is None:
        return None
    if kind == "ptr":
        return value.data_ptr()
    if kind == "i64*":
        return (ctypes.c_int64 * len(value))(*value)
    return float(value) if kind == "double" else int(value)


@functools.cache
def function(sig: Signature) -> Callable[..., int]:
    """The C function, called with keyword arguments named as in its signature: tensors for
    pointers (None for NULL; a pointer left out is NULL), tuples of ints for i64* arrays."""
    params = sig.params()
    fn = getattr(load(), sig.name)
    fn.argtypes = [_CTYPES[kind] for kind, _ in params]
    fn.restype = ctypes.c_int

    def call(**kw) -> int:
        unknown = set(kw) - {name for _, name in params}
        if unknown:
            raise TypeError(f"{sig.name}: no parameter {sorted(unknown)}")
        return fn(*[_arg(kind, kw.get(name)) for kind, name in params])

    return call


def call(sig: Signature, kind: int, x: torch.Tensor, dim: int, what: str, /, **args) -> None:
    """Run `sig`'s kernel over x (batch, time, channels) with `dim` channels per row: `kind`
    (+1 when x is float64), `threads` for x's size and the channel `block` are added to `args`.
    Bool tensors (document starts) go in as uint8 arrays (torch stores a bool in one byte,
    0 or 1). A nonzero return raises MemoryError naming `what`."""
    n = threads(x.numel())
    args = {k: v.contiguous() if isinstance(v, torch.Tensor) and v.dtype == torch.bool else v for k, v in args.items()}
    err = function(sig)(kind=kind + (x.dtype == torch.float64), block=block(x.shape[0], dim, n), threads=n, **args)
    if err:
        raise MemoryError(f"zoo-kernels: {what} could not allocate its scratch buffer")
