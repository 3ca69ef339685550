"""CausalConv: the parallel conv, its one-token step and the equation agree, gradients included."""

import pytest
import torch

from zoo_kernels.conv import CausalConv


def naive(conv, x, prev):
    """y_t = b + sum_j w_j x_{t-k+1+j}, read off the definition one token at a time."""
    xx = torch.cat([prev, x], dim=1)
    k = conv.width
    ys = [(xx[:, t : t + k] * conv.weight.t()).sum(1) for t in range(x.shape[1])]
    y = torch.stack(ys, 1)
    return y + conv.bias if conv.bias is not None else y


@pytest.mark.parametrize("width,bias", [(4, True), (1, False), (3, False)])
def test_forward_step_and_naive_agree(width, bias):
    torch.manual_seed(0)
    conv = CausalConv(6, width, bias=bias).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    prev = torch.randn(2, width - 1, 6, dtype=torch.float64)
    y, state = conv(x, prev)
    ref = naive(conv, x, prev)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, conv.weight], g)
    ref_grads = torch.autograd.grad(ref, [x, conv.weight], g)
    assert torch.allclose(y, ref) and all(torch.allclose(a, b) for a, b in zip(grads, ref_grads))
    st, outs = prev, []
    for t in range(9):
        o, st = conv.step(x[:, t], st)
        outs.append(o)
    assert torch.allclose(torch.stack(outs, 1), y) and torch.allclose(st, state)


def test_state_carry_equals_whole_sequence():
    conv = CausalConv(5, 4, bias=True).double()
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    whole, _ = conv(x)
    a, st = conv(x[:, :2])  # a segment shorter than the filter
    b, _ = conv(x[:, 2:], st)
    assert torch.allclose(torch.cat([a, b], 1), whole)
