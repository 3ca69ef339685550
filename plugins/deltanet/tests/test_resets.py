"""Document resets (packed documents) on every path, in float64 with gradients: a packed row
of several documents gives the outputs, final state and gradients of each document run alone
(from the zero state, or from the incoming state for a row whose first document continues),
for the naive recurrence, the chunked WY/UT form at several chunk sizes, the mixers' forward
on every backend and `step(reset=)`."""

import pytest
import torch
from deltanet_checks import DOCS, doc_resets, outputs_and_grads, rel, rule_inputs, separately

from zoo_deltanet import DeltaNet, DeltaNetConfig, GatedDeltaNet, GatedDeltaNetConfig
from zoo_deltanet.chunked import chunk_delta_rule
from zoo_deltanet.reference import naive_delta_rule, naive_mixer

B, T = len(DOCS), sum(DOCS[0][0])


def naive(resets=None):
    def fn(q, k, v, beta, log_a, h0):
        return naive_delta_rule(q, k, v, beta, None if log_a is None else log_a.exp(), h0, resets=resets)

    return fn


def chunked(chunk, resets=None):
    return lambda q, k, v, beta, log_a, h0: chunk_delta_rule(q, k, v, beta, log_a, chunk, h0, resets=resets)


def assert_same(got, want, tol=1e-12, gtol=1e-10):
    (o, h, g), (o_ref, h_ref, g_ref) = got, want
    assert rel(o, o_ref) < tol and rel(h, h_ref) < tol
    assert all(rel(a, b) < gtol for a, b in zip(g, g_ref))


@pytest.mark.parametrize("gated", [False, True])
def test_recurrence_packed_equals_separate(gated):
    resets, _ = doc_resets()
    args = rule_inputs(B=B, T=T, gated=gated)
    assert_same(outputs_and_grads(naive(resets), args), outputs_and_grads(separately(naive()), args))


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 8, 16, 64])
def test_chunked_packed_equals_separate_and_the_recurrence(gated, chunk):
    """Several starts in one chunk, starts on chunk boundaries, one chunk longer than T."""
    resets, _ = doc_resets()
    args = rule_inputs(B=B, T=T, gated=gated)
    packed = outputs_and_grads(chunked(chunk, resets), args)
    assert_same(packed, outputs_and_grads(separately(chunked(chunk)), args))
    assert_same(packed, outputs_and_grads(naive(resets), args))


@pytest.mark.parametrize("gated", [False, True])
def test_a_start_at_zero_ignores_the_incoming_state(gated):
    """Every row starting a document at t = 0: h0 gets a zero gradient and changes nothing."""
    args = rule_inputs(B=2, T=11, gated=gated)
    resets = torch.zeros(2, 11, dtype=torch.bool)
    resets[:, 0] = resets[1, 4] = True
    o, h, g = outputs_and_grads(chunked(4, resets), args)
    o0, h0, _ = outputs_and_grads(chunked(4, resets), args[:5] + [None])
    assert rel(o, o0) < 1e-12 and rel(h, h0) < 1e-12
    assert g[-1].abs().max() == 0


def test_no_starts_is_the_stream():
    args = rule_inputs(T=T)
    none = torch.zeros(2, T, dtype=torch.bool)
    assert_same(outputs_and_grads(chunked(8, none), args), outputs_and_grads(chunked(8), args), 1e-13, 1e-12)


# -- the mixers: short conv + delta rule + output gate -------------------------------------------

DIM = 24
CONFIGS = [{"chunk_size": 8}, {"n_heads": 2, "head_k_dim": 4, "expand_v": 1.5, "conv": 2, "chunk_size": 5}]


def make(cls, **kw):
    torch.manual_seed(0)
    cfg = (GatedDeltaNetConfig if cls is GatedDeltaNet else DeltaNetConfig)(**kw)
    return cls(DIM, cfg).double()


