"""When is minGRU's linear form (fp32 accumulation) enough, and when does log space matter?

minGRU: h_t = (1 - z_t) h_{t-1} + z_t g(x_t), z = sigmoid(k), g(x) > 0.
  linear form: linear_scan(1 - z, z * g(x))
  log form:    log_linear_scan(-softplus(k), -softplus(-k) + log g(x))
Both are compared with the float64 definition on the torch path.
Findings, asserted below:
  * fp32 gate tensors: the linear form is as accurate as the log form (<= 1e-5)
    for fast, typical and slow gates alike, at T = 2048;
  * bf16 gate tensors with slow gates (z ~ 1e-3): 1 - z rounds away in bf16 and
    the linear form is off by tens of percent; the log form stays within 1e-2;
  * states below fp32's range (z ~ e^-100): the linear form underflows to 0,
    the log form keeps them to 1e-5 in log space.
"""

import pytest
import torch
import torch.nn.functional as F
from scan_checks import rel_err

import zoo_kernels


def g(x):
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x):
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def reference_log_h(k, x):
    k, x = k.double(), x.double()
    return zoo_kernels.log_linear_scan(-F.softplus(k), -F.softplus(-k) + log_g(x), backend="naive")[0]


def linear_form(k, x):
    z = torch.sigmoid(k)
    return zoo_kernels.linear_scan(1 - z, z * g(x), backend="torch")[0].double()


def log_form(k, x):
    return zoo_kernels.log_linear_scan(-F.softplus(k), -F.softplus(-k) + log_g(x), backend="torch")[0].double()


def gates(gate_mean, seed=0, shape=(2, 2048, 16)):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen) + gate_mean, torch.randn(shape, generator=gen)


@pytest.mark.parametrize("gate_mean", [-7.0, 0.0, 10.0], ids=["slow", "typical", "fast"])
def test_fp32_linear_form_is_enough(gate_mean):
    k, x = gates(gate_mean)
    want_h = reference_log_h(k, x).exp()
    assert rel_err(linear_form(k, x), want_h) <= 1e-5
    assert rel_err(log_form(k, x).exp(), want_h) <= 1e-5


def test_bf16_slow_gates_need_log_space():
    k, x = gates(-7.0)
    want_h = reference_log_h(k, x).exp()
    k16, x16 = k.bfloat16(), x.bfloat16()
    assert rel_err(linear_form(k16, x16), want_h) > 5e-2
    assert rel_err(log_form(k16, x16).exp(), want_h) <= 1e-2


def test_states_below_fp32_range_need_log_space():
    k, x = gates(-100.0, shape=(2, 256, 16))
    want = reference_log_h(k, x)
    assert (linear_form(k, x) == 0).any()  # underflowed: log h would be -inf
    assert rel_err(log_form(k, x), want) <= 1e-5
