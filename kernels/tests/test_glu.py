"""The fused gated activation (glu/glu.c) against its reference act(gate) * value (glu/naive.py):
float64 values and gradients, float32 and bfloat16 within their rounding, layouts, threads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo_kernels import cbuild
from zoo_kernels.glu import ACTIVATIONS, cpu, gated, glu

pytestmark = pytest.mark.skipif(not cbuild.available(), reason=f"no C kernels: {cbuild.why_unavailable()}")


def _reference(gate, value, act):
    a = F.silu(gate) if act == "silu" else F.gelu(gate, approximate="tanh")
    return a * value


def _exact(gate, value, act):
    """The same function in float64 written as x sigma(z) (z = x for SiLU, 2u for tanh-GeLU, since
    (1 + tanh(u)) / 2 = sigma(2u)): torch's 1 + tanh(u) cancels in the negative tail."""
    x = gate.double()
    z = x if act == "silu" else 2 * 0.7978845608028654 * (x + 0.044715 * x**3)
    return x * torch.sigmoid(z) * value.double()


def _grads(out, inputs, gy):
    return torch.autograd.grad(out, inputs, gy)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(3, 5, 2 * 37), (7, 2 * 16), (2, 3, 4, 2 * 9), (2 * 5,)])
def test_glu_equals_the_equation_float64(act, shape):
    torch.manual_seed(0)
    h = (3 * torch.randn(shape, dtype=torch.float64)).requires_grad_()
    y = glu(h, act)
    gate, value = h.chunk(2, -1)
    ref = _reference(gate, value, act)
    gy = torch.randn_like(ref)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(_grads(y, h, gy)[0], _grads(ref, h, gy)[0], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_glu_gradcheck(act):
    h = torch.randn(3, 4, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: glu(t, act), (h,))


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gated_two_tensors_float64_and_strided(act):
    torch.manual_seed(1)
    g = (3 * torch.randn(4, 9, 33, dtype=torch.float64)).requires_grad_()
    v_base = torch.randn(4, 33, 9, dtype=torch.float64)
    v = v_base.transpose(1, 2).requires_grad_()  # not contiguous: copied in, same values
    y, ref = gated(g, v, act), _reference(g, v, act)
    gy = torch.randn_like(ref)
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-13)
    for a, b in zip(_grads(y, (g, v), gy), _grads(ref, (g, v), gy)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_float32_within_its_rounding(act):
    torch.manual_seed(2)
    h = (4 * torch.randn(6, 64, 2 * 100)).requires_grad_()
    h64 = h.detach().double().requires_grad_()
    y, ref = glu(h, act), glu(h64, act, backend="naive")
    gy = torch.randn_like(ref)
    torch.testing.assert_close(y.double(), ref, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(_grads(y, h, gy.float())[0].double(), _grads(ref, h64, gy)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_bfloat16_rounds_the_float32_result(act):
    """bf16 in, computed in float32, rounded to nearest even once: within one bf16 step of the
    exact result (`_exact`) rounded by torch, and equal to it for nearly every element."""
    torch.manual_seed(3)
    h = (3 * torch.randn(8, 32, 2 * 128)).bfloat16().requires_grad_()
    y = glu(h, act)
    assert y.dtype == torch.bfloat16
    ref = _exact(*h.detach().chunk(2, -1), act).bfloat16()
    step = ref.float().abs().clamp_min(1e-30) * 2**-7
    assert ((y.float() - ref.float()).abs() <= step).all()
    assert (y == ref).float().mean() > 0.99
    gy = torch.randn_like(y)
    (dh,) = _grads(y, h, gy)
    h64 = h.detach().double().requires_grad_()
    (dref,) = _grads(glu(h64, act, backend="naive"), h64, gy.double())
    torch.testing.assert_close(dh.double(), dref, rtol=2**-7, atol=1e-6)


def test_nan_and_infinity_pass_through():
    h = torch.tensor([[float("nan"), 1.0, 2.0, 3.0], [float("inf"), -2.0, 1.0, 1.0]])
    y = glu(h, "silu")
    assert torch.isnan(y[0, 0]) and y[1, 0] == float("inf")
    yb = glu(h.bfloat16(), "silu")
    assert torch.isnan(yb[0, 0]) and yb[1, 0] == float("inf")


def test_the_result_does_not_depend_on_the_thread_count(monkeypatch):
    torch.manual_seed(4)
    h = torch.randn(64, 512, 2 * 96)  # above cbuild.PARALLEL_MIN: threads
    gy = torch.randn(64, 512, 96)
    runs = []
    for n in (1, 2, 3):
        monkeypatch.setattr(cbuild, "threads", lambda numel, n=n: n)
        x = h.clone().requires_grad_()
        y = glu(x, "silu")
        runs.append((y, _grads(y, x, gy)[0]))
    for y, d in runs[1:]:
        assert torch.equal(y, runs[0][0]) and torch.equal(d, runs[0][1])


def test_without_the_compiled_kernel_the_reference_runs(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS_CPP", "0")
    assert not cpu.usable(torch.randn(2, 4))
    h = torch.randn(2, 8, dtype=torch.float64)
    torch.testing.assert_close(glu(h), _reference(*h.chunk(2, -1), "silu"))


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="activation 'relu'"):
        glu(torch.randn(2, 4), "relu")
    with pytest.raises(ValueError, match="must be even"):
        glu(torch.randn(2, 5))
    with pytest.raises(ValueError, match="differ"):
        gated(torch.randn(2, 4), torch.randn(2, 5))


def test_one_node_under_torch_compile():
    """The custom op traces without a graph break (fake kernels give the shapes), forward and backward."""
    torch._dynamo.reset()
    h = torch.randn(4, 6, 2 * 8, dtype=torch.float64, requires_grad=True)
    fn = torch.compile(lambda t: glu(t, "gelu_tanh").sum(), backend="aot_eager", fullgraph=True)
    (d,) = torch.autograd.grad(fn(h), h)
    (ref,) = torch.autograd.grad(glu(h, "gelu_tanh", backend="naive").sum(), h)
    torch.testing.assert_close(d, ref, rtol=1e-13, atol=1e-13)


def test_outputs_are_tensors_of_their_own():
    """Not views: FSDP2 warns when a wrapped module returns a view (an in-place op on it would skip
    its hooks), and a custom op's outputs should be fresh."""
    h = torch.randn(2, 3, 8, requires_grad=True)
    y = glu(h)
    assert not y._is_view()
    assert not gated(torch.randn(2, 3, 4), torch.randn(2, 3, 4))._is_view()
    assert not torch.autograd.grad(y.sum(), h)[0]._is_view()
