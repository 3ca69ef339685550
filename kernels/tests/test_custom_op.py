"""zoo_kernels' Op: in eager mode the implementation and autograd formula called directly, the
registered custom op under a dispatch mode, a tensor subclass or torch.compile; the same
values and gradients either way."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from zoo_kernels import cbuild
from zoo_kernels.glu import _glu_op
from zoo_kernels.norm import _norm_op

pytestmark = pytest.mark.skipif(not cbuild.available(), reason=f"no C kernels: {cbuild.why_unavailable()}")


class _Calls(TorchDispatchMode):
    """Records the name of every op dispatched under it."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


class _Tagged(torch.Tensor):
    """A tensor subclass that only passes through: it must take the custom op."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


def _inputs():
    torch.manual_seed(0)
    return torch.randn(6, 40, dtype=torch.float64), torch.rand(40, dtype=torch.float64) + 0.5


@pytest.mark.parametrize("name", ["rms_norm", "glu"])
def test_eager_call_equals_the_custom_op_values_and_gradients(name):
    x, w = _inputs()
    outs, grads = [], []
    for eager in (True, False):
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        if name == "rms_norm":
            op, args, leaves = _norm_op, (xs, ws, 1e-5, torch.float64), [xs, ws]
        else:
            op, args, leaves = _glu_op, (torch.cat([xs, xs.flip(0)], -1), "silu"), [xs]
        y = (op if eager else op.op)(*args)
        y = y[0] if isinstance(y, tuple) else y
        g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view(y.shape)
        outs.append(y.detach())
        grads.append(torch.autograd.grad(y, leaves, g))
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_eager_call_skips_the_dispatcher_and_a_dispatch_mode_sees_the_op():
    x, w = _inputs()
    with _Calls() as seen:
        _norm_op(x, w, 1e-5, torch.float64)
    assert any("zoo_kernels.rms_norm" in n for n in seen.names), seen.names


def test_a_tensor_subclass_takes_the_custom_op(monkeypatch):
    x, w = _inputs()
    direct = []
    monkeypatch.setattr(_norm_op, "impl", lambda *a: direct.append(1) or _norm_op.op(*a))
    y = _norm_op(x.as_subclass(_Tagged), w, 1e-5, torch.float64)[0]
    assert not direct
    torch.testing.assert_close(y.as_subclass(torch.Tensor), _norm_op(x, w, 1e-5, torch.float64)[0])
    _norm_op(x, w, 1e-5, torch.float64)
    assert direct  # plain tensors, no grad: the implementation directly


def test_no_grad_returns_outputs_without_a_graph():
    x, w = _inputs()
    x.requires_grad_()
    with torch.no_grad():
        y = _norm_op(x, w, 1e-5, torch.float64)[0]
    assert y.grad_fn is None and not y.requires_grad
