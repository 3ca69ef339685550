"""Mamba-1's fused Triton selective scan (zoo_kernels/selective/triton.py) against the float64 loop.

Without a GPU the kernels run under TRITON_INTERPRET=1 (set by conftest.py), so
the shapes are tiny. The `small_blocks` fixture shrinks the tiles (BLOCK_T=8,
BLOCK_D=8) so that short sequences span several time tiles, the last one partial,
and D=20 spans three channel blocks, the last one partial.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from scan_checks import BF16_TOL, DEVICE, FP32_TOL, NO_TRITON

import zoo_kernels
from zoo_kernels.backends import triton_installed
from zoo_kernels.selective import _triton_bwd_op, _triton_op, selective_scan_naive, selective_scan_triton

pytestmark = pytest.mark.skipif(not triton_installed(), reason=NO_TRITON)


@pytest.fixture
def small_blocks(monkeypatch):
    from zoo_kernels.selective import triton as triton_selective

    monkeypatch.setattr(triton_selective, "BLOCK_T", 8)
    monkeypatch.setattr(triton_selective, "BLOCK_D", 8)
    return triton_selective


def inputs(b, T, D, N, with_h0, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        r(b, T, D),
        F.softplus(r(b, T, D)),
        -torch.exp(r(D, N)),
        r(b, T, N),
        r(b, T, N),
        r(b, D, N) if with_h0 else None,
    ]


def extreme_decays(b, T, D, N, seed=0):
    """dt * A spread log-uniformly over about [-20, -1e-3]: decays from ~2e-9 to ~0.999."""
    g = torch.Generator().manual_seed(seed)
    args = inputs(b, T, D, N, True, seed)
    args[1] = 10 ** (torch.rand(b, T, D, generator=g, dtype=torch.float64) * 2.3 - 1.5)  # dt in [0.03, 6.3]
    args[2] = -(10 ** (torch.rand(D, N, generator=g, dtype=torch.float64) * 2.0 - 1.5))  # -A in [0.03, 3.2]
    return args


def outputs_and_grads(fn, args, dtype, use=("y", "h")):
    leaves = [None if t is None else t.detach().to(DEVICE, dtype).requires_grad_() for t in args]
    y, h = fn(*leaves)
    g = torch.Generator().manual_seed(1)
    wy, wh = (torch.randn(t.shape, generator=g, dtype=torch.float64).to(DEVICE) for t in (y, h))
    loss = 0
    if "y" in use:
        loss = loss + (y.double() * wy).sum()
    if "h" in use:
        loss = loss + (h.double() * wh).sum()
    used = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, used, allow_unused=True)  # the loop's C is unused without y
    return [y, h, *(torch.zeros_like(t) if gr is None else gr for t, gr in zip(used, grads))]


def rel(a, b):
    return ((a.double().cpu() - b.cpu()).norm() / b.cpu().norm().clamp_min(1e-300)).item()


NAMES = ["y", "h_last", "u", "dt", "A", "B", "C", "h0"]


def check(got, want, tol):
    for name, a, w in zip(NAMES, got, want):
        assert a.shape == w.shape, name
        assert torch.isfinite(a).all(), f"{name} has inf/NaN"
        err = rel(a, w)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def against_the_loop(args, dtype=torch.float32, tol=FP32_TOL, **kw):
    got = outputs_and_grads(selective_scan_triton, args, dtype, **kw)
    ref_args = [None if t is None else t.to(dtype).double() for t in args]  # the same rounded values
    want = outputs_and_grads(selective_scan_naive, ref_args, torch.float64, **kw)
    check(got, want, tol)
    return got


@pytest.mark.parametrize("b,T,D,N", [(2, 1, 6, 4), (2, 7, 6, 4), (2, 33, 20, 3), (1, 40, 3, 16)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_the_loop_with_gradients(small_blocks, b, T, D, N, with_h0):
    against_the_loop(inputs(b, T, D, N, with_h0))


def test_default_blocks_several_tiles():
    """The shipped BLOCK_T (checkpoint spacing): three tiles, the last partial."""
    from zoo_kernels.selective import triton as triton_selective

    T = 2 * triton_selective.BLOCK_T + 5
    against_the_loop(inputs(1, T, 5, 2, True))


def test_extreme_decays(small_blocks):
    args = extreme_decays(2, 30, 6, 8)
    z = args[1][..., None] * args[2]
    assert z.min() < -15 and z.max() > -2e-3
    against_the_loop(args)


@pytest.mark.parametrize("use", [("y",), ("h",)])
def test_one_output_used(small_blocks, use):
    """Only y or only h_T feeds the loss: the other upstream gradient is absent."""
    against_the_loop(inputs(2, 11, 5, 3, True), use=use)


def test_noncontiguous_inputs(small_blocks):
    args = inputs(2, 19, 10, 3, True)
    contiguous = outputs_and_grads(selective_scan_triton, args, torch.float32)
    # every input a strided view of the same values
    strided = [t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in args]
    assert not any(t.is_contiguous() for t in strided)
    got = against_the_loop(strided)
    for a, c in zip(got, contiguous):
        assert torch.equal(a, c)


def test_bf16_inputs(small_blocks):
    args = inputs(2, 20, 10, 4, True)
    leaves = [t.to(torch.bfloat16) for t in args[:2]] + [args[2].float()] + [t.to(torch.bfloat16) for t in args[3:5]]
    leaves.append(args[5].float())
    leaves = [t.detach().to(DEVICE).requires_grad_() for t in leaves]
    y, h = selective_scan_triton(*leaves)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    g = torch.Generator().manual_seed(1)
    wy, wh = (torch.randn(t.shape, generator=g, dtype=torch.float64).to(DEVICE) for t in (y, h))
    grads = torch.autograd.grad((y.double() * wy).sum() + (h.double() * wh).sum(), leaves)
    assert [gr.dtype for gr in grads] == [t.dtype for t in leaves]
    want = outputs_and_grads(selective_scan_naive, [t.detach().double() for t in leaves], torch.float64)
    check([y, h, *grads], want, BF16_TOL)


def test_dispatch_and_fallback(small_blocks, monkeypatch):
    """ZOO_KERNELS=triton takes the fused kernel; a state too large for it, or a launch error,
    falls back to the flat path with one warning."""
    import zoo_kernels.selective as ss

    calls = []
    for name in ("selective_scan_triton", "selective_scan_flat"):
        real = getattr(ss, name)
        monkeypatch.setattr(ss, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    args = [t.float().to(DEVICE) for t in inputs(1, 6, 3, 2, True)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, h = zoo_kernels.selective_scan(*args)
    assert calls == ["selective_scan_triton"]
    want = selective_scan_naive(*[t.double() for t in args])
    assert rel(y, want[0]) < FP32_TOL and rel(h, want[1]) < FP32_TOL

    too_big = small_blocks.MAX_TILE // small_blocks.BLOCK_T + 1
    big = [t.float().to(DEVICE) for t in inputs(1, 2, 1, too_big, True)]
    with pytest.warns(UserWarning, match=f"cannot take this call.*N={too_big}"):
        y, _ = zoo_kernels.selective_scan(*big)
    assert calls[1:] == ["selective_scan_flat"]
    assert rel(y, selective_scan_naive(*[t.double() for t in big])[0]) < FP32_TOL

    def out_of_resources(*a):
        raise small_blocks.OutOfResources(300000, 232448, "shared memory")

    monkeypatch.setattr(ss, "selective_scan_triton", out_of_resources)
    with pytest.warns(UserWarning, match="OutOfResources"):
        y2, _ = zoo_kernels.selective_scan(*args)
    assert calls[2:] == ["selective_scan_flat"] and rel(y2, want[0]) < FP32_TOL


def test_custom_ops_pass_opcheck(small_blocks):
    u, dt, A, B, C, h0 = (t.float().to(DEVICE) for t in inputs(1, 10, 3, 2, True))
    torch.library.opcheck(_triton_op.op, tuple(t.clone().requires_grad_() for t in (u, dt, A, B, C, h0)))
    torch.library.opcheck(_triton_op.op, (u, dt, A, B, C, None))
    _, _, ck = _triton_op(u, dt, A, B, C, h0)
    torch.library.opcheck(_triton_bwd_op.op, (u, dt, A, B, C, ck, torch.randn_like(u), torch.randn_like(h0), True))


def test_compiles_without_graph_breaks(small_blocks, monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    torch._dynamo.reset()

    def loss(*args):
        y, h = zoo_kernels.selective_scan(*args)
        return (y * y).sum() + h.sum()

    args = [t.float().to(DEVICE) for t in inputs(2, 9, 4, 3, True)]
    eager_in = [t.clone().requires_grad_() for t in args]
    comp_in = [t.clone().requires_grad_() for t in args]
    want = loss(*eager_in)
    want.backward()
    got = torch.compile(loss, fullgraph=True, backend="aot_eager")(*comp_in)
    got.backward()
    torch.testing.assert_close(got, want)
    for e, c in zip(eager_in, comp_in):
        torch.testing.assert_close(c.grad, e.grad)
