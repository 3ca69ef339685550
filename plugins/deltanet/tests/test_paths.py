"""The three paths against the equations, in float64 with gradients: the chunked WY/UT form
and the mixers' forward, naive backend and step agree with the per-token recurrence
S_t = a_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t."""

import pytest
import torch
from deltanet_checks import outputs_and_grads, rel, rule_inputs

from zoo_core.errors import UserError
from zoo_core.testing.build import materialise, step_through
from zoo_deltanet import DeltaNet, DeltaNetConfig, GatedDeltaNet, GatedDeltaNetConfig
from zoo_deltanet.chunked import chunk_delta_rule
from zoo_deltanet.reference import naive_delta_rule, naive_mixer

DIM = 24


def naive(q, k, v, beta, log_a, h0):
    return naive_delta_rule(q, k, v, beta, None if log_a is None else log_a.exp(), h0)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk,T,h0", [(1, 9, True), (4, 37, True), (16, 37, False), (64, 37, True)])
def test_chunked_equals_recurrence_with_gradients(gated, chunk, T, h0):
    """Chunks of 1, a partial last chunk, one chunk longer than the sequence; with and without h0."""
    args = rule_inputs(T=T, gated=gated, h0=h0)
    o_ref, h_ref, g_ref = outputs_and_grads(naive, args)
    o, h, g = outputs_and_grads(lambda *a: chunk_delta_rule(*a[:5], chunk, a[5]), args)
    assert rel(o, o_ref) < 1e-12 and rel(h, h_ref) < 1e-12
    assert all(rel(a, b) < 1e-10 for a, b in zip(g, g_ref))


def test_recurrence_is_the_delta_rule_written_out():
    """One step by hand: S_1 = a (S_0 - beta (S_0 k - v) k^T), o_1 = S_1 q / sqrt(d_k)."""
    q, k, v, beta, log_a, h0 = rule_inputs(B=1, T=1, H=1, K=3, V=2)
    S0 = h0[0, 0].t()  # (V, K), the paper's layout
    kk, vv, b, a = k[0, 0, 0], v[0, 0, 0], beta[0, 0, 0], log_a[0, 0, 0].exp()
    S1 = a * (S0 - b * torch.outer(S0 @ kk, kk)) + b * torch.outer(vv, kk)
    o, h = naive(q, k, v, beta, log_a, h0)
    assert torch.allclose(h[0, 0].t(), S1) and torch.allclose(o[0, 0, 0], S1 @ q[0, 0, 0] / 3**0.5)


def test_float32_chunked_matches_float64_recurrence():
    args = rule_inputs(T=100)
    o_ref, h_ref = naive(*args)
    o, h = chunk_delta_rule(*[None if t is None else t.float() for t in args[:5]], 32, args[5].float())
    assert o.dtype == torch.float32 and rel(o, o_ref) < 1e-5 and rel(h, h_ref) < 1e-5


def make(cls, dtype=torch.float64, **kw):
    cfg_cls = GatedDeltaNetConfig if cls is GatedDeltaNet else DeltaNetConfig
    torch.manual_seed(0)
    return cls(DIM, cfg_cls(**kw)).to(dtype)


def random_state(m, batch):
    return {k: torch.randn_like(v) for k, v in m.init_state(batch, dtype=torch.float64).items()}


@pytest.mark.parametrize("cls", [DeltaNet, GatedDeltaNet])
@pytest.mark.parametrize(
    "kw,T",
    [({"chunk_size": 8}, 21), ({"n_heads": 2, "head_k_dim": 4, "expand_v": 1.5, "conv": 2, "chunk_size": 5}, 13)],
)
def test_mixer_forward_naive_and_step_agree_with_gradients(cls, kw, T):
    m = make(cls, **kw)
    x = torch.randn(2, T, DIM, dtype=torch.float64, requires_grad=True)
    st = random_state(m, 2)
    params = [x, *m.parameters()]
    y_ref = naive_mixer(m, x, st)
    gy = torch.randn_like(y_ref)
    ref = torch.autograd.grad(y_ref, params, gy)
    y, st_fwd = m(x, st, return_state=True)
    y_step, st_step = step_through(m, x, st)
    m.config.backend = "naive"
    y_naive, st_naive = m(x, st, return_state=True)
    for out in (y, y_step, y_naive):
        assert rel(out, y_ref) < 1e-12
        assert all(rel(a, b) < 1e-10 for a, b in zip(torch.autograd.grad(out, params, gy), ref))
    for k in st_fwd:
        assert rel(st_step[k], st_fwd[k]) < 1e-12 and rel(st_naive[k], st_fwd[k]) < 1e-12


@pytest.mark.parametrize("cls", [DeltaNet, GatedDeltaNet])
def test_heads_have_separate_key_and_value_dims(cls):
    m = make(cls, n_heads=3, head_k_dim=4, expand_v=2.0)
    assert (m.head_k_dim, m.head_v_dim) == (4, 8)
    st = m.init_state(2)
    assert st["ssm"].shape == (2, 3, 4, 8) and st["conv"].shape == (2, 3, 3 * (4 + 4 + 8))
    m = make(cls)  # default: d_k = 0.75 dim / n_heads (flash-linear-attention's allocation)
    assert m.head_k_dim == round(0.75 * DIM / 4) and m.head_v_dim == m.config.expand_v * m.head_k_dim


def test_gated_decay_at_init_is_mamba2s():
    """alpha = exp(-A dt): A in [1, 16], dt = softplus(dt_bias) in [1e-3, 0.1] (log-uniform)."""
    m = materialise(lambda: GatedDeltaNet(64, GatedDeltaNetConfig(n_heads=512, head_k_dim=2)))
    A, dt = m.A_log.double().exp(), torch.nn.functional.softplus(m.dt_bias.double())
    assert A.min() >= 1 - 1e-6 and A.max() <= 16 + 1e-5 and abs(A.mean().item() - 8.5) < 0.6
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert abs(dt.log().mean().item() - (torch.tensor([1e-3, 0.1]).log().mean().item())) < 0.2
    # the decay the mixer applies is exactly that (a_proj's contribution removed)
    torch.nn.init.zeros_(m.a_proj.weight)
    log_a = m._log_decay(torch.zeros(1, 1, 64))
    assert torch.allclose(log_a[0, 0].double().exp(), torch.exp(-A * dt), rtol=1e-5)


@pytest.mark.parametrize("cls", [DeltaNet, GatedDeltaNet])
def test_state_size_is_the_bytes_of_the_state(cls):
    m = make(cls, torch.float32)
    _, st = m(torch.randn(3, 5, DIM), return_state=True)
    nbytes = sum(t.numel() * t.element_size() for t in st.values()) // 3
    assert m.state_size(5) == m.state_size(5000) == nbytes


@pytest.mark.parametrize(
    "kw,word",
    [
        ({"backend": "fast"}, "backend"),
        ({"expand_v": 1.3}, "expand_v"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
        ({"backend": "triton", "chunk_size": 24}, "power of two"),
    ],
)
def test_bad_options_name_the_problem(kw, word):
    with pytest.raises(UserError, match=word):
        make(GatedDeltaNet, **kw)


def test_triton_backend_on_cpu_without_the_interpreter_is_a_user_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    m = make(GatedDeltaNet, backend="triton", chunk_size=16)
    with pytest.raises(UserError, match="backend=auto"):
        m(torch.randn(1, 4, DIM, dtype=torch.float64))
