"""Mamba-2's Triton SSD (zoo_kernels/ssd/triton.py) against the naive recurrence (ssd/naive.py).

Without a GPU the kernels run under TRITON_INTERPRET=1 (set by conftest.py), so the shapes
are tiny. Outputs y, final states h_T and the gradients of every input (x, dt, A, B, C, h0)
are compared with the loop on the same values in float64.

Tolerances (norm-wise relative error ||got - want|| / ||want||):
- float64 inputs run the kernels in float64: only round-off separates them from the loop
  (about 1e-16 per operation over sums of a few dozen terms); 1e-10 leaves a wide margin
  while any wrong or missing term would give an error of order 1.
- float32 inputs run in float32 (unit round-off 6e-8) against the loop in float64 on the same
  rounded values; errors measured at these shapes stay below 1e-6 (the cumulative decays,
  and the row-minus-column sums of dA's gradient, lose a few bits); 1e-5 bounds that.
- bfloat16 inputs: bfloat16 outputs and gradients (8 bits of mantissa), so 1e-2 (BF16_TOL).
"""

import pytest
import torch
import torch.nn.functional as F
from scan_checks import BF16_TOL, DEVICE, NO_TRITON

import zoo_kernels
from zoo_kernels.backends import triton_installed
from zoo_kernels.ssd import _ssd_bwd_op, _ssd_op, ssd_naive, ssd_scan, ssd_triton

pytestmark = pytest.mark.skipif(not triton_installed(), reason=NO_TRITON)

F64_TOL = 1e-10
F32_TOL = 1e-5

# (batch, T, heads, headdim P, ngroups G, d_state N, chunk L, with h0)
SHAPES = [
    (1, 11, 4, 3, 2, 5, 4, True),  # 2 groups of 2 heads; 3 chunks, the last partial; P, N not powers of 2
    (1, 1, 2, 4, 1, 3, 8, True),  # one step
    (2, 5, 2, 4, 2, 3, 16, False),  # one chunk longer than the sequence; a group per head; no h0
    (1, 13, 2, 20, 1, 20, 6, True),  # with small_blocks: 2 N blocks, 2 P blocks, 7 state blocks; L = 6
]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 so that N = P = 20 span two of them (the loops over N and the P grid)."""
    from zoo_kernels.ssd import triton as kernels

    monkeypatch.setattr(kernels, "BLOCK_N_MAX", 16)
    monkeypatch.setattr(kernels, "BLOCK_P_MAX", 16)
    monkeypatch.setattr(kernels, "BLOCK_S", 64)
    return kernels


def inputs(b, T, H, P, G, N, with_h0=True, seed=0):
    """float64 CPU tensors (outputs_and_grads moves them to DEVICE)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        r(b, T, H, P),
        F.softplus(r(b, T, H)),
        -torch.exp(r(H)),
        r(b, T, G, N),
        r(b, T, G, N),
        r(b, H, P, N) if with_h0 else None,
    ]


def on_device(b, T, H, P, G, N, dtype=torch.float32):
    return [t.to(DEVICE, dtype) for t in inputs(b, T, H, P, G, N)]


def outputs_and_grads(fn, args, dtype, use=("y", "h")):
    """y, h_T and the gradients of a random weighting of the used outputs w.r.t. every input."""
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
    return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-300)).item()


NAMES = ["y", "h_T", "dx", "ddt", "dA", "dB", "dC", "dh0"]


def check(got, want, tol):
    for name, a, w in zip(NAMES, got, want):
        assert a.shape == w.shape, name
        assert torch.isfinite(a).all(), f"{name} has inf/NaN"
        err = rel(a, w)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def against_the_loop(args, chunk, dtype, tol, **kw):
    got = outputs_and_grads(lambda *a: ssd_triton(*a[:5], chunk, a[5]), args, dtype, **kw)
    ref_args = [None if t is None else t.to(dtype).double() for t in args]  # the same rounded values
    want = outputs_and_grads(ssd_naive, ref_args, torch.float64, **kw)
    check(got, want, tol)
    return got


