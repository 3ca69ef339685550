"""Documents in the causal conv: packed rows with `resets` equal each document run alone
(float64, gradients of x, weight, bias and the incoming state), on the compiled kernel and
the torch path; the two paths agree in float32; segments carry the state across a start;
CausalConv's step with `reset` equals its forward."""

import pytest
import torch
from doc_checks import layout, packed_equals_separate
from scan_checks import NEEDS_KERNEL as needs_kernel

from zoo_kernels.conv import CausalConv, _conv_op, causal_conv1d


def conv(x, prev=None, *, weight, bias, activation, resets=None):
    return causal_conv1d(x, weight, bias, prev, activation, resets=resets)


def data(T, C, W, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return r(3, T, C), r(C, W), r(C), r(3, W - 1, C)


@pytest.mark.parametrize("activation", ["none", "silu"])
@pytest.mark.parametrize("W", [1, 2, 4])
@pytest.mark.parametrize("T", [8, 13])
def test_packed_equals_separate(path, activation, W, T):
    x, w, b, prev = data(T, 5, W)
    shared = {"weight": w, "bias": b, "activation": activation}
    packed_equals_separate(conv, {"x": x}, {"prev": prev}, shared, layout(T))


@needs_kernel
@pytest.mark.parametrize("W", [3, 4])
def test_kernel_equals_torch_path_in_float32(monkeypatch, W):
    # 130 channels and 300 steps: several channel tiles, threads on
    x, w, b, prev = (t.float() for t in data(300, 130, W, seed=3))
    resets = torch.rand(3, 300, generator=torch.Generator().manual_seed(0)) < 0.05
    resets[1, 0] = True

    def both():
        leaves = [t.clone().requires_grad_() for t in (x, w, b, prev)]
        y, st = causal_conv1d(*leaves, "silu", resets=resets)
        return [y, st, *torch.autograd.grad((y * y.detach()).sum() + st.sum(), leaves)]

    got = both()
    monkeypatch.setenv("ZOO_KERNELS_CPP", "0")
    want = both()
    assert all(torch.allclose(a, r, atol=1e-5, rtol=1e-5) for a, r in zip(got, want))


def test_segments_carry_across_a_start(path):
    """A start inside the last W-1 rows of a segment: the next segment's first taps do not see
    the previous document (the state's rows before the last start are zero)."""
    W, T = 4, 12
    x, w, b, prev = data(T, 6, W, seed=1)
    resets = torch.zeros(3, T, dtype=torch.bool)
    resets[0, 5], resets[1, 4], resets[2, [0, 6]] = True, True, True  # rows 0, 1: a start in the last W-1 of x[:, :6]
    whole, st_whole = causal_conv1d(x, w, b, prev, resets=resets)
    for cut in (1, 2, 6):
        a, st = causal_conv1d(x[:, :cut], w, b, prev, resets=resets[:, :cut])
        c, st2 = causal_conv1d(x[:, cut:], w, b, st, resets=resets[:, cut:])
        assert torch.allclose(torch.cat([a, c], 1), whole, atol=1e-12), cut
        assert torch.allclose(st2, st_whole, atol=1e-12), cut


def test_no_resets_is_unchanged(path):
    x, w, b, prev = data(10, 4, 4, seed=2)
    none = causal_conv1d(x, w, b, prev, "silu")
    zeros = causal_conv1d(x, w, b, prev, "silu", resets=torch.zeros(3, 10, dtype=torch.bool))
    assert all(torch.equal(a, c) for a, c in zip(none, zeros))


@pytest.mark.parametrize("width,bias", [(4, True), (1, False), (3, False)])
def test_causal_conv_step_with_reset_equals_forward(path, width, bias):
    torch.manual_seed(0)
    m = CausalConv(6, width, bias=bias).double()
    x = torch.randn(3, 10, 6, dtype=torch.float64)
    prev = torch.randn(3, width - 1, 6, dtype=torch.float64)
    resets = layout(10)
    y, state = m(x, prev, resets=resets)
    st, outs = prev, []
    for t in range(10):
        o, st = m.step(x[:, t], st, reset=resets[:, t])
        outs.append(o)
    assert torch.allclose(torch.stack(outs, 1), y, atol=1e-12) and torch.allclose(st, state, atol=1e-12)
    packed_equals_separate(
        lambda x, prev=None, resets=None: m(x, prev, resets=resets), {"x": x}, {"prev": prev}, {}, resets
    )


@needs_kernel
def test_custom_op_with_resets():
    x, w, b, prev = (t.float() for t in data(7, 8, 4))
    torch.library.opcheck(_conv_op.op, (x, w, b, prev, layout(8)[:, :7], True))
