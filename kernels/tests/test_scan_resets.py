"""Documents in the scans and the RG-LRU: packed rows with `resets` equal each document run
alone from the initial state (outputs, final state and the gradients of every input and
parameter), on every path: naive, the compiled C kernel, the chunked PyTorch path (C off;
lengths over 64 so the chunk carry runs) and Triton (interpreted on CPU at tiny shapes, in
float32); and each fast path equals the naive one with resets."""

import pytest
import torch
import torch.nn.functional as F
from doc_checks import layout, packed_equals_separate
from scan_checks import DEVICE, NO_TRITON
from scan_checks import NEEDS_KERNEL as needs_kernel

import zoo_kernels
from zoo_kernels import backends

needs_triton = pytest.mark.skipif(not backends.triton_installed(), reason=NO_TRITON)

# (name, backend, ZOO_KERNELS_CPP, lengths, dtype)
PATHS = [
    pytest.param("naive", "naive", "1", (9,), torch.float64, id="naive"),
    pytest.param("compiled", "torch", "1", (9, 70), torch.float64, id="compiled", marks=needs_kernel),
    pytest.param("chunked", "torch", "0", (9, 130), torch.float64, id="chunked"),
    pytest.param("triton", "triton", "1", (9, 40), torch.float32, id="triton", marks=needs_triton),
]


def data(op, T, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(DEVICE, dtype)  # noqa: E731
    B, D = 3, 16
    if op == "linear":
        return {"a": torch.sigmoid(r(B, T, D)) * 1.1, "x": r(B, T, D)}, {"h0": r(B, D)}, {}
    if op == "log":
        return {"log_a": F.logsigmoid(r(B, T, D)), "log_x": r(B, T, D)}, {"log_h0": r(B, D)}, {}
    seq = {"x": r(B, T, D), "r_pre": r(B, T, D), "i_pre": r(B, T, D)}
    return seq, {"h0": r(B, D)}, {"a_param": r(D) * 3 + 1, "c": 8.0}


FNS = {"linear": zoo_kernels.linear_scan, "log": zoo_kernels.log_linear_scan, "rg_lru": zoo_kernels.rg_lru}


def op_fn(op, backend):
    return lambda **kw: FNS[op](**kw, backend=backend)


@pytest.mark.parametrize("op", list(FNS))
@pytest.mark.parametrize("name,backend,cpp,Ts,dtype", PATHS)
def test_packed_equals_separate(monkeypatch, op, name, backend, cpp, Ts, dtype):
    monkeypatch.setenv("ZOO_KERNELS_CPP", cpp)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for T in Ts:
        seq, state, shared = data(op, T, dtype)
        packed_equals_separate(op_fn(op, backend), seq, state, shared, layout(T).to(DEVICE), tol=tol)


@pytest.mark.parametrize("op", list(FNS))
@pytest.mark.parametrize("name,backend,cpp,Ts,dtype", PATHS[1:])
def test_fast_equals_naive_with_resets(monkeypatch, op, name, backend, cpp, Ts, dtype):
    monkeypatch.setenv("ZOO_KERNELS_CPP", cpp)
    T = Ts[-1]
    seq, state, shared = data(op, T, dtype, seed=1)
    resets = torch.rand(3, T, generator=torch.Generator().manual_seed(2)) < 0.1
    resets[1, 0] = True
    resets = resets.to(DEVICE)

    def run(backend):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in {**seq, **state}.items()}
        params = {k: (v.detach().clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in shared.items()}
        out, last = FNS[op](**leaves, **params, resets=resets, backend=backend)
        tensors = [*leaves.values(), *(v for v in params.values() if torch.is_tensor(v))]
        g = torch.Generator().manual_seed(3)
        G = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
        return [out, last, *torch.autograd.grad((out * G).sum() + last.sum(), tensors)]

    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for a, b in zip(run(backend), run("naive")):
        assert torch.isfinite(a).all()
        assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("op", list(FNS))
def test_no_start_is_unchanged(op):
    seq, state, shared = data(op, 20, torch.float64)
    none = FNS[op](**seq, **state, **shared)
    zeros = FNS[op](**seq, **state, **shared, resets=torch.zeros(3, 20, dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(none, zeros))


def test_bad_resets_shape_is_named():
    seq, _, _ = data("linear", 5, torch.float64)
    with pytest.raises(ValueError, match="resets must be"):
        zoo_kernels.linear_scan(**seq, resets=torch.zeros(3, 4, dtype=torch.bool))