@pytest.mark.parametrize("dtype,tol", [(torch.float64, F64_TOL), (torch.float32, F32_TOL)], ids=["f64", "f32"])
@pytest.mark.parametrize("b,T,H,P,G,N,L,with_h0", SHAPES)
def test_ssd_triton_forward_backward_and_states_match_the_loop(small_blocks, b, T, H, P, G, N, L, with_h0, dtype, tol):
    got = against_the_loop(inputs(b, T, H, P, G, N, with_h0), L, dtype, tol)
    assert got[0].dtype == dtype and got[1].dtype == dtype  # h_T accumulates in float32 / float64


def test_ssd_triton_default_blocks_several_chunks():
    """The shipped block sizes and chunk 16 (BL = 16: no padding inside a chunk), 3 chunks."""
    against_the_loop(inputs(1, 40, 2, 8, 1, 8), 16, torch.float32, F32_TOL)


@pytest.mark.parametrize("use", [("y",), ("h",)])
def test_ssd_triton_one_output_used(use):
    """Only y or only h_T feeds the loss: the other upstream gradient is absent (None)."""
    against_the_loop(inputs(2, 9, 2, 3, 1, 4), 4, torch.float64, F64_TOL, use=use)


def test_ssd_triton_extreme_decays():
    """dt * A from -10 (a step's decay 5e-5; far less over a chunk) to -4e-3 (0.996): nothing overflows."""
    args = inputs(2, 12, 2, 3, 1, 4)
    g = torch.Generator().manual_seed(2)
    args[1] = 10 ** (torch.rand(2, 12, 2, generator=g, dtype=torch.float64) * 2.3 - 1.5)  # dt in [0.03, 6.3]
    args[2] = -(10 ** (torch.rand(2, generator=g, dtype=torch.float64) * 2.0 - 1.5))  # -A in [0.03, 3.2]
    z = args[1] * args[2]
    assert z.min() < -5 and z.max() > -2e-2
    against_the_loop(args, 4, torch.float32, F32_TOL)


def test_ssd_triton_noncontiguous_inputs():
    """Mamba-2 passes views of one projection: x, B and C with the row stride of the fused tensor."""
    b, T, H, P, G, N = 2, 7, 2, 3, 2, 4
    args = inputs(b, T, H, P, G, N)
    contiguous = outputs_and_grads(lambda *a: ssd_triton(*a[:5], 4, a[5]), args, torch.float32)
    dev = [t.to(DEVICE, torch.float32) for t in args]  # float32 already: outputs_and_grads keeps the strides
    fused = torch.cat([dev[0].flatten(2), dev[3].flatten(2), dev[4].flatten(2)], -1)
    x, B, C = torch.split(fused, [H * P, G * N, G * N], -1)
    views = [x.unflatten(-1, (H, P)), dev[1], dev[2], B.unflatten(-1, (G, N)), C.unflatten(-1, (G, N)), dev[5]]
    assert not any(views[i].is_contiguous() for i in (0, 3, 4))
    got = outputs_and_grads(lambda *a: ssd_triton(*a[:5], 4, a[5]), views, torch.float32)
    for a, c in zip(got, contiguous):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)  # the same values; only strides differ
    check(got, outputs_and_grads(ssd_naive, [t.float().double() for t in args], torch.float64), F32_TOL)


def test_ssd_triton_state_carries_across_calls():
    """h_T of the first half as h0 of the second gives the whole sequence's outputs and state
    (what generation after a prompt, or a document reset, relies on)."""
    x, dt, A, B, C, h0 = on_device(1, 10, 2, 3, 1, 4)
    y, h = ssd_triton(x, dt, A, B, C, 4, h0)
    y1, h1 = ssd_triton(x[:, :6], dt[:, :6], A, B[:, :6], C[:, :6], 4, h0)
    y2, h2 = ssd_triton(x[:, 6:], dt[:, 6:], A, B[:, 6:], C[:, 6:], 4, h1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h2, h, rtol=1e-5, atol=1e-5)
    zero_start = ssd_triton(x[:, 6:], dt[:, 6:], A, B[:, 6:], C[:, 6:], 4, torch.zeros_like(h1))
    no_start = ssd_triton(x[:, 6:], dt[:, 6:], A, B[:, 6:], C[:, 6:], 4)
    for a, c in zip(zero_start, no_start):
        torch.testing.assert_close(a, c)


