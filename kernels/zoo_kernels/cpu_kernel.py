"""A compiled CPU scan: one pass over time, channels vectorised, batch rows and
channel blocks split over threads.

Built from the C source below with the machine's C compiler at first use and
cached (``$ZOO_KERNELS_CACHE``, else ``~/.cache/zoo_kernels``), keyed by the
source, the flags, the compiler and the CPU. Loaded with ctypes (no torch
headers, so the build takes about a second), which releases the GIL while it runs.

The chunked PyTorch cores in `chunked.py` call `linear_scan_into` /
`log_linear_scan_into` here when `usable(...)`; otherwise (no compiler, build
failed, other dtypes or layouts, or ``ZOO_KERNELS_CPP=0``) they run their own
chunked loops. A failed build is reported once, in one line, as a warning.

The chunked path moves each element through memory several times (two passes
plus strided per-step slices); this one reads a and x and writes h once,
which is what the memory-copy floor allows.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch

from .cpu_conv_src import SOURCE as CONV_SOURCE
from .cpu_rg_lru_src import SOURCE as RG_LRU_SOURCE
from .cpu_selective_scan_src import SOURCE as SELECTIVE_SCAN_SOURCE
from .cpu_vmath_src import SOURCE as VMATH_SOURCE

SCAN_SOURCE = r"""
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* Threads for `items` work items: at least 1, at most 64 (the job arrays' size) and items. */
static int zoo_threads(int threads, int64_t items) {
    if (threads > items) threads = (int)items;
    if (threads < 1) threads = 1;
    return threads > 64 ? 64 : threads;
}

/* fn over jobs[0 .. threads), each `size` bytes: job 0 here, the others on new threads;
   a job whose thread cannot start runs here after the rest. */
static void zoo_run_jobs(void *(*fn)(void *), void *jobs, size_t size, int threads) {
    pthread_t tid[64];
    int started = 0;
    for (int k = 1; k < threads; k++) {
        if (pthread_create(&tid[k], 0, fn, (char *)jobs + k * size) != 0) break;
        started = k;
    }
    fn(jobs);
    for (int k = 1; k <= started; k++) pthread_join(tid[k], 0);
    for (int k = started + 1; k < threads; k++) fn((char *)jobs + k * size);
}

/* A (B, L, D) scan over dim 1. Strides are in elements; channels are contiguous.
   Work items are (batch row, channel block) pairs, split evenly over threads. */
typedef struct {
    const void *a, *x, *h0; void *out, *last;
    int64_t B, L, D, block, sa_b, sa_t, sx_b, sx_t, so_b, so_t, sh_b;
    int reverse, begin, end;
} job_t;

#define SCAN_BODY(T, STEP)                                                           \
    const T *A = (const T *)j->a, *X = (const T *)j->x, *H0 = (const T *)j->h0;     \
    T *O = (T *)j->out, *LAST = (T *)j->last;                                        \
    int64_t nblk = (j->D + j->block - 1) / j->block;                                 \
    for (int item = j->begin; item < j->end; item++) {                               \
        int64_t b = item / nblk, d0 = (item % nblk) * j->block;                      \
        int64_t n = j->D - d0 < j->block ? j->D - d0 : j->block;                     \
        const T *prev = H0 ? H0 + b * j->sh_b + d0 : 0;                              \
        for (int64_t s = 0; s < j->L; s++) {                                         \
            int64_t t = j->reverse ? j->L - 1 - s : s;                               \
            const T *restrict at = A + b * j->sa_b + t * j->sa_t + d0;               \
            const T *restrict xt = X + b * j->sx_b + t * j->sx_t + d0;               \
            T *restrict ot = O + b * j->so_b + t * j->so_t + d0;                     \
            if (prev) {                                                              \
                const T *restrict p = prev;                                          \
                _Pragma("omp simd") /* lets gcc if-convert the log step's selects */ \
                for (int64_t d = 0; d < n; d++) { STEP; }                            \
            } else {                                                                 \
                memcpy(ot, xt, n * sizeof(T));                                       \
            }                                                                        \
            prev = ot;                                                               \
        }                                                                            \
        T *restrict lt = LAST + b * j->D + d0;                                       \
        if (prev) memcpy(lt, prev, n * sizeof(T));                                   \
    }

/* float: vexpf_le0/vlog1pf01 (cpu_vmath_src.py), so the channel loop vectorises; libm's calls do not.
   Subtracting max(m, -FLT_MAX) keeps m == -inf exact without a select on the result:
   the gap is -inf, its exp 0, its log1p 0, and -inf + 0 = -inf. */
static inline float lae_f(float u, float v) {
    float m = u > v ? u : v, k = u > v ? v : u, mc = m > -FLT_MAX ? m : -FLT_MAX;
    return m + vlog1pf01(vexpf_le0(k - mc));
}
static inline double lae_d(double u, double v) {
    double m = u > v ? u : v, k = u > v ? v : u;
    return m == -INFINITY ? m : m + log1p(exp(k - m));
}

static void *lin_f(void *p) { job_t *j = p; SCAN_BODY(float, ot[d] = at[d] * p[d] + xt[d]) return 0; }
static void *lin_d(void *p) { job_t *j = p; SCAN_BODY(double, ot[d] = at[d] * p[d] + xt[d]) return 0; }
static void *log_f(void *p) { job_t *j = p; SCAN_BODY(float, ot[d] = lae_f(at[d] + p[d], xt[d])) return 0; }
static void *log_d(void *p) { job_t *j = p; SCAN_BODY(double, ot[d] = lae_d(at[d] + p[d], xt[d])) return 0; }

/* kind: 0 linear f32, 1 linear f64, 2 log f32, 3 log f64. Returns 0 on success. */
int zoo_scan(int kind, const void *a, const void *x, const void *h0, void *out, void *last,
             int64_t B, int64_t L, int64_t D, int64_t block,
             int64_t sa_b, int64_t sa_t, int64_t sx_b, int64_t sx_t,
             int64_t so_b, int64_t so_t, int64_t sh_b, int reverse, int threads) {
    void *(*fn)(void *) = kind == 0 ? lin_f : kind == 1 ? lin_d : kind == 2 ? log_f : log_d;
    int64_t items = B * ((D + block - 1) / block);
    threads = zoo_threads(threads, items);
    job_t jobs[64];
    for (int k = 0; k < threads; k++) {
        job_t j = {a, x, h0, out, last, B, L, D, block, sa_b, sa_t, sx_b, sx_t, so_b, so_t, sh_b, reverse,
                   (int)(items * k / threads), (int)(items * (k + 1) / threads)};
        jobs[k] = j;
    }
    zoo_run_jobs(fn, jobs, sizeof jobs[0], threads);
    return 0;
}
"""
# vector math first and the scan second: the others use vexpf and zoo_threads/zoo_run_jobs
SOURCE = VMATH_SOURCE + SCAN_SOURCE + SELECTIVE_SCAN_SOURCE + RG_LRU_SOURCE + CONV_SOURCE

# -fopenmp-simd honours `omp simd` (vectorised reductions) without linking OpenMP.
# -fno-trapping-math changes no value, only what gcc assumes about FP exception traps: it may
# then evaluate both sides of a select, which the vector math needs to vectorise without
# AVX-512 masks (and is faster with them).
FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-fno-trapping-math",
         "-fopenmp-simd"]
FALLBACK_FLAGS = ["-O3", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
#: Below this many elements one thread does the whole scan (thread start-up costs ~20 us).
PARALLEL_MIN = 1 << 15

_lock = threading.Lock()
_lib = None
_error: Optional[str] = None
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


def _compile(cc: str, flags, src: Path, dst: Path) -> Optional[str]:
    proc = subprocess.run([cc, *flags, "-o", str(dst), str(src), "-lm"], capture_output=True, text=True,
                          timeout=300)
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
    key = hashlib.sha256("\0".join([SOURCE, " ".join(FLAGS), version, platform.machine(), _cpu_id()])
                         .encode()).hexdigest()[:16]
    cache = _cache_dir()
    so = cache / f"zoo_scan_{key}.so"
    if not so.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            src, out = Path(tmp) / "zoo_scan.c", Path(tmp) / "zoo_scan.so"
            src.write_text(SOURCE)
            err = _compile(cc, FLAGS, src, out)
            if err is not None:  # e.g. a compiler without -march=native
                err = _compile(cc, FALLBACK_FLAGS, src, out)
            if err is not None:
                raise RuntimeError(f"{Path(cc).name} failed: {err}")
            os.replace(out, so)  # atomic: concurrent builders agree on the result
    lib = ctypes.CDLL(str(so))
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    lib.zoo_scan.argtypes = [ctypes.c_int, vp, vp, vp, vp, vp, i64, i64, i64, i64,
                             i64, i64, i64, i64, i64, i64, i64, ctypes.c_int, ctypes.c_int]
    lib.zoo_scan.restype = ctypes.c_int
    lib.zoo_selective_scan.argtypes = [ctypes.c_int, *[vp] * 18, *[i64] * 6, ctypes.c_int]
    lib.zoo_selective_scan.restype = ctypes.c_int
    lib.zoo_rg_lru.argtypes = [ctypes.c_int, *[vp] * 15, ctypes.POINTER(i64), i64, i64, i64, i64, ctypes.c_int]
    lib.zoo_rg_lru.restype = ctypes.c_int
    lib.zoo_causal_conv.argtypes = [ctypes.c_int, *[vp] * 10, ctypes.POINTER(i64), *[i64] * 5, ctypes.c_int,
                                    ctypes.c_int]
    lib.zoo_causal_conv.restype = ctypes.c_int
    return lib


def load():
    """The loaded library, building it on first use; None (with a one-line warning) if that fails."""
    global _lib, _error, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                _lib = _build()
            except Exception as exc:  # any failure means: use the chunked torch path
                _error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                warnings.warn(f"zoo-kernels: compiled CPU scan unavailable ({_error}); "
                              "using the chunked PyTorch path", RuntimeWarning, stacklevel=3)
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
    """CPU, one dtype (float32/float64), channels contiguous, time non-empty (h0 may be None)."""
    ts = [t for t in tensors if t is not None]
    first = ts[0]
    if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64):
        return False
    for t in ts:
        if t.device.type != "cpu" or t.dtype != first.dtype or (t.shape[-1] > 1 and t.stride(-1) != 1):
            return False
    return first.dim() == 3 and first.shape[1] > 0 and enabled() and load() is not None


def _block(bsz: int, dim: int, threads: int) -> int:
    """Channel block: whole rows when the batch alone feeds every thread, else split (16-aligned)."""
    if threads <= 1 or bsz >= 2 * threads:
        return max(dim, 1)  # never 0: the kernels divide by it (no channels: no work items)
    pieces = -(-2 * threads // bsz)  # ceil(2 threads / batch) blocks per row
    per_piece = -(-dim // pieces)
    return max(16, -(-per_piece // 16) * 16)


def _run(kind: int, a, x, h0, out, reverse: bool) -> torch.Tensor:
    bsz, length, dim = x.shape
    last = torch.empty(bsz, dim, dtype=out.dtype)
    n = bsz * length * dim
    threads = torch.get_num_threads() if n >= PARALLEL_MIN else 1
    block = _block(bsz, dim, threads)
    kind += 1 if out.dtype == torch.float64 else 0
    _lib.zoo_scan(kind, a.data_ptr(), x.data_ptr(), None if h0 is None else h0.data_ptr(), out.data_ptr(),
                  last.data_ptr(), bsz, length, dim, block, a.stride(0), a.stride(1), x.stride(0), x.stride(1),
                  out.stride(0), out.stride(1), 0 if h0 is None else h0.stride(0), int(reverse), threads)
    if h0 is None and length == 0:
        last.zero_()
    return last


def linear_scan_into(a, x, h0, out, reverse=False) -> torch.Tensor:
    """out_t = a_t out_{t-1} + x_t (reverse: from the end); returns the final state."""
    return _run(0, a, x, h0, out, reverse)


def log_linear_scan_into(log_a, log_x, log_h0, out, reverse=False) -> torch.Tensor:
    """out_t = logaddexp(log_a_t + out_{t-1}, log_x_t); returns the final state."""
    return _run(2, log_a, log_x, log_h0, out, reverse)


# ---- fused RG-LRU (cpu_rg_lru_src.py) -------------------------------------------------------------


def _rg_lru_call(kind, x, r_pre, i_pre, n, h0, strides, **ptrs):
    bsz, length, dim = x.shape
    threads = torch.get_num_threads() if x.numel() >= PARALLEL_MIN else 1
    names = ["h", "g", "gl", "out", "last", "dx", "dr", "di", "dap", "dh0"]
    args = [None if ptrs.get(k) is None else ptrs[k].data_ptr() for k in names]
    st = (ctypes.c_int64 * 9)(*[s for t in strides for s in (t.stride(0), t.stride(1))], h0.stride(0))
    kind += 1 if x.dtype == torch.float64 else 0
    err = load().zoo_rg_lru(kind, x.data_ptr(), r_pre.data_ptr(), i_pre.data_ptr(), n.data_ptr(), h0.data_ptr(),
                            *args, st, bsz, length, dim, _block(bsz, dim, threads), threads)
    if err:
        raise MemoryError("zoo-kernels: the fused RG-LRU could not allocate its scratch buffer")


def _rg_lru_common(x, a_param, c, h0):
    n = torch.nn.functional.softplus(-a_param.to(x.dtype)).mul_(-c)  # log a = n r
    return n.contiguous(), (x.new_zeros(x.shape[0], x.shape[2]) if h0 is None else h0)


def rg_lru_fwd(x, r_pre, i_pre, a_param, c, h0):
    """Fused RG-LRU forward on tensors that pass `usable` (one dtype, channels contiguous).
    Returns (h, h_last)."""
    n, h0 = _rg_lru_common(x, a_param, c, h0)
    h, last = torch.empty(x.shape, dtype=x.dtype), x.new_empty(x.shape[0], x.shape[2])
    _rg_lru_call(0, x, r_pre, i_pre, n, h0, (x, r_pre, i_pre, x), out=h, last=last)
    return h, last


def rg_lru_bwd(x, r_pre, i_pre, a_param, c, h0, h, g, g_last):
    """Fused RG-LRU backward: recomputes the gates, reads the saved states h (contiguous).
    Returns (dx, dr_pre, di_pre, da_param, dh0); dh0 is zeros without h0."""
    n, h0z = _rg_lru_common(x, a_param, c, h0)
    dx, dr, di = (torch.empty(x.shape, dtype=x.dtype) for _ in range(3))
    dap, dh0 = x.new_empty(x.shape[0], x.shape[2]), x.new_empty(x.shape[0], x.shape[2])
    _rg_lru_call(2, x, r_pre, i_pre, n, h0z, (x, r_pre, i_pre, g), h=h, g=g, gl=g_last.contiguous(),
                 dx=dx, dr=dr, di=di, dap=dap, dh0=dh0)
    # dlog_a/da_param = c r sigmoid(-a_param); the kernel summed dq r over time per batch row
    d_a_param = dap.sum(0).mul_(torch.sigmoid(-a_param.to(x.dtype))).mul_(c)
    return dx, dr, di, d_a_param, (dh0 if h0 is not None else dh0.zero_())
