"""Backend selection, the public API contract, and torch.compile / torch.library registration."""

import os
import subprocess
import sys

import pytest
import torch

import zoo_kernels
from zoo_kernels import backends


def small(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 5, 4, generator=gen).to(dtype)
    x = torch.randn(2, 5, 4, generator=gen).to(dtype)
    return a, x, torch.randn(2, 4, generator=gen).to(dtype)


def test_available_backends_lists_naive_and_torch():
    found = zoo_kernels.available_backends()
    assert found[:2] == ["naive", "torch"]
    assert ("triton" in found) == backends.triton_usable()


def test_cpu_tensors_default_to_torch():
    assert backends.select(torch.zeros(1)) == "torch"


@pytest.mark.parametrize("name", ["naive", "torch"])
def test_env_var_forces_backend(monkeypatch, name):
    monkeypatch.setenv("ZOO_KERNELS", name)
    assert backends.select(torch.zeros(1)) == name
    a, x, h0 = small()
    h, _ = zoo_kernels.linear_scan(a, x, h0)
    want, _ = zoo_kernels.linear_scan(a, x, h0, backend=name)
    assert torch.equal(h, want)


def test_bad_env_var_is_an_error(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", "cuda-magic")
    with pytest.raises(ValueError, match="ZOO_KERNELS"):
        zoo_kernels.linear_scan(*small())


def test_public_api_contract():
    a, x, h0 = small(torch.bfloat16)
    for h, last in (
        zoo_kernels.linear_scan(a, x, h0),
        zoo_kernels.linear_scan(a, x),
        zoo_kernels.log_linear_scan(a.float().log(), x, h0),
        zoo_kernels.rg_lru(x, x, x, torch.randn(4)),
        zoo_kernels.rg_lru(x, x, x, torch.randn(4), 8.0, h0),
    ):
        assert h.shape == x.shape and h.dtype == x.dtype
        assert last.shape == (2, 4) and last.dtype == torch.float32


def test_shape_errors_are_clear():
    a, x, h0 = small()
    with pytest.raises(ValueError, match="one shape"):
        zoo_kernels.linear_scan(a[:, :3], x)
    with pytest.raises(ValueError, match="initial state"):
        zoo_kernels.linear_scan(a, x, h0[:1])
    with pytest.raises(ValueError, match="a_param"):
        zoo_kernels.rg_lru(x, x, x, torch.randn(3))


def test_imports_and_runs_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail
        "import torch, zoo_kernels\n"
        "assert zoo_kernels.available_backends() == ['naive', 'torch']\n"
        "h, _ = zoo_kernels.linear_scan(torch.rand(1, 3, 2), torch.randn(1, 3, 2))\n"
        "assert 'triton' not in sys.modules or sys.modules['triton'] is None\n"
    )
    # a bare environment, except where the packages were installed by PYTHONPATH (a --target install)
    env = {"PATH": "/usr/bin:/bin", "ZOO_KERNELS": "", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("name", ["linear_scan", "log_linear_scan", "rg_lru_fused", "rg_lru_fused+resets"])
def test_custom_op_registrations_pass_opcheck(name):
    """torch.library's own checks of the fake kernel, autograd and schema."""
    a, x, h0 = small()
    if name.startswith("rg_lru_fused"):
        resets = torch.rand(x.shape[:2]) < 0.3 if name.endswith("resets") else None
        args = (x, a, x * 2, torch.randn(4), 8.0, h0, resets, "torch")
        name = "rg_lru_fused"
    else:
        args = (a.log() if name == "log_linear_scan" else a, x, h0, "torch")
    args = tuple(t.requires_grad_() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in args)
    torch.library.opcheck(getattr(torch.ops.zoo_kernels, name), args)


def _all_ops(a, x, h0, log_x, r_pre, a_param):
    h, last = zoo_kernels.linear_scan(a, x, h0)
    y, y_last = zoo_kernels.log_linear_scan(a.log(), log_x, None)
    g, g_last = zoo_kernels.rg_lru(x, r_pre, r_pre * 2, a_param)
    return (h * y.exp()).sum() + last.sum() + y_last.sum() + g.sum() + g_last.sum()


def _linear_only(a, x, h0, *unused):
    h, last = zoo_kernels.linear_scan(a, x, h0)
    return (h * h).sum() + last.sum()


@pytest.mark.parametrize(
    "compiler, fn",
    [("aot_eager", _all_ops), ("inductor", _linear_only)],  # inductor's C++ build is slow: one op
)
def test_compiles_without_graph_breaks(compiler, fn):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.rand(2, 9, 4, generator=gen) * 0.9 + 0.05,
        torch.randn(2, 9, 4, generator=gen),
        torch.randn(2, 4, generator=gen),
        torch.randn(2, 9, 4, generator=gen),
        torch.randn(2, 9, 4, generator=gen),
        torch.randn(4, generator=gen),
    ]
    eager_in = [t.clone().requires_grad_() for t in inputs]
    comp_in = [t.clone().requires_grad_() for t in inputs]
    want = fn(*eager_in)
    want.backward()
    got = torch.compile(fn, fullgraph=True, backend=compiler)(*comp_in)
    got.backward()
    torch.testing.assert_close(got, want)
    for e, c in zip(eager_in, comp_in):
        if e.grad is not None:
            torch.testing.assert_close(c.grad, e.grad)