def test_ssd_triton_bf16_inputs():
    args = inputs(1, 9, 2, 4, 1, 4)
    leaves = [
        args[0].bfloat16(),
        args[1].float(),
        args[2].float(),
        args[3].bfloat16(),
        args[4].bfloat16(),
        args[5].float(),
    ]  # as Mamba-2 under bf16: dt and A in float32
    leaves = [t.detach().to(DEVICE).requires_grad_() for t in leaves]
    y, h = ssd_triton(*leaves[:5], 4, leaves[5])
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    g = torch.Generator().manual_seed(1)
    wy, wh = (torch.randn(t.shape, generator=g, dtype=torch.float64).to(DEVICE) for t in (y, h))
    grads = torch.autograd.grad((y.double() * wy).sum() + (h.double() * wh).sum(), leaves)
    assert [gr.dtype for gr in grads] == [t.dtype for t in leaves]
    want = outputs_and_grads(ssd_naive, [t.detach().double() for t in leaves], torch.float64)
    check([y, h, *grads], want, BF16_TOL)


def test_ssd_triton_dispatch(monkeypatch):
    """ssd_scan: an explicit backend wins; ZOO_KERNELS=triton takes the Triton kernels; by default a
    CUDA tensor takes them too and a CPU tensor the torch chunked path."""
    import zoo_kernels.ssd as ssd

    calls = []
    for name in ("ssd_triton", "ssd_chunked", "ssd_naive"):
        real = getattr(ssd, name)
        monkeypatch.setattr(ssd, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    x, dt, A, B, C, h0 = on_device(1, 5, 1, 3, 1, 4)
    want = ssd_naive(*(t.double() for t in (x, dt, A, B, C, h0)))
    got = {}
    for backend in ("naive", "torch", "triton"):
        got[backend] = zoo_kernels.ssd_scan(x, dt, A, B, C, 4, h0, backend=backend)
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    got["env"] = ssd_scan(x, dt, A, B, C, 4, h0)
    monkeypatch.delenv("ZOO_KERNELS")
    got["default"] = ssd_scan(x, dt, A, B, C, 4, h0)
    default = "ssd_triton" if DEVICE == "cuda" else "ssd_chunked"
    assert calls == ["ssd_naive", "ssd_chunked", "ssd_triton", "ssd_triton", default]
    for y, h in got.values():
        assert rel(y, want[0]) < F32_TOL and rel(h, want[1]) < F32_TOL
    with pytest.raises(ValueError, match="G dividing H"):
        ssd_scan(x, dt, A, B.expand(1, 5, 2, 4), C.expand(1, 5, 2, 4), 4)


def test_ssd_triton_custom_ops_pass_opcheck():
    x, dt, A, B, C, h0 = on_device(1, 3, 1, 2, 1, 2)
    torch.library.opcheck(_ssd_op.op, tuple(t.clone().requires_grad_() for t in (x, dt, A, B, C)) + (4, h0))
    gy, gh = torch.randn_like(x), torch.randn_like(h0)
    torch.library.opcheck(_ssd_bwd_op.op, ([x, dt, A, B, C, h0, None], 4, gy, gh))


def test_ssd_triton_compiles_without_graph_breaks():
    torch._dynamo.reset()

    def loss(*args):
        y, h = ssd_triton(*args[:5], 4, args[5])
        return (y * y).sum() + h.sum()

    args = on_device(1, 6, 1, 3, 1, 4)
    eager_in = [t.clone().requires_grad_() for t in args]
    comp_in = [t.clone().requires_grad_() for t in args]
    want = loss(*eager_in)
    want.backward()
    got = torch.compile(loss, fullgraph=True, backend="aot_eager")(*comp_in)
    got.backward()
    torch.testing.assert_close(got, want)
    for e, c in zip(eager_in, comp_in):
        torch.testing.assert_close(c.grad, e.grad)
