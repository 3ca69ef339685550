"""Document resets (issue #27) in Mamba and Mamba-2 on every path: naive, chunked (zoo-kernels'
compiled C / chunked PyTorch), zoo-kernels' Triton SSD (Mamba-2 on the CUDA branch without
mamba-ssm, run under TRITON_INTERPRET=1 without a GPU) and step(reset=).

Packed rows of several documents (lengths 1 to 9; one row continuing a nonzero incoming state,
one starting a document at t=0) must give, in float64, the outputs, the returned state and the
gradients (input, every parameter, the incoming state) of each document run alone.
"""

import sys
import warnings

import pytest
import torch

from zoo_kernels.backends import triton_installed
from zoo_mamba import Mamba, Mamba2, Mamba2Config, MambaConfig, paths

f64 = torch.float64
DIM = 16
MIXERS = {
    "mamba2": lambda **kw: Mamba2(DIM, Mamba2Config(headdim=8, d_state=4, ngroups=2, chunk_size=4, **kw)),
    "mamba": lambda **kw: Mamba(DIM, MambaConfig(d_state=4, **kw)),
}
# Row 0 continues the incoming state, row 1 starts at t=0; both end with a document shorter than
# the conv's state (d_conv - 1 = 3 rows), so the returned conv state must drop the previous one.
ROWS = [[5, 1, 3, 8, 1], [2, 1, 1, 12, 2]]
CONTINUES = (True, False)


def make(name, seed=0, **kw):
    torch.manual_seed(seed)
    m = MIXERS[name](**kw).double()
    with torch.no_grad():  # larger dt than the init, so decays matter over a few steps
        bias = m.dt_bias if name == "mamba2" else m.dt_proj.bias
        bias.add_(2.0)
    return m


def starts():
    resets = torch.zeros(len(ROWS), sum(ROWS[0]), dtype=torch.bool)
    for i, lens in enumerate(ROWS):
        pos = 0
        for j, n in enumerate(lens):
            resets[i, pos] = not (j == 0 and CONTINUES[i])
            pos += n
    return resets


def documents():
    """(row, start, end, continues the incoming state) of every document."""
    out = []
    for i, lens in enumerate(ROWS):
        pos = 0
        for j, n in enumerate(lens):
            out.append((i, pos, pos + n, j == 0 and CONTINUES[i]))
            pos += n
    return out


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def incoming_state(m, b):
    with torch.no_grad():
        _, st = m(torch.randn(b, 6, DIM, dtype=f64), return_state=True)
    return {k: v.clone().requires_grad_() for k, v in st.items()}


def packed_vs_separate(m, tol=1e-11):
    resets = starts()
    b, T = resets.shape
    x = torch.randn(b, T, DIM, dtype=f64, requires_grad=True)
    st = incoming_state(m, b)
    leaves = [x, *st.values(), *m.parameters()]
    g = torch.Generator().manual_seed(5)
    wy = torch.randn(b, T, DIM, generator=g, dtype=f64)
    ws = {k: torch.randn(v.shape, generator=g, dtype=f64) for k, v in st.items()}

    y, new = m(x, st, return_state=True, resets=resets)
    loss = (y * wy).sum() + sum((new[k] * ws[k]).sum() for k in new)
    got = torch.autograd.grad(loss, leaves)

    ys, last = [[] for _ in range(b)], [None] * b
    for row, t0, t1, cont in documents():
        s = {k: v[row : row + 1] for k, v in st.items()} if cont else None
        yi, last[row] = m(x[row : row + 1, t0:t1], s, return_state=True)
        ys[row].append(yi)
    y2 = torch.cat([torch.cat(r, 1) for r in ys], 0)
    new2 = {k: torch.cat([s[k] for s in last], 0) for k in new}
    loss2 = (y2 * wy).sum() + sum((new2[k] * ws[k]).sum() for k in new2)
    want = torch.autograd.grad(loss2, leaves, allow_unused=True)

    assert rel(y, y2) < tol
    for k in new:
        assert rel(new[k], new2[k]) < tol, k
    for i, (a, w) in enumerate(zip(got, want)):
        w = torch.zeros_like(a) if w is None else w
        assert torch.isfinite(a).all()
        assert (a - w).norm() <= tol * max(w.norm().item(), 1e-30), f"gradient {i}"
    assert got[1][1].abs().sum() == 0  # a row that starts a document ignores the incoming state
    return y, new, got


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("backend", ["naive", "chunked"])
def test_packed_documents_equal_separate_runs(name, backend):
    packed_vs_separate(make(name, backend=backend))


