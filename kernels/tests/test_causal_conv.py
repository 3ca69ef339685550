"""The fused causal depthwise conv1d (+ SiLU) against a float64 loop over time, gradients included.

Each path is forced: the compiled kernel (skipped, with the build error, when it
cannot be built) and the torch fallback inside the op (ZOO_KERNELS_CPP=0).
"""

import pytest
import torch
import torch.nn.functional as F
from scan_checks import NEEDS_KERNEL as needs_kernel

from zoo_kernels import cbuild
from zoo_kernels.conv import _conv_op, causal_conv1d
from zoo_kernels.conv import cpu as conv_cpu


def naive(x, weight, bias, prev, activation):
    """The definition, one token at a time."""
    W = weight.shape[1]
    prev = x.new_zeros(x.shape[0], W - 1, x.shape[2]) if prev is None else prev
    xs = torch.cat([prev, x], 1)
    ys = [(xs[:, t : t + W] * weight.t()).sum(1) for t in range(x.shape[1])]
    y = torch.stack(ys, 1) + (0 if bias is None else bias)
    return (F.silu(y) if activation == "silu" else y), xs[:, xs.shape[1] - (W - 1) :]


def inputs(B, T, C, W, with_bias, with_prev, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [r(B, T, C), r(C, W), r(C) if with_bias else None, r(B, W - 1, C) if with_prev else None]


def run(fn, args, dtype, activation):
    """y, the state, and the grads of a weighted sum of both for every tensor input."""
    leaves = [None if t is None else t.detach().to(dtype).requires_grad_() for t in args]
    y, state = fn(*leaves, activation)
    g = torch.Generator().manual_seed(1)
    loss = sum((t.double() * torch.randn(t.shape, generator=g, dtype=torch.float64)).sum() for t in (y, state))
    used = [t for t in leaves if t is not None]
    return [y, state, *torch.autograd.grad(loss, used)]


@pytest.mark.parametrize("activation", ["none", "silu"])
@pytest.mark.parametrize("W", [1, 3, 4])
@pytest.mark.parametrize("B,T,C", [(2, 9, 6), (1, 2, 40), (3, 70, 33)])  # T=2 < W-1 for W=4
@pytest.mark.parametrize("with_bias,with_prev", [(False, False), (True, True), (True, False)])
def test_matches_the_loop_with_gradients(path, activation, W, B, T, C, with_bias, with_prev):
    args = inputs(B, T, C, W, with_bias, with_prev)
    got = run(causal_conv1d, args, torch.float32, activation)
    want = run(naive, args, torch.float64, activation)
    for name, a, w in zip(["y", "state", "x", "weight", "bias/prev", "prev"], got, want):
        assert a.dtype == torch.float32 and a.shape == w.shape, name
        assert torch.allclose(a.double(), w, atol=1e-5, rtol=1e-5), name


@needs_kernel
def test_float64_is_tight():
    args = inputs(2, 13, 20, 4, True, True)
    got = run(causal_conv1d, args, torch.float64, "silu")
    want = run(naive, args, torch.float64, "silu")
    assert all(torch.allclose(a, w, atol=1e-12, rtol=1e-12) for a, w in zip(got, want))


@needs_kernel
def test_thread_counts_and_noncontiguous_agree_bitwise():
    # batch 1 splits channels into blocks across threads; 2^15+ elements turn threads on
    x, w, b, prev = (t.float() for t in inputs(1, 300, 130, 4, True, True))
    ref = run(causal_conv1d, [x, w, b, prev], torch.float32, "silu")
    old = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            got = run(causal_conv1d, [x, w, b, prev], torch.float32, "silu")
            assert all(torch.equal(a, r) for a, r in zip(got, ref)), n
    finally:
        torch.set_num_threads(old)
    # a slice of a wider tensor (like Mamba's of in_proj's output) and a non-unit channel stride
    strided = torch.cat([x, -x], -1)[..., : x.shape[2]]
    y1, _ = causal_conv1d(strided, w, b, prev, "silu")
    y2, _ = causal_conv1d(x.transpose(1, 2).contiguous().transpose(1, 2), w, b, prev, "silu")
    assert not strided.is_contiguous() and torch.equal(y1, ref[0]) and torch.equal(y2, ref[0])


def test_fallback_gives_the_same_values(monkeypatch):
    calls = []
    real = conv_cpu._call
    monkeypatch.setattr(conv_cpu, "_call", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    args, have = inputs(2, 11, 24, 4, True, True), cbuild.available()
    got = run(causal_conv1d, args, torch.float32, "silu")
    assert calls == ([0, 2] if have else [])  # the kernel's forward and backward ran
    monkeypatch.setenv("ZOO_KERNELS_CPP", "0")
    ref = run(causal_conv1d, args, torch.float32, "silu")
    assert len(calls) == (2 if have else 0)
    assert all(torch.allclose(a, r, atol=1e-6, rtol=1e-5) for a, r in zip(got, ref))


def test_state_carry_equals_whole_sequence(path):
    x, w, b, _ = (None if t is None else t.float() for t in inputs(2, 12, 8, 4, True, False))
    whole, _ = causal_conv1d(x, w, b, None, "silu")
    a, st = causal_conv1d(x[:, :2], w, b, None, "silu")  # shorter than the filter's past
    c, _ = causal_conv1d(x[:, 2:], w, b, st, "silu")
    assert torch.allclose(torch.cat([a, c], 1), whole, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("with_bias", [False, True])
def test_custom_op_registration_and_compile(with_bias):
    x, w, b, prev = (None if t is None else t.float() for t in inputs(2, 7, 8, 4, with_bias, True))
    torch.library.opcheck(_conv_op.op, (x, w, b, prev, None, True))
    fn = lambda x, w, b, p: causal_conv1d(x, w, b, p, "silu")  # noqa: E731
    eager = fn(x, w, b, prev)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")(x, w, b, prev)
    assert all(torch.allclose(e, c) for e, c in zip(eager, compiled))


def test_bad_arguments_name_them():
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(torch.randn(1, 3, 4), torch.randn(4, 2), activation="relu")
    with pytest.raises(ValueError, match=r"weight \(C, W\)"):
        causal_conv1d(torch.randn(1, 3, 4), torch.randn(5, 2))
