"""The compiled CPU kernels (zoo_kernels/scan/cpu.py, rglru/cpu.py) and their fallback, against the float64 loops.

The `torch` backend tests elsewhere run whichever CPU path is active; here each
path is forced: the compiled kernel (skipped, with the build error, when it
cannot be built) and the chunked PyTorch loops (ZOO_KERNELS_CPP=0).
"""

import math
import os
import subprocess
import sys

import pytest
import torch
from scan_checks import FP32_TOL, compare, run

import zoo_kernels
from zoo_kernels import cbuild
from zoo_kernels.rglru import cpu as rglru_cpu
from zoo_kernels.rglru import naive as rglru_naive
from zoo_kernels.scan import cpu as scan_cpu
from zoo_kernels.scan import naive

needs_kernel = pytest.mark.skipif(
    not cbuild.available(),
    reason=f"compiled CPU scan not built here: {cbuild.why_unavailable()}",
)
PATHS = [pytest.param("compiled", marks=needs_kernel), "chunked"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS_CPP", "1" if request.param == "compiled" else "0")
    return request.param


# (batch, time, channels): one thread's share, channel blocks split across threads
# (batch 1, channels not a multiple of 16), and a long scan.
SHAPES = [(3, 1, 24), (3, 33, 24), (1, 700, 100), (2, 2048, 40)]


def _linear(shape, with_h0, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, t, d = shape
    a = torch.rand(b, t, d, generator=gen) * 0.999  # decays in (0, 1), some near 0 and near 1
    return {
        "a": a.to(dtype),
        "x": torch.randn(b, t, d, generator=gen).to(dtype),
        "h0": torch.randn(b, d, generator=gen).to(dtype) if with_h0 else None,
    }


def _log(shape, with_h0, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, t, d = shape
    return {
        "log_a": torch.log(torch.rand(b, t, d, generator=gen).clamp_min(1e-6)).to(dtype),
        "log_x": torch.randn(b, t, d, generator=gen).to(dtype),
        "log_h0": torch.randn(b, d, generator=gen).to(dtype) if with_h0 else None,
    }


def _spy(monkeypatch):
    """Count calls into the compiled kernel."""
    calls = []
    real = scan_cpu._run
    monkeypatch.setattr(scan_cpu, "_run", lambda *args: calls.append(args[0]) or real(*args))
    return calls


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_h0", [False, True])
def test_linear_scan_matches_naive(path, monkeypatch, shape, with_h0):
    calls = _spy(monkeypatch)
    compare(
        lambda a, x, h0: zoo_kernels.linear_scan(a, x, h0, backend="torch"),
        naive.linear_scan,
        _linear(shape, with_h0),
        FP32_TOL,
    )
    assert bool(calls) == (path == "compiled")  # forward and the backward's reverse scan


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_h0", [False, True])
def test_log_linear_scan_matches_naive(path, monkeypatch, shape, with_h0):
    calls = _spy(monkeypatch)
    compare(
        lambda log_a, log_x, log_h0: zoo_kernels.log_linear_scan(log_a, log_x, log_h0, backend="torch"),
        naive.log_linear_scan,
        _log(shape, with_h0),
        FP32_TOL,
    )
    assert bool(calls) == (path == "compiled")


@needs_kernel
def test_log_step_is_accurate_elementwise(monkeypatch):
    """The float32 log step (vexpf + vlog1pf) against float64 logaddexp, one step at a time,
    over gaps from 0 to beyond float32's exp range, with exact -inf (zero states)."""
    monkeypatch.setenv("ZOO_KERNELS_CPP", "1")
    gen = torch.Generator().manual_seed(7)
    n = 1 << 16
    u = torch.randn(1, 1, n, generator=gen) * torch.logspace(-6, 3, n).index_select(0, torch.randperm(n, generator=gen))
    v = u + torch.randn(1, 1, n, generator=gen) * torch.logspace(-7, 2.5, n)
    v[..., :64] = -math.inf
    u[..., 32:96] = -math.inf  # both -inf in [32, 64)
    zeros = torch.zeros_like(u)
    out, _ = zoo_kernels.log_linear_scan(zeros, v, u[:, 0], backend="torch")  # logaddexp(0 + u, v)
    want = torch.logaddexp(u.double(), v.double())
    m = torch.maximum(u, v).double().abs()
    finite = torch.isfinite(want)
    assert torch.equal(out[~finite], want[~finite].float()) and (want[~finite] == -math.inf).all()
    err = (out.double() - want)[finite].abs() / (m[finite] + 1)
    assert err.max() < 3e-7, err.max()


@pytest.mark.parametrize("with_h0", [False, True])
def test_rg_lru_matches_naive(path, with_h0):
    gen = torch.Generator().manual_seed(3)
    b, t, d = 2, 300, 40
    inputs = {
        "x": torch.randn(b, t, d, generator=gen),
        "r_pre": torch.randn(b, t, d, generator=gen),
        "i_pre": torch.randn(b, t, d, generator=gen),
        "a_param": torch.randn(d, generator=gen),
        "c": 8.0,
        "h0": torch.randn(b, d, generator=gen) if with_h0 else None,
    }
    compare(lambda **kw: zoo_kernels.rg_lru(**kw, backend="torch"), rglru_naive.rg_lru, inputs, FP32_TOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(path, dtype):
    tol = FP32_TOL if dtype == torch.float64 else 1e-2
    compare(
        lambda a, x, h0: zoo_kernels.linear_scan(a, x, h0, backend="torch"),
        naive.linear_scan,
        _linear((2, 100, 24), True, dtype),
        tol,
    )


def test_strided_views_with_contiguous_channels(path):
    """Slices of a wider projection (the mixers' layout): row strides differ from channels."""
    gen = torch.Generator().manual_seed(5)
    wide = torch.randn(2, 400, 3 * 24, generator=gen)
    a, x = torch.sigmoid(wide)[..., :24], wide[..., 24:48]
    h0 = torch.randn(2, 2 * 24, generator=gen)[:, :24]
    assert not a.is_contiguous() and a.stride(-1) == 1
    compare(
        lambda a, x, h0: zoo_kernels.linear_scan(a, x, h0, backend="torch"),
        naive.linear_scan,
        {"a": a, "x": x, "h0": h0},
        FP32_TOL,
    )
    compare(
        lambda a, x, h0: zoo_kernels.linear_scan(a, x, h0, backend="torch"),
        naive.linear_scan,
        {"a": a, "x": x, "h0": h0},
        FP32_TOL,
        noncontiguous=True,
    )


@needs_kernel
def test_thread_counts_agree(monkeypatch):
    inputs = _linear((1, 3000, 100), True)
    outs = []
    for n in (1, 2, 3):
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            outs.append(zoo_kernels.linear_scan(**inputs, backend="torch")[0])
        finally:
            torch.set_num_threads(old)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


# ---- the fused RG-LRU kernel (rglru/rg_lru.c) -----------------------------------------------

FP64_TOL = 1e-10
# a = sigmoid(a_param) ** (c r): (a_param from u in [0, 1), c) from decays that underflow
# to 0 (log a down to -600 r) to decays within 1e-7 of 1 (the expm1 polynomial's range)
RG_REGIMES = {
    "mixed": (lambda u: u * 6 - 1, 8.0),
    "near0": (lambda u: -6 - u, 8.0),
    "zero": (lambda u: -30 - u, 20.0),
    "near1": (lambda u: 7 + u, 8.0),
    "one": (lambda u: 14 + 4 * u, 0.5),
}


def _rg_lru(shape, with_h0, dtype=torch.float32, regime="mixed", seed=3):
    gen = torch.Generator().manual_seed(seed)
    b, t, d = shape
    a_param, c = RG_REGIMES[regime]
    inputs = {
        "x": torch.randn(b, t, d, generator=gen),
        "r_pre": 2 * torch.randn(b, t, d, generator=gen),
        "i_pre": 2 * torch.randn(b, t, d, generator=gen),
        "a_param": a_param(torch.rand(d, generator=gen)),
        "c": c,
        "h0": torch.randn(b, d, generator=gen) if with_h0 else None,
    }
    return {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def _rg_lru_torch(**kw):
    return zoo_kernels.rg_lru(**kw, backend="torch")


@pytest.fixture
def rg_calls(monkeypatch):
    """Force the compiled path and record the kinds of the fused RG-LRU calls (0 forward, 2 backward)."""
    monkeypatch.setenv("ZOO_KERNELS_CPP", "1")
    calls = []
    real = rglru_cpu._rg_lru_call
    monkeypatch.setattr(rglru_cpu, "_rg_lru_call", lambda kind, *a, **kw: calls.append(kind) or real(kind, *a, **kw))
    return calls


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [1, 7, 33, 301])
@pytest.mark.parametrize("with_h0", [False, True])
def test_rg_lru_fused_matches_naive(rg_calls, dtype, length, with_h0):
    tol = FP32_TOL if dtype == torch.float32 else FP64_TOL
    compare(_rg_lru_torch, rglru_naive.rg_lru, _rg_lru((3, length, 40), with_h0, dtype), tol)
    assert rg_calls == [0, 2]


@needs_kernel
@pytest.mark.parametrize("regime", list(RG_REGIMES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rg_lru_fused_decay_regimes(rg_calls, regime, dtype):
    tol = FP32_TOL if dtype == torch.float32 else FP64_TOL
    compare(_rg_lru_torch, rglru_naive.rg_lru, _rg_lru((2, 257, 48), True, dtype, regime), tol)
    assert rg_calls == [0, 2]


@needs_kernel
@pytest.mark.parametrize("with_h0", [False, True])
def test_rg_lru_fused_layouts(rg_calls, with_h0):
    """Channels not contiguous (copied), and slices of a wider projection (Hawk's layout, passed by strides)."""
    compare(_rg_lru_torch, rglru_naive.rg_lru, _rg_lru((2, 65, 24), with_h0), FP32_TOL, noncontiguous=True)
    gen = torch.Generator().manual_seed(5)
    wide = torch.randn(2, 65, 3 * 24, generator=gen)
    x, r_pre, i_pre = wide.chunk(3, dim=-1)
    h0 = torch.randn(2, 2 * 24, generator=gen)[:, 24:] if with_h0 else None
    assert not x.is_contiguous() and x.stride(-1) == 1
    inputs = {"x": x, "r_pre": r_pre, "i_pre": i_pre, "a_param": torch.randn(24, generator=gen), "c": 8.0, "h0": h0}
    compare(_rg_lru_torch, rglru_naive.rg_lru, inputs, FP32_TOL)
    assert rg_calls == [0, 2] * 2


@needs_kernel
def test_rg_lru_fused_strided_grad_and_saturated_gates(rg_calls):
    """An upstream grad with batch/time strides gives the same result as its contiguous copy;
    r = sigmoid(r_pre) == 0 (a == 1, sqrt(1 - a^2) == 0) keeps every grad finite."""
    inputs = _rg_lru((2, 40, 24), True)
    inputs["r_pre"][:, 5] = -200.0
    args = [inputs[k] for k in ("x", "r_pre", "i_pre", "a_param", "c", "h0")]
    h, _ = rglru_cpu.rg_lru_fwd(*args)
    g = torch.randn(40, 2, 2 * 24).transpose(0, 1)[..., :24]
    gl = torch.randn(2, 24)
    strided = rglru_cpu.rg_lru_bwd(*args, h, g, gl)
    dense = rglru_cpu.rg_lru_bwd(*args, h, g.contiguous(), gl)
    for a, b in zip(strided, dense):
        assert torch.equal(a, b) and torch.isfinite(a).all()


@needs_kernel
@pytest.mark.parametrize("shape", [(1, 3000, 100), (4, 500, 100)])
def test_rg_lru_fused_thread_counts_agree(rg_calls, shape):
    """Batch rows and channel blocks split differently over 1, 2, 3 threads: bitwise the same."""
    inputs = _rg_lru(shape, True)
    results = []
    for n in (1, 2, 3):
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            results.append(
                run(
                    _rg_lru_torch,
                    inputs,
                    (torch.ones(shape, dtype=torch.float64), torch.ones(shape[0], shape[2], dtype=torch.float64)),
                )
            )
        finally:
            torch.set_num_threads(old)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
    assert cbuild.block(shape[0], shape[2], 3) < shape[2]  # channel blocks were split
    assert rg_calls == [0, 2] * 3


@needs_kernel
def test_nan_propagates(monkeypatch):
    """The vector exp/log1p keep NaN as NaN (a clamp must not turn it into a number)."""
    monkeypatch.setenv("ZOO_KERNELS_CPP", "1")
    log_a, log_x = torch.full((1, 4, 16), -1.0), torch.zeros(1, 4, 16)
    log_a[0, 1, 3], log_x[0, 2, 5] = math.nan, math.nan
    out, _ = zoo_kernels.log_linear_scan(log_a, log_x, torch.zeros(1, 16), backend="torch")
    assert out[0, 1:, 3].isnan().all() and out[0, 2:, 5].isnan().all() and out.isnan().sum() == 5
    inputs = _rg_lru((1, 4, 16), True)
    inputs["r_pre"][0, 1, 3], inputs["x"][0, 2, 5] = math.nan, math.nan
    h, _ = zoo_kernels.rg_lru(**inputs, backend="torch")
    assert h[0, 1:, 3].isnan().all() and h[0, 2:, 5].isnan().all() and h.isnan().sum() == 5


@needs_kernel
def test_zero_channels(monkeypatch):
    """No channels means no work items (the channel block used to be 0, a division by zero in C)."""
    monkeypatch.setenv("ZOO_KERNELS_CPP", "1")
    x = torch.rand(2, 3, 0, requires_grad=True)
    h, h_last = zoo_kernels.linear_scan(x, x, backend="torch")
    assert h.shape == (2, 3, 0) and h_last.shape == (2, 0)
    h, h_last = zoo_kernels.rg_lru(x, x, x, torch.rand(0), 8.0, None, backend="torch")
    (h.sum() + h_last.sum()).backward()
    assert h.shape == (2, 3, 0) and x.grad.shape == (2, 3, 0)


def test_falls_back_when_no_compiler(tmp_path):
    """No compiler: a one-line warning, then the chunked path gives the same numbers."""
    code = (
        "import warnings, torch\n"
        "import zoo_kernels\nfrom zoo_kernels import cbuild\nfrom zoo_kernels.scan import naive\n"
        "a, x = torch.rand(2, 50, 8), torch.randn(2, 50, 8)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    h, _ = zoo_kernels.linear_scan(a, x, None, backend='torch')\n"
        "    zoo_kernels.linear_scan(a, x, None, backend='torch')\n"
        "msgs = [str(m.message) for m in w if 'compiled CPU scan' in str(m.message)]\n"
        "assert len(msgs) == 1 and '\\n' not in msgs[0], msgs\n"
        "assert not cbuild.available() and 'failed' in cbuild.why_unavailable()\n"
        "ref, _ = naive.linear_scan(a.double(), x.double())\n"
        "assert (h.double() - ref).abs().max() < 1e-5\n"
        "print(msgs[0])\n"
    )
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"), ZOO_KERNELS_CACHE=str(tmp_path / "cache"))
    env.pop("ZOO_KERNELS_CPP", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "using the chunked PyTorch path" in out.stdout
