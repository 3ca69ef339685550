"""Document resets (packed documents) on every path, in float64 with gradients: a packed row
of several documents gives the outputs, final state and gradients of each document run alone
(from the zero state, or from the incoming state for a row whose first document continues),
for the naive recurrence, the chunked WY/UT form at several chunk sizes, the mixers' forward
on every backend and `step(reset=)`."""

import pytest
import torch
from deltanet_checks import DOCS, doc_resets, outputs_and_grads, rel, rule_inputs, separately

from zoo_deltanet.chunked import chunk_delta_rule
from zoo_deltanet.reference import naive_delta_rule

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