@pytest.mark.parametrize("name", MIXERS)
def test_fast_equals_naive_with_resets(name):
    fast, naive = make(name, backend="chunked"), make(name, backend="naive")
    resets = starts()
    x = torch.randn(*resets.shape, DIM, dtype=f64)
    st = incoming_state(fast, resets.shape[0])
    y1, s1 = fast(x, st, return_state=True, resets=resets)
    y2, s2 = naive(x, st, return_state=True, resets=resets)
    assert rel(y1, y2) < 1e-11
    assert all(rel(s1[k], s2[k]) < 1e-11 for k in s1)


@pytest.mark.parametrize("name", MIXERS)
def test_step_with_reset_equals_forward(name):
    m = make(name)
    resets = starts()
    b, T = resets.shape
    x = torch.randn(b, T, DIM, dtype=f64)
    st = incoming_state(m, b)
    with torch.no_grad():
        y, final = m(x, st, return_state=True, resets=resets)
        state, outs = {k: v.detach() for k, v in st.items()}, []
        for t in range(T):
            o, state = m.step(x[:, t], state, reset=resets[:, t])
            outs.append(o)
    assert rel(torch.stack(outs, 1), y) < 1e-11
    assert all(rel(state[k], final[k]) < 1e-11 for k in state)


def test_supports_resets():
    assert make("mamba").supports_resets and make("mamba2").supports_resets


# -- the CUDA branch: libraries that take no resets hand the piece to zoo-kernels, in one line --


@pytest.fixture
def cuda_branch(monkeypatch):
    """The CUDA dispatch on CPU tensors (as test_ssd_triton_dispatch.py): paths._on_cuda answers
    True; mamba-ssm and causal-conv1d "import" as stand-ins that must not be called."""
    monkeypatch.setattr(paths, "_on_cuda", lambda t: True)
    for lib in ("mamba_ssm", "causal_conv1d"):
        monkeypatch.setitem(sys.modules, lib, type(sys)(lib))  # importable, empty
    monkeypatch.setattr(paths, "_found", {})
    monkeypatch.setattr(paths, "_said", set())


@pytest.mark.parametrize("name", MIXERS)
def test_cuda_libraries_fall_back_with_one_line(name, cuda_branch, monkeypatch):
    monkeypatch.setattr(paths, "_TRITON", False)  # the Triton SSD has its own test below
    assert tuple(paths.pick("auto", torch.zeros(1), ssd=name == "mamba2", carried=False, return_state=False)) == (
        "cuda",
        "cuda",
    )
    m = make(name)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for _ in range(2):
            y, _ = m(torch.randn(*starts().shape, DIM, dtype=f64), resets=starts())
    lines = sorted(str(w.message) for w in said)
    assert lines == [
        "zoo-mamba: causal-conv1d takes no document resets (data.documents=reset); using zoo-kernels' conv",
        "zoo-mamba: mamba-ssm takes no document resets (data.documents=reset); using zoo-kernels' scan",
    ]
    assert torch.isfinite(y).all()


@pytest.mark.skipif(not triton_installed(), reason="triton is not importable; the Triton SSD path is not tested")
def test_mamba2_triton_ssd_packed_equals_separate(monkeypatch):
    """Mamba-2 on the CUDA branch without mamba-ssm runs zoo-kernels' Triton SSD, resets included."""
    monkeypatch.setattr(paths, "_on_cuda", lambda t: True)
    for lib in ("mamba_ssm", "causal_conv1d"):
        monkeypatch.setitem(sys.modules, lib, None)  # `import lib` raises ImportError
    monkeypatch.setattr(paths, "_found", {})
    monkeypatch.setattr(paths, "_said", set())
    monkeypatch.setattr(paths, "_TRITON", True)
    calls = []
    real = paths.ssd_triton
    monkeypatch.setattr(paths, "ssd_triton", lambda *a: calls.append(a[-1] is not None) or real(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packed_vs_separate(make("mamba2"), tol=1e-10)
    assert True in calls
