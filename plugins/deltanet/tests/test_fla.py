"""Against an independent implementation: flash-linear-attention's own naive references
(fla-core's fla.ops.delta_rule.naive and fla.ops.gated_delta_rule.naive, pure PyTorch, which
run on CPU; its Triton kernels do not). They compute in float32 whatever the input, so the
tolerances are float32's. Same inputs, same state layout (B, H, d_k, d_v), same q scale."""

import pytest

fla_delta = pytest.importorskip(
    "fla.ops.delta_rule.naive", reason="fla-core is not installed (pip install 'zoo-deltanet[test]')"
)
fla_gated = pytest.importorskip("fla.ops.gated_delta_rule.naive", reason="fla-core is not installed")

from deltanet_checks import DOCS, doc_resets, outputs_and_grads, rel, rule_inputs, separately  # noqa: E402

from zoo_deltanet.chunked import chunk_delta_rule  # noqa: E402
from zoo_deltanet.reference import naive_delta_rule  # noqa: E402

TOL = 2e-5


def ours_naive(q, k, v, beta, log_a, h0):
    return naive_delta_rule(q, k, v, beta, None if log_a is None else log_a.exp(), h0)


def fla_deltanet(q, k, v, beta, log_a, h0):  # (B, H, T, D) layout
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    o, h = fla_delta.delta_rule_recurrence(t(q), t(k), t(v), beta.transpose(1, 2), h0)
    return t(o), h


def fla_gdn(q, k, v, beta, log_a, h0):
    return fla_gated.naive_recurrent_gated_delta_rule(q, k, v, beta, log_a, initial_state=h0, output_final_state=True)


@pytest.mark.parametrize("gated", [False, True])
def test_recurrence_and_chunked_equal_flas_recurrence_with_gradients(gated):
    args = rule_inputs(T=29, gated=gated)
    fla_fn = fla_gdn if gated else fla_deltanet
    o_fla, h_fla, g_fla = outputs_and_grads(fla_fn, args)
    for fn in (ours_naive, lambda *a: chunk_delta_rule(*a[:5], 8, a[5])):
        o, h, g = outputs_and_grads(fn, args)
        assert rel(o, o_fla) < TOL and rel(h, h_fla) < TOL
        assert all(rel(a, b) < 1e-4 for a, b in zip(g, g_fla))


def test_chunked_equals_flas_chunked_references():
    """fla's naive chunked forms (delta_rule_chunkwise wants T a multiple of the chunk, no h0)."""
    q, k, v, beta, _, _ = rule_inputs(T=32, gated=False, h0=False)
    t = lambda x: x.transpose(1, 2).float()  # noqa: E731
    o_fla, h_fla = fla_delta.delta_rule_chunkwise(t(q), t(k), t(v), t(beta), chunk_size=8)
    o, h = chunk_delta_rule(q, k, v, beta, None, 8)
    assert rel(o, o_fla.transpose(1, 2)) < TOL and rel(h, h_fla) < TOL

    q, k, v, beta, log_a, h0 = rule_inputs(T=29)
    o_fla, h_fla = fla_gated.naive_chunk_gated_delta_rule(
        q, k, v, log_a, beta, chunk_size=8, initial_state=h0, output_final_state=True
    )
    o, h = chunk_delta_rule(q, k, v, beta, log_a, 16, h0)
    assert rel(o, o_fla) < TOL and rel(h, h_fla) < TOL


@pytest.mark.parametrize("gated", [False, True])
def test_packed_documents_equal_flas_recurrence_run_per_document(gated):
    """fla's references take no cu_seqlens (its Triton kernels do: each sequence starts its own
    chunks), so each document goes through fla's recurrence alone; ours run the packed rows."""
    resets, _ = doc_resets()
    args = rule_inputs(B=len(DOCS), T=resets.shape[1], gated=gated)
    o_fla, h_fla, g_fla = outputs_and_grads(separately(fla_gdn if gated else fla_deltanet), args)
    for fn in (
        lambda *a: naive_delta_rule(*a[:4], None if a[4] is None else a[4].exp(), a[5], resets=resets),
        lambda *a: chunk_delta_rule(*a[:5], 8, a[5], resets=resets),
    ):
        o, h, g = outputs_and_grads(fn, args)
        assert rel(o, o_fla) < TOL and rel(h, h_fla) < TOL
        assert all(rel(a, b) < 1e-4 for a, b in zip(g, g_fla))