def mixer_inputs(m, seed=0):
    """x (B, T, DIM) and a nonzero incoming state, as leaves."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, DIM, generator=g, dtype=torch.float64).requires_grad_()
    st = m.init_state(B, dtype=torch.float64)
    st = {n: torch.randn(s.shape, generator=g, dtype=s.dtype).requires_grad_() for n, s in st.items()}
    return x, st


def mixer_run(m, fn, x, st):
    """fn(x, st) -> (y, state): y, the state and the gradients (x, parameters, incoming state)
    of a fixed random projection of y and the state."""
    y, out = fn(x, st)
    g = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for n in sorted(out):
        loss = loss + (out[n] * torch.randn(out[n].shape, generator=g, dtype=out[n].dtype)).sum()
    leaves = [x, *m.parameters(), *st.values()]
    return y, out, torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)


def mixer_separately(m):
    """Each document through m.forward alone, from m.init_state (or the row's incoming state
    for a continued first document)."""
    _, spans = doc_resets()

    def fn(x, st):
        ys, states = [], []
        for b, row in enumerate(spans):
            pieces = []
            for s, e, continues in row:
                start = {n: t[b : b + 1] for n, t in st.items()} if continues else m.init_state(1, dtype=x.dtype)
                y, out = m(x[b : b + 1, s:e], start, return_state=True)
                pieces.append(y)
            ys.append(torch.cat(pieces, 1))
            states.append(out)
        return torch.cat(ys), {n: torch.cat([o[n] for o in states]) for n in states[0]}

    return fn


def mixer_steps(m, resets):
    def fn(x, st):
        ys = []
        for t in range(x.shape[1]):
            y, st = m.step(x[:, t], st, reset=resets[:, t])
            ys.append(y)
        return torch.stack(ys, 1), st

    return fn


def assert_mixer_same(got, want):
    (y, st, g), (y_ref, st_ref, g_ref) = got, want
    assert rel(y, y_ref) < 1e-12
    assert all(rel(st[n], st_ref[n]) < 1e-12 for n in st_ref)
    assert all(rel(a, b) < 1e-10 for a, b in zip(g, g_ref))


@pytest.mark.parametrize("cls", [DeltaNet, GatedDeltaNet])
@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("backend", ["chunked", "naive"])
def test_mixer_packed_equals_separate_documents(cls, kw, backend):
    m = make(cls, backend=backend, **kw)
    assert m.supports_resets
    resets, _ = doc_resets()
    x, st = mixer_inputs(m)
    packed = mixer_run(m, lambda x, st: m(x, st, return_state=True, resets=resets), x, st)
    assert_mixer_same(packed, mixer_run(m, mixer_separately(m), x, st))


@pytest.mark.parametrize("cls", [DeltaNet, GatedDeltaNet])
@pytest.mark.parametrize("kw", CONFIGS)
def test_mixer_forward_step_and_reference_agree_with_resets(cls, kw):
    """forward (chunked) == step(reset=) token by token == naive_mixer(resets=), from the weights."""
    m = make(cls, **kw)
    resets, _ = doc_resets()
    x, st = mixer_inputs(m)
    packed = mixer_run(m, lambda x, st: m(x, st, return_state=True, resets=resets), x, st)
    assert_mixer_same(mixer_run(m, mixer_steps(m, resets), x, st), packed)
    y_ref = naive_mixer(m, x, st, resets)
    y, _, _ = packed
    assert rel(y, y_ref) < 1e-12
    gy = torch.randn_like(y)
    leaves = [x, *m.parameters(), *st.values()]
    g = torch.autograd.grad(m(x, st, resets=resets)[0], leaves, gy, allow_unused=True, materialize_grads=True)
    g_ref = torch.autograd.grad(y_ref, leaves, gy, allow_unused=True, materialize_grads=True)
    assert all(rel(a, b) < 1e-10 for a, b in zip(g, g_ref))


def test_mixer_without_resets_is_unchanged_by_the_keyword():
    m = make(GatedDeltaNet, chunk_size=8)
    x, st = mixer_inputs(m)
    y, out = m(x, st, return_state=True)
    y0, out0 = m(x, st, return_state=True, resets=torch.zeros(B, T, dtype=torch.bool))
    assert rel(y0, y) < 1e-13 and all(rel(out0[n], out[n]) < 1e-13 for n in out)
