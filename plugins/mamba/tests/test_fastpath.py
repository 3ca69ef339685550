"""The CUDA wrappers: torch.library custom ops with fake kernels and autograd.

Their "torch" impl runs everywhere, so the wrapper itself (opcheck, gradients,
torch.compile without graph breaks) is tested on CPU; the comparisons of the
mamba-ssm / causal-conv1d kernels against the PyTorch path need CUDA and skip
without it.
"""

import importlib.util
import warnings

import pytest
import torch

from zoo_mamba import Mamba, Mamba2, Mamba2Config, MambaConfig, fastpath, paths
from zoo_mamba.reference import causal_conv_ref, selective_scan_ref, ssd_ref

f64 = torch.float64


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def ssd_args(device="cpu", dtype=f64, T=13, chunk=4, h0=True):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)  # noqa: E731
    b, H, P, N, G = 2, 4, 8, 16, 1
    dt = torch.nn.functional.softplus(r(b, T, H))
    return [r(b, T, H, P), dt, -torch.exp(r(H)), r(b, T, G, N), r(b, T, G, N), chunk, r(b, H, P, N) if h0 else None]


def sscan_args(device="cpu", dtype=f64, T=9):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)  # noqa: E731
    b, D, N = 2, 6, 4
    return [
        r(b, T, D),
        torch.nn.functional.softplus(r(b, T, D)),
        -torch.exp(r(D, N).float()).to(dtype),
        r(b, T, N),
        r(b, T, N),
    ]


def vjp(fn, args, seed=1):
    leaves = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)).sum() for o in outs)
    wrt = [t for t in leaves if isinstance(t, torch.Tensor)]
    return outs, torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("h0", [True, False])
def test_ssd_op_torch_impl_matches_reference_with_gradients(h0):
    args = ssd_args(h0=h0)
    outs, g = vjp(lambda *a: fastpath.ssd_scan(*a, "torch"), args)
    outs_ref, g_ref = vjp(lambda x, dt, A, B, C, c, h: ssd_ref(x, dt, A, B, C, h), args)
    assert all(rel(a, b) < 1e-12 for a, b in zip(outs, outs_ref))
    assert all(rel(a, b) < 1e-10 for a, b in zip(g, g_ref))


def test_selective_scan_and_conv_ops_torch_impl_match_reference_with_gradients():
    args = sscan_args()
    (y,), g = vjp(lambda *a: fastpath.selective_scan(*a, "torch"), args)
    (y_ref,), g_ref = vjp(lambda *a: selective_scan_ref(*a)[0], args)
    assert rel(y, y_ref) < 1e-12 and all(rel(a, b) < 1e-10 for a, b in zip(g, g_ref))
    x, w, bias = torch.randn(2, 7, 5, dtype=f64), torch.randn(5, 4, dtype=f64), torch.randn(5, dtype=f64)
    (y,), g = vjp(lambda *a: fastpath.conv1d_silu(*a, "torch"), [x, w, bias])
    (y_ref,), g_ref = vjp(lambda *a: causal_conv_ref(*a, None)[0], [x, w, bias])
    assert rel(y, y_ref) < 1e-12 and all(rel(a, b) < 1e-12 for a, b in zip(g, g_ref))


