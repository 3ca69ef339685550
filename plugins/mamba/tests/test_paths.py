"""The three paths agree: naive recurrence, chunked (SSD / zoo-kernels scan) and step."""

import pytest
import torch

from zoo_core.errors import UserError
from zoo_kernels import cbuild as cpu_kernel
from zoo_kernels import selective_scan
from zoo_mamba import Mamba, Mamba2, Mamba2Config, MambaConfig
from zoo_mamba.common import causal_conv
from zoo_mamba.reference import causal_conv_ref, selective_scan_ref, ssd_ref
from zoo_mamba.ssd import ssd_chunked

f64 = torch.float64


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def grads(fn, inputs, seed=1):
    """Outputs of fn and the gradients of a random projection of them w.r.t. inputs."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    outs = fn(*inputs)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    return outs, torch.autograd.grad(loss, inputs)


def ssd_inputs(b=2, T=13, H=4, P=3, N=5, G=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=f64)  # noqa: E731
    dt = torch.nn.functional.softplus(r(b, T, H))  # O(1) steps: the decay really matters
    A = -torch.exp(r(H))
    return [r(b, T, H, P), dt, A, r(b, T, G, N), r(b, T, G, N), r(b, H, P, N)]


@pytest.mark.parametrize("T,chunk", [(13, 1), (13, 4), (13, 5), (16, 8), (13, 64), (1, 4)])
def test_ssd_chunked_equals_recurrence_with_gradients(T, chunk):
    inputs = ssd_inputs(T=T)
    (y, h), g = grads(lambda *a: ssd_chunked(*a[:5], chunk, a[5]), inputs)
    (y_ref, h_ref), g_ref = grads(lambda *a: ssd_ref(*a), inputs)
    assert rel(y, y_ref) < 1e-12 and rel(h, h_ref) < 1e-12
    for name, a, b in zip(["x", "dt", "A", "B", "C", "h0"], g, g_ref):
        assert rel(a, b) < 1e-10, name


def test_ssd_without_initial_state_starts_from_zero():
    x, dt, A, B, C, h0 = ssd_inputs()
    y, h = ssd_chunked(x, dt, A, B, C, 4)
    y0, h0_ = ssd_chunked(x, dt, A, B, C, 4, torch.zeros_like(h0))
    assert rel(y, y0) < 1e-14 and rel(h, h0_) < 1e-14


@pytest.mark.parametrize(
    "cpp",
    [
        pytest.param("1", marks=pytest.mark.skipif(not cpu_kernel.available(), reason="no compiled CPU kernel here")),
        "0",
    ],
    ids=["fused", "flat"],
)
@pytest.mark.parametrize("T", [1, 7, 70])  # zoo-kernels chunks from T >= 64; the fused kernel every 32
def test_selective_scan_fast_path_equals_recurrence_with_gradients(T, cpp, monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS_CPP", cpp)
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=f64)  # noqa: E731
    b, D, N = 2, 6, 4
    inputs = [
        r(b, T, D),
        torch.nn.functional.softplus(r(b, T, D)),
        -torch.exp(r(D, N)),
        r(b, T, N),
        r(b, T, N),
        r(b, D, N),
    ]
    (y, h), gr = grads(selective_scan, inputs)
    (y_ref, h_ref), g_ref = grads(selective_scan_ref, inputs)
    assert rel(y, y_ref) < 1e-12 and rel(h, h_ref) < 1e-12
    for name, a, b_ in zip(["u", "dt", "A", "B", "C", "h0"], gr, g_ref):
        assert rel(a, b_) < 1e-10, name


@pytest.mark.parametrize("T", [1, 2, 9])
def test_conv_equals_reference_and_carries_state(T):
    g = torch.Generator().manual_seed(0)
    x, w, bias, st = (torch.randn(*s, generator=g, dtype=f64) for s in [(2, T, 5), (5, 4), (5,), (2, 3, 5)])
    (y, s), gr = grads(causal_conv, [x, w, bias, st])
    (y_ref, s_ref), g_ref = grads(causal_conv_ref, [x, w, bias, st])
    assert rel(y, y_ref) < 1e-12 and torch.equal(s, s_ref)
    assert all(rel(a, b) < 1e-12 for a, b in zip(gr, g_ref))
    y0, s0 = causal_conv(x, w, bias, None)  # no state means zeros before the stream
    assert rel(y0, causal_conv_ref(x, w, bias, torch.zeros_like(st))[0]) < 1e-12
    # carrying the state across a split equals the whole sequence
    whole, _ = causal_conv(torch.cat([x, x], 1), w, bias, None)
    first, s = causal_conv(x, w, bias, None)
    second, _ = causal_conv(x, w, bias, s)
    assert rel(torch.cat([first, second], 1), whole) < 1e-14


# -- whole mixers --------------------------------------------------------------------

MIXERS = {
    "mamba2": lambda **kw: Mamba2(32, Mamba2Config(headdim=8, d_state=8, ngroups=2, chunk_size=4, **kw)),
    "mamba": lambda **kw: Mamba(32, MambaConfig(d_state=4, **kw)),
}


def make(name, seed=0, **kw):
    torch.manual_seed(seed)
    m = MIXERS[name](**kw).double()
    with torch.no_grad():  # larger dt than the init, so the decay is exercised over 13 steps
        bias = m.dt_bias if name == "mamba2" else m.dt_proj.bias
        bias.add_(3.0)
    return m


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_fast_equals_naive_with_parameter_gradients(name):
    fast, naive = make(name), make(name, backend="naive")
    x = torch.randn(2, 13, 32, dtype=f64, requires_grad=True)
    st = fast.init_state(2, dtype=f64)
    st = {k: torch.randn_like(v) for k, v in st.items()}  # a carried-in state, also differentiated
    outs = []
    for m in (fast, naive):
        y, new = m(x, st, return_state=True)
        g = torch.Generator().manual_seed(3)
        loss = (y * torch.randn(y.shape, generator=g, dtype=f64)).sum() + new["ssm"].sum()
        outs.append((y, new, torch.autograd.grad(loss, [x] + list(m.parameters()))))
    (y1, s1, g1), (y2, s2, g2) = outs
    assert rel(y1, y2) < 1e-10 and rel(s1["ssm"], s2["ssm"]) < 1e-10 and torch.equal(s1["conv"], s2["conv"])
    assert all(rel(a, b) < 1e-9 for a, b in zip(g1, g2))


@pytest.mark.parametrize("name", MIXERS)
def test_step_decoding_equals_parallel_forward(name):
    m = make(name)
    x = torch.randn(3, 11, 32, dtype=f64)
    with torch.no_grad():
        y, final = m(x, return_state=True)
        state, outs = m.init_state(3, dtype=f64), []
        for t in range(11):
            o, state = m.step(x[:, t], state)
            outs.append(o)
    assert rel(torch.stack(outs, 1), y) < 1e-10
    assert rel(state["ssm"], final["ssm"]) < 1e-10 and rel(state["conv"], final["conv"]) < 1e-12


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("split", [1, 2, 7])  # shorter than the conv, within and across chunks
def test_state_carry_equals_whole_sequence(name, split):
    m = make(name)
    x = torch.randn(2, 16, 32, dtype=f64)
    whole, _ = m(x)
    a, st = m(x[:, :split], return_state=True)
    b, _ = m(x[:, split:], st)
    assert rel(torch.cat([a, b], 1), whole) < 1e-10


@pytest.mark.parametrize("name", MIXERS)
def test_causal(name):
    m = make(name)
    x = torch.randn(1, 10, 32, dtype=f64)
    y1, _ = m(x)
    x2 = x.clone()
    x2[:, 6] += 1.0
    y2, _ = m(x2)
    assert torch.equal(y1[:, :6], y2[:, :6]) and not torch.allclose(y1[:, 6:], y2[:, 6:])


def test_initialisation_follows_the_papers():
    torch.manual_seed(0)
    m2 = Mamba2(64, Mamba2Config(headdim=4, dt_min=0.01, dt_max=0.05))
    dt = torch.nn.functional.softplus(m2.dt_bias)
    assert dt.min() >= 0.01 - 1e-6 and dt.max() <= 0.05 + 1e-6 and dt.std() > 0
    A = torch.exp(m2.A_log)
    assert A.min() >= 1 and A.max() <= 16 and torch.equal(m2.D, torch.ones_like(m2.D))
    m1 = Mamba(32, MambaConfig(d_state=6))
    assert torch.allclose(m1.A, -torch.arange(1.0, 7.0).expand(64, 6))  # S4D-real
    dt = torch.nn.functional.softplus(m1.dt_proj.bias)
    assert dt.min() >= 0.001 - 1e-6 and dt.max() <= 0.1 + 1e-6
    assert m1.A_log.dim() == 1  # so the core's optimizer does not weight-decay it
    assert m1.wants_mlp is False and m2.wants_mlp is False


def test_init_survives_meta_materialisation():
    with torch.device("meta"):
        m = Mamba2(32, Mamba2Config(headdim=8))
    m.to_empty(device="cpu")
    m.reset_parameters()
    assert torch.isfinite(m.dt_bias).all() and torch.equal(m.D, torch.ones_like(m.D))
    y, _ = m(torch.randn(1, 5, 32))
    assert torch.isfinite(y).all()


def test_flops_and_state_size_are_honest():
    m2 = Mamba2(64, Mamba2Config(headdim=16, d_state=16, chunk_size=64))
    # the within-chunk quadratic term grows with the chunk, up to the chunk size
    assert m2.flops_per_token(64) > m2.flops_per_token(16) and m2.flops_per_token(4096) == m2.flops_per_token(64)
    params = sum(p.numel() for p in m2.parameters())
    assert m2.flops_per_token(64) > 2 * params  # projections + scan, more than the 2N of matmuls
    st = m2.init_state(1)
    assert m2.state_size(10) == m2.state_size(10_000) == sum(t.numel() * t.element_size() for t in st.values())
    m1 = Mamba(64, MambaConfig())
    st = m1.init_state(1)
    assert m1.state_size(5) == sum(t.numel() * t.element_size() for t in st.values())
    assert m1.flops_per_token(16) == m1.flops_per_token(4096)


@pytest.mark.parametrize(
    "build,msg",
    [
        (lambda: Mamba2(32, Mamba2Config(headdim=48)), "headdim"),
        (lambda: Mamba2(32, Mamba2Config(headdim=8, ngroups=3)), "ngroups"),
        (lambda: Mamba(32, MambaConfig(backend="cuda")), "backend"),
        (lambda: Mamba(32, MambaConfig(dt_min=0.1, dt_max=0.01)), "dt_min"),
    ],
)
def test_bad_options_are_one_line_user_errors(build, msg):
    with pytest.raises(UserError, match=msg) as err:
        build()
    assert "\n" not in str(err.value)