def test_ops_pass_torch_library_opcheck():
    x, dt, A, B, C, chunk, h0 = ssd_args(dtype=torch.float32)
    for args in ([x, dt, A, B, C, chunk, h0, "torch"], [x, dt, A, B, C, chunk, None, "torch"]):
        torch.library.opcheck(
            fastpath.ssd_scan, [a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
        )
    u, dt1, A1, B1, C1 = sscan_args(dtype=torch.float32)
    torch.library.opcheck(fastpath.selective_scan, [t.requires_grad_() for t in (u, dt1, A1, B1, C1)] + ["torch"])
    xc, w = torch.randn(2, 7, 5, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    torch.library.opcheck(fastpath.conv1d_silu, [xc, w, None, "torch"])
    h = torch.randn(2, 4, 8, 16)  # Mamba-2 layout (b, H, P, N), one group
    step_args = [t.detach() for t in (h, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0])]  # inference-only op
    torch.library.opcheck(fastpath.ssm_step, step_args + ["torch"])
    h1 = torch.randn(2, 6, 4)  # Mamba-1 layout (b, D, N)
    step_args = [t.detach() for t in (h1, u[:, 0], dt1[:, 0], A1, B1[:, 0], C1[:, 0])]
    torch.library.opcheck(fastpath.ssm_step, step_args + ["torch"])
    torch.library.opcheck(fastpath.conv_step, [xc[:, 0].detach(), torch.randn(2, 3, 5), w.detach(), None, "torch"])


def test_ssd_op_compiles_without_graph_breaks():
    args = ssd_args(dtype=torch.float32)
    fn = lambda *a: fastpath.ssd_scan(*a, "torch")[0].square().sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    _, g = vjp(compiled, args)
    _, g_ref = vjp(fn, args)
    assert all(rel(a, b) < 1e-5 for a, b in zip(g, g_ref))


def test_no_cuda_library_is_touched_on_cpu():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the missing-package line is for CUDA tensors only
        assert not paths.usable("mamba_ssm", torch.zeros(1))
        m = Mamba2(32, Mamba2Config(headdim=8))
        m(torch.randn(1, 4, 32))


def test_pick_takes_the_libraries_only_where_they_serve(monkeypatch):
    """The one choice per forward and per step (paths.pick, pick_step), with the libraries
    answered as installed on a CUDA tensor: causal-conv1d's conv takes no carried state,
    mamba-ssm's selective scan neither takes nor returns one, its SSD does both; the decode
    kernels serve only without grad; a named backend is taken as is; off CUDA, chunked."""
    monkeypatch.setattr(paths, "_on_cuda", lambda t: True)
    monkeypatch.setattr(paths, "_found", {"mamba_ssm": True, "causal_conv1d": True})
    x = torch.zeros(1)
    pick = lambda backend="auto", **kw: tuple(paths.pick(backend, x, **kw))  # noqa: E731
    assert pick(ssd=False, carried=False, return_state=False) == ("cuda", "cuda")
    assert pick(ssd=False, carried=False, return_state=True) == ("cuda", "chunked")
    assert pick(ssd=False, carried=True, return_state=True) == ("chunked", "chunked")
    assert pick(ssd=True, carried=True, return_state=True) == ("chunked", "cuda")
    assert pick("naive", ssd=True, carried=False, return_state=False) == ("naive", "naive")
    assert pick("chunked", ssd=False, carried=False, return_state=False) == ("chunked", "chunked")
    assert tuple(paths.pick_step("auto", x)) == ("torch", "torch")  # grad on: the differentiable step
    with torch.no_grad():
        assert tuple(paths.pick_step("auto", x)) == ("cuda", "cuda")
        assert tuple(paths.pick_step("chunked", x)) == ("torch", "torch")
    monkeypatch.setattr(paths, "_on_cuda", lambda t: False)
    assert pick(ssd=True, carried=False, return_state=False) == ("chunked", "chunked")


# -- CUDA: the kernels against the PyTorch path ---------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (this machine has none)")
has_mamba_ssm = importlib.util.find_spec("mamba_ssm") is not None
has_conv = importlib.util.find_spec("causal_conv1d") is not None
needs_mamba_ssm = pytest.mark.skipif(not has_mamba_ssm, reason="needs mamba-ssm (pip install 'zoo-mamba[cuda]')")
needs_conv = pytest.mark.skipif(not has_conv, reason="needs causal-conv1d (pip install 'zoo-mamba[cuda]')")


@cuda
@needs_mamba_ssm
@pytest.mark.parametrize("h0", [True, False])
def test_cuda_ssd_kernel_matches_torch_path(h0):
    args = ssd_args("cuda", torch.float32, T=100, chunk=64, h0=h0)
    outs, g = vjp(lambda *a: fastpath.ssd_scan(*a, "cuda"), args)
    outs_ref, g_ref = vjp(lambda *a: fastpath.ssd_scan(*a, "torch"), args)
    assert all(rel(a, b) < 1e-3 for a, b in zip(outs, outs_ref))
    assert all(rel(a, b) < 1e-2 for a, b in zip(g, g_ref))


@cuda
@needs_mamba_ssm
def test_cuda_selective_scan_matches_torch_path():
    args = sscan_args("cuda", torch.float32, T=100)
    (y,), g = vjp(lambda *a: fastpath.selective_scan(*a, "cuda"), args)
    (y_ref,), g_ref = vjp(lambda *a: fastpath.selective_scan(*a, "torch"), args)
    assert rel(y, y_ref) < 1e-3 and all(rel(a, b) < 1e-2 for a, b in zip(g, g_ref))


@cuda
@needs_conv
def test_cuda_conv_matches_torch_path():
    x, w, b = torch.randn(2, 50, 64, device="cuda"), torch.randn(64, 4, device="cuda"), torch.randn(64, device="cuda")
    (y,), g = vjp(lambda *a: fastpath.conv1d_silu(*a, "cuda"), [x, w, b])
    (y_ref,), g_ref = vjp(lambda *a: fastpath.conv1d_silu(*a, "torch"), [x, w, b])
    assert rel(y, y_ref) < 1e-4 and all(rel(a, b) < 1e-3 for a, b in zip(g, g_ref))


@cuda
@needs_mamba_ssm
@needs_conv
@pytest.mark.parametrize("cls,cfg", [(Mamba2, Mamba2Config(headdim=16)), (Mamba, MambaConfig())])
def test_cuda_mixer_matches_chunked_path_and_steps(cls, cfg):
    torch.manual_seed(0)
    fast = cls(64, cfg).cuda()
    slow = cls(64, type(cfg)(**{**vars(cfg), "backend": "chunked"})).cuda()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 80, 64, device="cuda")
    y, _ = fast(x)
    y_ref, _ = slow(x)
    assert rel(y, y_ref) < 1e-3
    with torch.no_grad():
        state, outs = fast.init_state(2), []
        for t in range(8):
            o, state = fast.step(x[:, t], state)
            outs.append(o)
    assert rel(torch.stack(outs, 1), y_ref[:, :8]) < 1e-3
